"""Test helpers: sample trees and a byte-exact tree comparison."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def make_tree(root: Path, seed: int = 1, files: int = 60) -> None:
    """A tree with the awkward cases: nesting, empty and large files, links, odd names."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sub = root / f"d{i % 5}" / f"s{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 1, 511, 512, 513, 4096, 70_000])
        (sub / f"f{i}.txt").write_bytes(rng.randbytes(size))
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 17))
    (root / "text.log").write_text("".join(f"line {i} of a log\n" for i in range(50_000)))
    (root / "empty-dir").mkdir()
    (root / "ünïcödé ñame.txt").write_text("unicode\n")
    (root / os.fsdecode(b"raw-\xff-bytes")).write_bytes(b"undecodable name\n")
    deep = root / ("long-component-" * 6) / ("another-long-one-" * 6)
    deep.mkdir(parents=True)
    (deep / ("file-with-a-long-name-" * 5)).write_text("deep\n")
    os.symlink("text.log", root / "link-to-log")
    os.symlink("/nonexistent/target", root / "dangling")
    os.link(root / "big.bin", root / "hardlink-to-big")
    (root / "aa-dir").mkdir()
    (root / "aa-dir" / "inner.txt").write_text("linked from a later sibling\n")
    os.link(root / "aa-dir" / "inner.txt", root / "zz-link.txt")
    os.mkfifo(root / "a-fifo")
    exe = root / "script.sh"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(0o751)
    try:  # user xattrs need the file system's support (ext4 and tmpfs here have it)
        os.setxattr(root / "text.log", "user.origin", b"chunkyard \x00 test")
        os.setxattr(root / "empty-dir", "user.dir", b"")
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    os.utime(root / "text.log", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything a restore must reproduce: type, mode, size, mtime, content or link target."""
    state: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                extra: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            else:
                extra = None
            mtime = None if stat.S_ISLNK(st.st_mode) else st.st_mtime_ns
            if stat.S_ISDIR(st.st_mode):
                mtime = None  # directory mtimes change when their contents are created
            xattrs = None if stat.S_ISLNK(st.st_mode) else sorted(
                (n, os.getxattr(path, n)) for n in os.listxattr(path))
            state[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_size if kind == stat.S_IFREG
                          else None, mtime, extra, xattrs)
    return state


SHARED = Path(__file__).resolve().parents[2] / "shared"
PBS_DIDX = SHARED / "testdata" / "pbs" / "backup-client-pxar-data.ppxar.didx"


def in_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in another thread (its own sessions, its own order checking); re-raise."""
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


@contextmanager
def fast_tmp_dir(fallback: Path) -> Iterator[Path]:
    """tmpfs when there is one: 65536 mkdir/rmdir cost seconds on a disk, not on tmpfs."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="chunkyard-test-", dir="/dev/shm"))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
    else:  # pragma: no cover
        yield fallback
