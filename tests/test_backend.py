"""FilesystemBackend: key validation (nothing escapes the root), atomic writes, error kinds."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkyard.datastore.backend import (
    Entry,
    EntryKind,
    FilesystemBackend,
    StorageBackend,
    validate_key,
    with_extension,
)
from chunkyard.errors import AlreadyExists, DatastoreError, InvalidName, NotFound

BAD_KEYS = ["../x", "a/../../b", "/etc", "/etc/passwd", "a//b", "a\x00", "a\x00/../b", "",
            ".", "..", "a/.", "a/..", "./a", "a/", "a\\..\\b", "..\\x"]


@pytest.fixture()
def outer(tmp_path: Path) -> Path:
    """A directory holding the backend root and a sibling that must never be touched."""
    (tmp_path / "root").mkdir()
    (tmp_path / "x").write_bytes(b"outside")
    (tmp_path / "b").mkdir()
    return tmp_path


@pytest.fixture()
def be(outer: Path) -> FilesystemBackend:
    return FilesystemBackend(str(outer / "root"))


@pytest.fixture()
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def snapshot_tree(path: Path) -> list[tuple[str, bytes | None]]:
    out = []
    for d, dirs, files in os.walk(path):
        for n in dirs:
            out.append((os.path.relpath(os.path.join(d, n), path), None))
        for n in files:
            p = os.path.join(d, n)
            out.append((os.path.relpath(p, path), Path(p).read_bytes()))
    return sorted(out)


def test_filesystem_backend_implements_the_protocol(be: FilesystemBackend) -> None:
    assert isinstance(be, StorageBackend)


# -- key validation -----------------------------------------------------------------------

@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(key: str) -> None:
    with pytest.raises(InvalidName):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "a/b", ".chunks/abcd", "..a", "a..b", "...", ".lock",
                                 "ns/a/ns/b/vm/100/2020-01-01T00:00:00Z/index.json.blob"])
def test_good_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@given(st.text(alphabet=st.sampled_from(list("ab./\\\x00")), max_size=14))
def test_every_accepted_key_stays_strictly_inside_the_root(key: str) -> None:
    try:
        validate_key(key)
    except InvalidName:
        return
    joined = os.path.join("/store", key)
    assert os.path.normpath(joined) == joined  # no '.', '..' or '//' for the OS to resolve
    assert joined.startswith("/store/") and len(joined) > len("/store/")


def test_root_key_only_where_allowed(be: FilesystemBackend) -> None:
    assert validate_key("", allow_root=True) == ""
    assert be.exists("")
    assert be.stat("").kind == EntryKind.DIR
    with pytest.raises(InvalidName):
        be.remove_tree("")
    with pytest.raises(InvalidName):
        be.write_atomic("", b"x")


def test_non_string_key_is_rejected(be: FilesystemBackend) -> None:
    with pytest.raises(InvalidName):
        be.read(b"a")  # type: ignore[arg-type]


def _operations(key: str) -> list[Callable[[FilesystemBackend], object]]:
    return [
        lambda b: b.read(key),
        lambda b: b.open_read(key),
        lambda b: b.write_atomic(key, b"evil"),
        lambda b: b.write_atomic("ok", b"evil", tmp_name=key),
        lambda b: b.create_new(key, b"evil"),
        lambda b: b.exists(key) if key else b.write_atomic(key, b""),
        lambda b: b.stat(key) if key else b.remove(key),
        lambda b: b.list_dir(key) if key else b.rmdir(key),
        lambda b: b.mkdir(key, parents=True, exist_ok=True),
        lambda b: b.make_subdirs("", [key], mode=0o750),
        lambda b: b.remove(key),
        lambda b: b.rmdir(key),
        lambda b: b.remove_tree(key),
        lambda b: b.rename(key, "ok2"),
        lambda b: b.rename("ok", key),
        lambda b: b.touch_atime(key),
        lambda b: b.local_path(key) if key else b.touch_atime(key),
    ]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_no_operation_accepts_an_escaping_key(be: FilesystemBackend, outer: Path,
                                              key: str) -> None:
    be.write_atomic("ok", b"inside")
    before = snapshot_tree(outer)
    for op in _operations(key):
        with pytest.raises(InvalidName):
            op(be)
    assert snapshot_tree(outer) == before


# -- reading and writing ------------------------------------------------------------------

def test_write_atomic_then_read(be: FilesystemBackend, outer: Path) -> None:
    be.mkdir("d")
    be.write_atomic("d/f", b"hello")
    assert be.read("d/f") == b"hello"
    with be.open_read("d/f") as f:
        assert f.read(2) == b"he"
    be.write_atomic("d/f", memoryview(b"replaced"))
    assert (outer / "root" / "d" / "f").read_bytes() == b"replaced"
    assert os.listdir(outer / "root" / "d") == ["f"]  # no temp file left


def test_write_atomic_mode_ignores_umask(be: FilesystemBackend, outer: Path,
                                         umask_077: None) -> None:
    be.write_atomic("f", b"x")
    be.write_atomic("g", b"x", mode=0o600)
    assert stat.S_IMODE(os.stat(outer / "root" / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(outer / "root" / "g").st_mode) == 0o600


def test_write_atomic_with_fixed_temp_name_and_fsync(be: FilesystemBackend, outer: Path) -> None:
    (outer / "root" / "a.tmp_didx").write_bytes(b"stale leftover")
    be.write_atomic("a.didx", b"index", tmp_name="a.tmp_didx", fsync=True)
    assert sorted(os.listdir(outer / "root")) == ["a.didx"]
    assert be.read("a.didx") == b"index"
    with pytest.raises(InvalidName):
        be.write_atomic("a.didx", b"x", tmp_name="a.didx")
    with pytest.raises(InvalidName):
        be.write_atomic("a.didx", b"x", tmp_name="sub/a.tmp")


def test_write_atomic_failure_removes_the_temp_file(be: FilesystemBackend, outer: Path) -> None:
    be.mkdir("target")
    be.write_atomic("target/keep", b"x")  # a non-empty directory: rename(2) onto it fails
    with pytest.raises(DatastoreError, match="target"):
        be.write_atomic("target", b"data")
    assert sorted(os.listdir(outer / "root")) == ["target"]
    with pytest.raises(DatastoreError):
        be.write_atomic("target", b"data", tmp_name="target.tmp")
    assert sorted(os.listdir(outer / "root")) == ["target"]


def test_write_into_missing_directory_is_not_found(be: FilesystemBackend) -> None:
    with pytest.raises(NotFound, match="nodir"):
        be.write_atomic("nodir/f", b"x")


@pytest.mark.parametrize(("name", "expected"), [
    ("index.json.blob", "index.json.tmp_X"),
    ("a" * 64, "a" * 64 + ".tmp_X"),
    (".lock", ".lock.tmp_X"),
    ("notes", "notes.tmp_X"),
    ("disk.img.fidx", "disk.img.tmp_X"),
])
def test_temp_names_follow_rust_set_extension(name: str, expected: str) -> None:
    assert with_extension(name, "tmp_X") == expected


def test_create_new_never_overwrites(be: FilesystemBackend, outer: Path, umask_077: None) -> None:
    assert be.create_new("owner", b"root@pam\n") is True
    assert be.create_new("owner", b"evil@pam\n") is False
    assert be.read("owner") == b"root@pam\n"
    assert stat.S_IMODE(os.stat(outer / "root" / "owner").st_mode) == 0o644


def test_missing_and_wrong_kind_errors(be: FilesystemBackend, outer: Path) -> None:
    be.write_atomic("file", b"x")
    be.mkdir("dir")
    with pytest.raises(NotFound, match=str(outer / "root" / "missing")):
        be.read("missing")
    with pytest.raises(NotFound):
        be.read("file/below")  # ENOTDIR
    with pytest.raises(DatastoreError) as exc:
        be.read("dir")  # EISDIR: neither missing nor existing-conflict
    assert not isinstance(exc.value, (NotFound, AlreadyExists))
    with pytest.raises(NotFound):
        be.stat("missing")
    with pytest.raises(NotFound):
        be.list_dir("missing")
    assert not be.exists("missing")
    assert not be.exists("file/below")


# -- directories --------------------------------------------------------------------------

def test_stat_and_list_dir_do_not_follow_symlinks(be: FilesystemBackend, outer: Path) -> None:
    root = outer / "root"
    be.mkdir("d")
    be.write_atomic("d/f", b"12345")
    be.write_atomic("d/.hidden", b"")
    os.symlink(outer / "b", root / "d" / "link-to-dir")
    os.symlink("nowhere", root / "d" / "dangling")
    os.mkfifo(root / "d" / "fifo")
    be.mkdir("d/sub")
    entries = sorted(be.list_dir("d"))
    assert entries == [
        Entry(".hidden", EntryKind.FILE), Entry("dangling", EntryKind.OTHER),
        Entry("f", EntryKind.FILE), Entry("fifo", EntryKind.OTHER),
        Entry("link-to-dir", EntryKind.OTHER), Entry("sub", EntryKind.DIR),
    ]
    st = be.stat("d/f")
    assert (st.size, st.kind, st.inode) == (5, EntryKind.FILE, os.stat(root / "d" / "f").st_ino)
    assert be.stat("d/link-to-dir").kind == EntryKind.OTHER
    assert be.stat("d/link-to-dir", follow_symlinks=True).kind == EntryKind.DIR
    assert be.exists("d/dangling")


def test_mkdir_modes_parents_and_exist_ok(be: FilesystemBackend, outer: Path,
                                          umask_077: None) -> None:
    root = outer / "root"
    assert be.mkdir("a/b/c", parents=True, mode=0o750) is True
    assert stat.S_IMODE(os.stat(root / "a" / "b" / "c").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(root / "a").st_mode) == 0o755
    assert be.mkdir("a/b/c", exist_ok=True) is False
    with pytest.raises(AlreadyExists):
        be.mkdir("a/b/c")
    with pytest.raises(NotFound):
        be.mkdir("x/y")
    be.write_atomic("file", b"")
    with pytest.raises(AlreadyExists):
        be.mkdir("file", exist_ok=True)  # exists, but is not a directory


def test_make_subdirs(be: FilesystemBackend, outer: Path, umask_077: None) -> None:
    be.mkdir("c")
    be.make_subdirs("c", ["0000", "0001", "ffff"], mode=0o750)
    for n in ("0000", "0001", "ffff"):
        assert stat.S_IMODE(os.stat(outer / "root" / "c" / n).st_mode) == 0o750
    with pytest.raises(InvalidName):
        be.make_subdirs("c", ["a/b"], mode=0o750)
    with pytest.raises(AlreadyExists):
        be.make_subdirs("c", ["0000"], mode=0o750)


def test_rmdir_remove_and_remove_tree(be: FilesystemBackend, outer: Path) -> None:
    root = outer / "root"
    be.mkdir("full")
    be.write_atomic("full/f", b"")
    be.mkdir("empty")
    assert be.rmdir("full") is False
    assert be.rmdir("empty") is True
    with pytest.raises(NotFound):
        be.rmdir("empty")
    be.remove("full/f")
    with pytest.raises(NotFound):
        be.remove("full/f")
    # remove_tree removes a symlink inside, never what it points to
    be.mkdir("t/sub", parents=True)
    be.write_atomic("t/sub/f", b"")
    os.symlink(outer / "b", root / "t" / "link")
    (outer / "b" / "precious").write_bytes(b"keep me")
    be.remove_tree("t")
    assert not be.exists("t")
    assert (outer / "b" / "precious").read_bytes() == b"keep me"
    os.symlink(outer / "b", root / "dirlink")
    with pytest.raises(NotFound):
        be.remove_tree("dirlink")  # not a directory of ours
    assert (outer / "b" / "precious").exists()


def test_rename_semantics(be: FilesystemBackend) -> None:
    be.write_atomic("a", b"A")
    be.write_atomic("b", b"B")
    be.rename("a", "b")
    assert be.read("b") == b"A" and not be.exists("a")
    be.write_atomic("c", b"C")
    with pytest.raises(AlreadyExists):
        be.rename("c", "b", no_replace=True)
    assert be.read("b") == b"A" and be.read("c") == b"C"
    be.rename("c", "new", no_replace=True)
    assert be.read("new") == b"C"
    be.mkdir("d1")
    be.mkdir("d2")
    be.write_atomic("d2/x", b"")
    with pytest.raises(DatastoreError):
        be.rename("d1", "d2")  # onto a non-empty directory
    be.mkdir("d3")
    be.rename("d2", "d3")  # an empty directory is replaced, as rename(2) does
    assert be.read("d3/x") == b""
    with pytest.raises(NotFound):
        be.rename("missing", "z")


# -- times, sync, identity ----------------------------------------------------------------

def test_touch_atime_keeps_mtime(be: FilesystemBackend, outer: Path) -> None:
    be.write_atomic("chunk", b"data")
    path = outer / "root" / "chunk"
    old = 1_000_000_000_123_456_789
    os.utime(path, ns=(old, old))
    before = time.time_ns()
    be.touch_atime("chunk")
    st = be.stat("chunk")
    assert st.mtime_ns == old
    assert st.atime_ns >= before - 1_000_000_000  # coarse fs clocks
    with pytest.raises(NotFound):
        be.touch_atime("missing")


def test_sync_filesystem_runs(be: FilesystemBackend) -> None:
    be.write_atomic("f", b"x")
    be.sync_filesystem()


def test_identity_is_shared_by_path_aliases(be: FilesystemBackend, outer: Path) -> None:
    st = os.stat(outer / "root")
    assert be.identity() == f"{st.st_dev}:{st.st_ino}"
    os.symlink(outer / "root", outer / "alias")
    assert FilesystemBackend(str(outer / "alias")).identity() == be.identity()
    assert FilesystemBackend(str(outer / "b")).identity() != be.identity()


def test_local_path(be: FilesystemBackend, outer: Path) -> None:
    assert be.local_path("a/b") == str(outer / "root" / "a" / "b")
    assert be.local_path("") == str(outer / "root")
