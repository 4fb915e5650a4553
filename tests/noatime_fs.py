"""A real filesystem that ignores explicit atime updates: a FUSE passthrough (fusepy) over a
backing directory whose `utimens` does nothing. GC's atime safety check must refuse it.

Run as a separate process (`python -m tests.noatime_fs BACKING MOUNTPOINT`); tests use
`mounted_noatime`, which skips the test when FUSE is not available on the machine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _operations() -> Any:
    from fuse import FuseOSError, Operations

    class NoAtimePassthrough(Operations):  # type: ignore[misc]
        """Every call goes to the backing directory, except that utimens is ignored."""

        def __init__(self, root: str) -> None:
            self.root = root

        def _p(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def __call__(self, op: str, *args: Any) -> Any:
            try:
                return super().__call__(op, *args)
            except OSError as e:
                raise FuseOSError(e.errno or errno.EIO) from None

        def access(self, path: str, mode: int) -> None:
            if not os.access(self._p(path), mode):
                raise FuseOSError(errno.EACCES)

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._p(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._p(path), uid, gid)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(self._p(path))
            return {k: getattr(st, k) for k in (
                "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink",
                "st_size", "st_uid", "st_ino")}

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._p(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._p(path))

        def mknod(self, path: str, mode: int, dev: int) -> None:
            os.mknod(self._p(path), mode, dev)

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._p(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._p(path))

        def statfs(self, path: str) -> dict[str, Any]:
            sv = os.statvfs(self._p(path))
            return {k: getattr(sv, k) for k in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")}

        def unlink(self, path: str) -> None:
            os.unlink(self._p(path))

        def symlink(self, target: str, source: str) -> None:
            os.symlink(source, self._p(target))

        def rename(self, old: str, new: str) -> None:
            os.rename(self._p(old), self._p(new))

        def link(self, target: str, source: str) -> None:
            os.link(self._p(source), self._p(target))

        def utimens(self, path: str, times: Any = None) -> None:
            pass  # the point of this filesystem: explicit time updates are ignored

        def open(self, path: str, flags: int) -> int:
            return os.open(self._p(path), flags)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            return os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        def read(self, path: str, length: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, length, offset)

        def write(self, path: str, buf: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, buf, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            os.truncate(self._p(path), length)

        def flush(self, path: str, fh: int) -> None:
            pass

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            os.fsync(fh)

    return NoAtimePassthrough


@contextlib.contextmanager
def mounted_noatime(backing: Path, mountpoint: Path) -> Iterator[Path]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("FUSE is not available here (/dev/fuse is missing)")
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.noatime_fs", str(backing),
                             str(mountpoint)], cwd=root, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if proc.poll() is not None:
                pytest.skip(f"cannot mount a FUSE filesystem here: {proc.stderr.read()[-300:]}"
                            if proc.stderr else "cannot mount a FUSE filesystem here")
            assert time.monotonic() < deadline, "the FUSE filesystem did not mount"
            time.sleep(0.05)
        yield mountpoint
    finally:
        from chunkyard.datastore.locking.chunk_store_lock import close_idle

        close_idle()  # the parked fd of the datastore's .lock would keep the mount busy
        subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    from fuse import FUSE

    backing, mountpoint = sys.argv[1:3]
    FUSE(_operations()(backing), mountpoint, foreground=True, nothreads=True,
         default_permissions=True)


if __name__ == "__main__":
    main()
