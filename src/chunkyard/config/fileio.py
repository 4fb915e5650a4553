"""Atomic replacement of a config file and the per-file flock that serialises edits.

A reader never takes the lock: every write is a rename of a complete, fsynced file, so a
reader sees the old or the new file, never a torn one. Writers take an exclusive `flock` on
the file's lock file (PBS's `open_backup_lockfile`), waiting a bounded time; a busy lock names
its holder from `/proc/locks`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator

from chunkyard.config.errors import ConfigBusy, ConfigError
from chunkyard.datastore.locking import LockBusy, Mode
from chunkyard.datastore.locking.lockfiles import flock_acquire, flock_release
from chunkyard.errors import DatastoreError

LOCK_TIMEOUT = 10.0  # PBS's default for config locks

_held = threading.local()


def _held_paths() -> set[str]:
    paths: set[str] | None = getattr(_held, "paths", None)
    if paths is None:
        paths = set()
        _held.paths = paths
    return paths


@contextlib.contextmanager
def locked(lock_path: str, what: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive lock on `lock_path` (created on demand) for the block.

    ConfigBusy after `timeout` seconds, naming the holder; ConfigError if this thread already
    holds it (a nested edit of the same file would wait for itself)."""
    key = os.path.abspath(lock_path)
    held = _held_paths()
    if key in held:
        raise ConfigError(f"{what} is already locked by this thread (nested update)")
    try:
        fd = flock_acquire(os.path.dirname(key), key, Mode.EXCLUSIVE,
                           time.monotonic() + timeout, lambda: what, None)
    except LockBusy as busy:
        raise ConfigBusy(str(busy)) from None
    except DatastoreError as e:  # the lock file could not be opened
        raise ConfigError(str(e)) from None
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        flock_release(fd)


def read_optional(path: str) -> bytes | None:
    """The file's bytes, None if it does not exist; ConfigError for any other failure."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"unable to read '{path}': {e.strerror or e}") from None


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path` and
    fsync the directory: after a crash `path` is the old or the new file, complete."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"unable to write '{path}': {e.strerror or e}") from None
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"unable to open '{directory}': {e.strerror or e}") from None
    try:
        os.fsync(fd)
    except OSError as e:
        raise ConfigError(f"unable to sync '{directory}': {e.strerror or e}") from None
    finally:
        os.close(fd)
