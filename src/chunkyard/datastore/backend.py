"""The narrow storage interface every datastore byte goes through, and its filesystem version.

Keys are relative, '/'-separated strings ('' is the datastore root). Every key is validated
(`validate_key`) before it touches the OS, so a key can never name anything outside the
datastore root lexically: no empty, '.' or '..' parts, no NUL, no backslash, no leading '/'.
Layers above build keys from validated names (`layout`), never OS paths, which keeps an S3
backend possible later: nothing here needs more than get/put/list/delete plus an atomic rename
that S3 would emulate.

Symlinks: the final component is never followed by `stat`, `list_dir`, `touch_atime`, `remove`;
intermediate components are resolved by the kernel as usual, so an administrator may still put
`.chunks` on another disk via a symlink, as PBS allows.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import secrets
import shutil
import stat as stat_mod
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

from chunkyard.errors import AlreadyExists, ChunkyardError, DatastoreError, InvalidName, NotFound

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
_TMP_CHARS = string.ascii_letters + string.digits


class EntryKind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    OTHER = "other"  # symlinks, fifos, sockets, devices: never followed


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    atime_ns: int
    mtime_ns: int
    inode: int
    kind: EntryKind
    mode: int  # permission bits only


@dataclass(frozen=True, slots=True, order=True)
class Entry:
    name: str  # non-UTF-8 names arrive surrogate-escaped (os.fsdecode); callers filter
    kind: EntryKind


def validate_key(key: str, *, allow_root: bool = False) -> str:
    """Return `key` if it is a safe relative key, else raise InvalidName."""
    if not isinstance(key, str):
        raise InvalidName(f"storage key must be a string, not {type(key).__name__}")
    if key == "":
        if allow_root:
            return key
        raise InvalidName("storage key must not be empty (the datastore root)")
    if "\x00" in key or "\\" in key:
        raise InvalidName(f"storage key {key!r} contains a NUL or backslash")
    if key.startswith("/"):
        raise InvalidName(f"storage key {key!r} must be relative")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidName(f"storage key {key!r} has an empty, '.' or '..' component")
    return key


def parent_key(key: str) -> str:
    return key.rpartition("/")[0]


def base_name(key: str) -> str:
    return key.rpartition("/")[2]


def with_extension(name: str, extension: str) -> str:
    """Rust's `Path::set_extension` on a file name: PBS derives temp names this way.

    `index.json.blob` -> `index.json.<ext>`, `abcd…` -> `abcd….<ext>`, `.lock` -> `.lock.<ext>`.
    """
    stem = name
    dot = name.rfind(".")
    if dot > 0:
        stem = name[:dot]
    return f"{stem}.{extension}" if extension else stem


@runtime_checkable
class StorageBackend(Protocol):
    """What the datastore needs from storage; all methods are safe to call from threads.

    Errors: NotFound (missing key, or a parent is not a directory), AlreadyExists,
    InvalidName (bad key), DatastoreError for anything else, naming the key.
    """

    def read(self, key: str) -> bytes: ...

    def open_read(self, key: str) -> BinaryIO: ...

    def write_atomic(self, key: str, data: bytes | memoryview, *, tmp_name: str | None = None,
                     fsync: bool = False, mode: int = DEFAULT_FILE_MODE) -> None: ...

    def create_new(self, key: str, data: bytes, *, mode: int = DEFAULT_FILE_MODE) -> bool: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str, *, follow_symlinks: bool = False) -> Stat: ...

    def list_dir(self, key: str) -> list[Entry]: ...

    def mkdir(self, key: str, *, parents: bool = False, exist_ok: bool = False,
              mode: int = DEFAULT_DIR_MODE) -> bool: ...

    def make_subdirs(self, key: str, names: list[str], *, mode: int) -> None: ...

    def remove(self, key: str) -> None: ...

    def rmdir(self, key: str) -> bool: ...

    def remove_tree(self, key: str) -> None: ...

    def rename(self, src: str, dst: str, *, no_replace: bool = False) -> None: ...

    def touch_atime(self, key: str) -> None: ...

    def sync_dir(self, key: str) -> None: ...

    def sync_filesystem(self) -> None: ...

    def identity(self) -> str: ...

    def local_path(self, key: str) -> str | None: ...


# -- libc helpers ---------------------------------------------------------------------------

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_RENAME_NOREPLACE = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no dynamic libc
        return None


_LIBC = _load_libc()
_utimensat = getattr(_LIBC, "utimensat", None)
_syncfs = getattr(_LIBC, "syncfs", None)
_renameat2 = getattr(_LIBC, "renameat2", None)


def _libc_error(name: str, path: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{name}: {os.strerror(err)}", path)


# -- filesystem backend ---------------------------------------------------------------------


def _kind(mode: int) -> EntryKind:
    if stat_mod.S_ISREG(mode):
        return EntryKind.FILE
    if stat_mod.S_ISDIR(mode):
        return EntryKind.DIR
    return EntryKind.OTHER


class FilesystemBackend:
    """A datastore directory on a local filesystem; writes are temp file + rename(2)."""

    def __init__(self, root: str) -> None:
        self._root = os.path.abspath(os.fspath(root))

    @property
    def root(self) -> str:
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemBackend({self._root!r})"

    def _path(self, key: str, *, allow_root: bool = False) -> str:
        validate_key(key, allow_root=allow_root)
        return os.path.join(self._root, key) if key else self._root

    @contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        """Map OSError to the chunkyard error kinds, naming the full path."""
        try:
            yield
        except ChunkyardError:
            raise
        except OSError as e:
            path = os.path.join(self._root, key) if key else self._root
            reason = e.strerror or str(e)
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise NotFound(f"cannot {what} {path!r}: {reason}") from None
            if e.errno == errno.EEXIST:
                raise AlreadyExists(f"cannot {what} {path!r}: it already exists") from None
            raise DatastoreError(f"cannot {what} {path!r}: {reason}") from None

    # -- reading ------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        path = self._path(key)
        with self._errors("read", key), open(path, "rb") as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        with self._errors("open", key):
            return open(path, "rb")

    def exists(self, key: str) -> bool:
        """True if an entry of any kind (a dangling symlink too) exists at `key`."""
        path = self._path(key, allow_root=True)
        try:
            os.lstat(path)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return False
        except OSError as e:
            raise DatastoreError(f"cannot stat {path!r}: {e.strerror}") from None
        return True

    def stat(self, key: str, *, follow_symlinks: bool = False) -> Stat:
        path = self._path(key, allow_root=True)
        with self._errors("stat", key):
            st = os.stat(path, follow_symlinks=follow_symlinks)
        return Stat(st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ino,
                    _kind(st.st_mode), stat_mod.S_IMODE(st.st_mode))

    def list_dir(self, key: str) -> list[Entry]:
        """All entries (hidden ones too) in directory order; symlinks are kind OTHER."""
        path = self._path(key, allow_root=True)
        out: list[Entry] = []
        with self._errors("list", key), os.scandir(path) as it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        kind = EntryKind.DIR
                    elif e.is_file(follow_symlinks=False):
                        kind = EntryKind.FILE
                    else:
                        kind = EntryKind.OTHER
                except OSError:  # vanished meanwhile
                    continue
                out.append(Entry(e.name, kind))
        return out

    # -- writing ------------------------------------------------------------------------

    def _open_temp(self, final_path: str, tmp_name: str | None) -> tuple[str, int]:
        """Create the temp file next to `final_path`: fixed name, or `<stem>.tmp_XXXXXX`."""
        directory = os.path.dirname(final_path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        if tmp_name is not None:
            tmp = os.path.join(directory, tmp_name)
            return tmp, os.open(tmp, flags | os.O_TRUNC, 0o600)
        base = os.path.basename(final_path)
        for _ in range(100):
            suffix = "".join(secrets.choice(_TMP_CHARS) for _ in range(6))
            tmp = os.path.join(directory, with_extension(base, "tmp_" + suffix))
            try:
                return tmp, os.open(tmp, flags | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "no free temporary file name", final_path)

    def write_atomic(self, key: str, data: bytes | memoryview, *, tmp_name: str | None = None,
                     fsync: bool = False, mode: int = DEFAULT_FILE_MODE) -> None:
        """Write a temp file in the key's directory, then rename(2) it onto `key`.

        The temp file is `<stem>.tmp_XXXXXX` (as PBS's `replace_file`) unless `tmp_name` (a
        single file name) is given, e.g. `disk.img.tmp_fidx`. With `fsync` the file is synced
        before and its directory after the rename. On any error the temp file is removed.
        """
        path = self._path(key)
        if tmp_name is not None:
            validate_key(tmp_name)
            if "/" in tmp_name or tmp_name == base_name(key):
                raise InvalidName(f"temporary name {tmp_name!r} for {key!r} is not a sibling")
        with self._errors("write", key):
            tmp, fd = self._open_temp(path, tmp_name)
            try:
                try:
                    os.fchmod(fd, mode)
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)
                raise
            if fsync:
                self._fsync_dir(os.path.dirname(path))

    @staticmethod
    def _fsync_dir(path: str) -> None:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def create_new(self, key: str, data: bytes, *, mode: int = DEFAULT_FILE_MODE) -> bool:
        """Create `key` with `data` only if nothing is there (O_EXCL); False if it exists."""
        path = self._path(key)
        with self._errors("create", key):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                return False
            try:
                try:
                    os.fchmod(fd, mode)
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            except BaseException:
                with suppress(OSError):
                    os.unlink(path)
                raise
        return True

    def mkdir(self, key: str, *, parents: bool = False, exist_ok: bool = False,
              mode: int = DEFAULT_DIR_MODE) -> bool:
        """Create a directory with exactly `mode` (umask undone); False if it existed."""
        path = self._path(key)
        if parents:
            parent = parent_key(key)
            if parent and not self._is_dir(parent):
                self.mkdir(parent, parents=True, exist_ok=True, mode=DEFAULT_DIR_MODE)
        with self._errors("create directory", key):
            try:
                os.mkdir(path, mode)
            except FileExistsError:
                if exist_ok and os.path.isdir(path):
                    return False
                raise
            if stat_mod.S_IMODE(os.stat(path).st_mode) != mode:
                os.chmod(path, mode)
        return True

    def _is_dir(self, key: str) -> bool:
        return os.path.isdir(self._path(key, allow_root=True))

    def make_subdirs(self, key: str, names: list[str], *, mode: int) -> None:
        """Create many directories inside `key` quickly (one dir fd, umask undone once)."""
        path = self._path(key)
        for name in names:
            validate_key(name)
            if "/" in name:
                raise InvalidName(f"directory name {name!r} must be a single component")
        with self._errors("create directories in", key):
            dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fix_mode: bool | None = None
                for name in names:
                    os.mkdir(name, mode, dir_fd=dfd)
                    if fix_mode is None:
                        got = stat_mod.S_IMODE(os.stat(name, dir_fd=dfd).st_mode)
                        fix_mode = got != mode
                    if fix_mode:
                        os.chmod(name, mode, dir_fd=dfd)
            finally:
                os.close(dfd)

    # -- removing and renaming ----------------------------------------------------------

    def remove(self, key: str) -> None:
        path = self._path(key)
        with self._errors("remove", key):
            os.unlink(path)

    def rmdir(self, key: str) -> bool:
        """Remove an empty directory; False (nothing done) if it is not empty."""
        path = self._path(key)
        with self._errors("remove directory", key):
            try:
                os.rmdir(path)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    return False
                raise
        return True

    def remove_tree(self, key: str) -> None:
        """Remove a directory and everything in it (symlinks are removed, not followed)."""
        path = self._path(key)
        with self._errors("remove", key):
            if not os.path.isdir(path) or os.path.islink(path):
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            shutil.rmtree(path)

    def rename(self, src: str, dst: str, *, no_replace: bool = False) -> None:
        """rename(2): atomic; replaces a file or an empty directory at `dst`, fails on a
        non-empty directory. With `no_replace`, fails with AlreadyExists if `dst` exists
        (renameat2 RENAME_NOREPLACE; where unsupported, a check-then-rename fallback)."""
        src_path, dst_path = self._path(src), self._path(dst)
        with self._errors(f"rename {src!r} to", dst):
            if not no_replace:
                os.rename(src_path, dst_path)
                return
            if _renameat2 is not None:
                res = _renameat2(_AT_FDCWD, os.fsencode(src_path), _AT_FDCWD,
                                 os.fsencode(dst_path), _RENAME_NOREPLACE)
                if res == 0:
                    return
                err = ctypes.get_errno()
                if err not in (errno.ENOSYS, errno.EINVAL):
                    raise OSError(err, os.strerror(err), dst_path)
            if os.path.lexists(dst_path):
                raise FileExistsError(errno.EEXIST, "exists", dst_path)
            os.rename(src_path, dst_path)

    # -- times and sync -----------------------------------------------------------------

    def sync_dir(self, key: str) -> None:
        """fsync(2) a directory, so the renames and removals in it are durable."""
        path = self._path(key, allow_root=True)
        with self._errors("sync directory", key):
            self._fsync_dir(path)

    def touch_atime(self, key: str) -> None:
        """Set the atime to now and keep the mtime (utimensat with UTIME_OMIT), as PBS does
        to mark a chunk as used for garbage collection."""
        path = self._path(key)
        with self._errors("update the access time of", key):
            if _utimensat is not None:
                times = (_Timespec * 2)(_Timespec(0, _UTIME_NOW), _Timespec(0, _UTIME_OMIT))
                if _utimensat(_AT_FDCWD, os.fsencode(path), times, _AT_SYMLINK_NOFOLLOW) != 0:
                    raise _libc_error("utimensat", path)
                return
            st = os.lstat(path)  # pragma: no cover - libc without utimensat
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns), follow_symlinks=False)

    def sync_filesystem(self) -> None:
        """syncfs(2) on the datastore's filesystem (sync level 'filesystem'); os.sync fallback."""
        with self._errors("sync the filesystem of", ""):
            if _syncfs is None:  # pragma: no cover
                os.sync()
                return
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                if _syncfs(fd) != 0:
                    raise _libc_error("syncfs", self._root)
            finally:
                os.close(fd)

    # -- identity -----------------------------------------------------------------------

    def identity(self) -> str:
        """`<st_dev>:<st_ino>` of the root: the same datastore under any path or mount alias."""
        with self._errors("stat", ""):
            st = os.stat(self._root)
        return f"{st.st_dev}:{st.st_ino}"

    def local_path(self, key: str) -> str | None:
        return self._path(key, allow_root=True)
