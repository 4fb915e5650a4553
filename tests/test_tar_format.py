"""The tar layer alone: deterministic headers readable by other tools, safe extraction."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.client import tar_header as th
from chunkyard.client.tar_extract import TarExtractor
from chunkyard.errors import FormatError
from tests.helpers import make_tree, tree_state

names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"),
                min_size=1, max_size=60).filter(lambda s: s not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(names, min_size=1, max_size=6), size=st.integers(0, 2**40),
       mtime_ns=st.integers(-(2**40), 2**62), uid=st.integers(0, 2**32 - 1),
       link=st.text(max_size=300).filter(lambda s: "\0" not in s))
def test_headers_parse_with_pythons_tarfile(parts: list[str], size: int, mtime_ns: int,
                                           uid: int, link: str) -> None:
    path = "./" + "/".join(parts)
    header = th.build_header(path, th.SYMTYPE, mode=0o755, uid=uid, gid=7, size=0,
                             mtime_ns=mtime_ns, linkname=link, uname="u", gname="g")
    assert header == th.build_header(path, th.SYMTYPE, mode=0o755, uid=uid, gid=7, size=0,
                                     mtime_ns=mtime_ns, linkname=link, uname="u", gname="g")
    assert len(header) % th.BLOCK == 0
    with tarfile.open(fileobj=io.BytesIO(header + th.END_OF_ARCHIVE), mode="r:") as tf:
        (member,) = tf.getmembers()
    assert member.name == path
    assert member.linkname == link
    assert member.uid == uid
    assert round(member.mtime * 1e9) == pytest.approx(mtime_ns, abs=2e3 + abs(mtime_ns) * 1e-15)


def _feed_all(target: Path, data: bytes, step: int = 777) -> None:
    ex = TarExtractor(str(target), same_owner=False)
    for i in range(0, len(data), step):
        ex.feed(data[i:i + step])
    ex.finish()


def test_extracts_gnu_tar_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, files=12)
    command = ["tar", "--format=pax", "--xattrs", "--xattrs-include=*", "-C", str(src),
               "-cf", "-", "."]
    archive = subprocess.run(command, check=True, capture_output=True).stdout
    out = tmp_path / "out"
    _feed_all(out, archive)
    assert tree_state(out) == tree_state(src)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.parametrize("members", [
    [_file("../escape")],
    [_file("/etc/absolute")],
    [_file("a/../../escape")],
    [_symlink("link", "/tmp"), _file("link/escape")],
    [_symlink("link", ".."), _file("link/escape")],
])
def test_malicious_members_are_refused(tmp_path: Path, members: list) -> None:  # type: ignore[type-arg]
    target = tmp_path / "target"
    with pytest.raises(FormatError):
        _feed_all(target, _tar(members))
    assert not (tmp_path / "escape").exists()
    assert not any(p.name == "escape" for p in Path("/tmp").glob("escape"))


def test_corrupt_header_checksum(tmp_path: Path) -> None:
    data = bytearray(_tar([_file("ok.txt", b"hello")]))
    data[10] ^= 1
    with pytest.raises(FormatError, match="checksum"):
        _feed_all(tmp_path / "t", bytes(data))


def test_truncated_stream(tmp_path: Path) -> None:
    data = _tar([_file("ok.txt", b"hello" * 1000)])
    with pytest.raises(FormatError):
        _feed_all(tmp_path / "t", data[:1500])


def test_hardlink_outside_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("hl")
    info.type = tarfile.LNKTYPE
    info.linkname = "../../etc/passwd"
    with pytest.raises(FormatError):
        _feed_all(tmp_path / "t", _tar([(info, None)]))
    assert os.path.exists("/etc/passwd")
