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


def test_vanished_file_in_a_reused_region_becomes_zeros(tmp_path: Path) -> None:
    from chunkyard.client.archive_stream import ArchiveStream, FileSlice
    from chunkyard.client.chunk_sink import ChunkSink
    from chunkyard.datastore.backend import FilesystemBackend
    from chunkyard.datastore.chunk_store import ChunkStore, SyncLevel
    from chunkyard.formats.blob import decode_blob
    from chunkyard.formats.chunker import Chunker

    (tmp_path / "store").mkdir()
    store = ChunkStore.create(FilesystemBackend(str(tmp_path / "store")), SyncLevel.NONE,
                              sparse=True)
    sink = ChunkSink(store, None, known=set())
    stream = ArchiveStream(Chunker(4096), sink, None)
    try:
        stream.write(b"header")
        stream.write_piece(FileSlice(str(tmp_path / "gone"), 10, 1000))
        ends, digests = stream.finish()
    finally:
        sink.close()
    data = b"".join(decode_blob(store.load(d)) for d in digests)
    assert data == b"header" + bytes(1000)
    assert ends[-1] == 1006
    assert len(stream.warnings) == 1 and "gone" in stream.warnings[0]
