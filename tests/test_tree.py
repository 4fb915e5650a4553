"""Reading source files: never through a symlink, never blocking on a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chunkyard.client.tree import open_regular


def test_open_regular_refuses_fifos_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="regular"):
        open_regular(str(fifo))  # a blocking open would hang here: no writer exists


def test_open_regular_refuses_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("secret")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        open_regular(str(link))
    fd = open_regular(str(target))
    try:
        assert os.read(fd, 10) == b"secret"
    finally:
        os.close(fd)
