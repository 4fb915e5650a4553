"""The chunk store lock CS: PBS's ProcessLocker on `<base>/.lock` (spec §7.4), made to work
across processes.

POSIX record locks (`fcntl.lockf`, i.e. `F_SETLK`), always non-blocking. PBS locks the whole
file: writers shared, GC exclusive, which is right for one daemon that runs every backup and
GC in-process, but here backups are separate processes and would block GC (and GC them). So
chunkyard locks byte ranges instead, on purpose:

- GC (X) locks byte 0: one GC per datastore, across processes;
- a writer process (S) locks the one byte at `WRITER_BASE + <start second>` of its oldest live
  shared guard, so the lock itself tells any other process when the oldest writer started:
  `oldest_shared_lock_time` reads every process's writer bytes from `/proc/locks`. A running
  backup therefore blocks no GC, and GC's sweep still spares everything written since it began;
- PBS's own whole-file locks conflict with both ranges, so a PBS daemon on the same datastore
  still makes chunkyard's GC and backups fail instead of racing them.

Record locks belong to the process, not to a file descriptor, so:

- one `ProcessLocker` (one fd) exists per process and lock file, shared by all sessions and
  threads (a mutex guards it), and stays open while idle (at most `MAX_IDLE` idle ones) so
  that a session costs two `fcntl` calls. Never open and close `<base>/.lock` elsewhere in a
  process that may hold CS: closing *any* fd of the file drops all of the process's record
  locks;
- shared guards are reference-counted: the first takes its writer byte, the last drops it,
  and when the oldest guard goes the byte moves to the next oldest one's second;
- every shared guard records its creation time; `oldest_shared_lock_time()` is GC's
  `oldest_writer` bound.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import threading
import time

from chunkyard.datastore.locking.holders import LockBusy, find_holders, locks_on
from chunkyard.datastore.locking.keys import Mode
from chunkyard.errors import DatastoreError

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
GC_BYTE = 0
WRITER_BASE = 1 << 32  # writer bytes lie above every byte PBS's or our GC lock names


class ProcessLocker:
    """The per-process state of one chunk store lock file.

    All methods run under the module mutex (`_MUTEX`); use the module functions.
    """

    def __init__(self, path: str, fd: int, key: tuple[int, int]) -> None:
        self.path = path
        self.fd = fd
        self.key = key
        self.shared: dict[int, float] = {}
        self.exclusive = 0
        self._ids = itertools.count(1)

    def _busy(self, mode: Mode, byte: int, lock_dir: str | None) -> LockBusy:
        """The refusal of a lock on `byte`, naming only the holders that conflict with it
        (not the backups holding their own writer bytes beside it)."""
        st = os.fstat(self.fd)
        return LockBusy(f"chunk store lock {self.path!r}", mode,
                        find_holders(st.st_dev, st.st_ino, lock_dir, blocking=(byte, mode)),
                        0.0)

    def try_shared(self, lock_dir: str | None) -> int:
        now = time.time()
        if not self.shared:
            byte = _writer_byte(now)
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, byte)
            except OSError:
                raise self._busy(Mode.SHARED, byte, lock_dir) from None
        gid = next(self._ids)
        self.shared[gid] = now
        return gid

    def try_exclusive(self, lock_dir: str | None) -> None:
        if not self.exclusive:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, GC_BYTE)
            except OSError:
                raise self._busy(Mode.EXCLUSIVE, GC_BYTE, lock_dir) from None
        self.exclusive += 1

    def drop_shared(self, gid: int) -> None:
        started = self.shared.pop(gid, None)
        if started is None:
            return
        old = _writer_byte(min([started, *self.shared.values()]))
        if not self.shared:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, old)
            return
        new = _writer_byte(min(self.shared.values()))
        if new != old:  # the oldest guard went: move the byte (lock the new one first)
            fcntl.lockf(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, new)
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, old)

    def drop_exclusive(self) -> None:
        if not self.exclusive:
            return
        self.exclusive -= 1
        if not self.exclusive:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, GC_BYTE)

    @property
    def idle(self) -> bool:
        return not self.shared and not self.exclusive


# Guards the lockers and their state; CS operations are non-blocking, so holding it is brief.
_MUTEX = threading.Lock()
_LOCKERS: dict[tuple[int, int], ProcessLocker] = {}
# Idle lockers, oldest first (a dict used as an ordered set).
_IDLE: dict[tuple[int, int], None] = {}
MAX_IDLE = 16


def _reset_after_fork() -> None:
    # Record locks are not inherited; the child's lockers would describe the parent's state.
    # Closing the inherited fds is safe: the child owns no record locks on them.
    global _MUTEX
    for locker in _LOCKERS.values():
        with contextlib.suppress(OSError):
            os.close(locker.fd)
    _LOCKERS.clear()
    _IDLE.clear()
    _MUTEX = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _locker(path: str, create: bool) -> ProcessLocker | None:
    """The locker of `path`, found by (device, inode) without opening the file, because
    opening and closing a second fd of it would drop this process's record locks."""
    try:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        locker = _LOCKERS.get(key)
        if locker is not None:
            _IDLE.pop(key, None)
            return locker
        if not create:
            return None
    except FileNotFoundError:
        if not create:
            return None
    try:
        fd = os.open(path, _FLAGS, 0o660)
    except OSError as e:
        raise DatastoreError(f"cannot open chunk store lock {path!r}: {e.strerror}") from e
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    existing = _LOCKERS.get(key)
    if existing is not None:  # pragma: no cover - path replaced between stat and open
        # Closing `fd` would drop the record locks `existing` holds; keep it open instead.
        _IDLE.pop(key, None)
        return existing
    locker = _LOCKERS[key] = ProcessLocker(path, fd, key)
    return locker


def _park_if_idle(locker: ProcessLocker) -> None:
    """Keep an idle locker's fd open for the next session (as PBS keeps it for the life of
    the process), but at most `MAX_IDLE` of them; closing is safe only while idle."""
    if not locker.idle:
        return
    _IDLE[locker.key] = None
    while len(_IDLE) > MAX_IDLE:
        key = next(iter(_IDLE))
        del _IDLE[key]
        old = _LOCKERS.pop(key)
        os.close(old.fd)


def close_idle() -> None:
    """Close the parked fds of idle lockers (e.g. before the datastore's filesystem is
    unmounted); lockers in use stay open."""
    with _MUTEX:
        for key in list(_IDLE):
            del _IDLE[key]
            os.close(_LOCKERS.pop(key).fd)


def acquire(path: str, mode: Mode, lock_dir: str | None = None) -> CsGuard:
    """Take a CS guard on `path` without waiting; LockBusy names the other process."""
    with _MUTEX:
        locker = _locker(path, create=True)
        assert locker is not None
        try:
            if mode is Mode.SHARED:
                return CsGuard(locker, mode, locker.try_shared(lock_dir))
            locker.try_exclusive(lock_dir)
            return CsGuard(locker, mode, 0)
        except BaseException:
            _park_if_idle(locker)
            raise


class CsGuard:
    """One shared or exclusive CS guard; `release()` is idempotent."""

    __slots__ = ("_gid", "_locker", "_pid", "mode")

    def __init__(self, locker: ProcessLocker, mode: Mode, gid: int) -> None:
        self._locker: ProcessLocker | None = locker
        self.mode = mode
        self._gid = gid
        self._pid = os.getpid()

    def release(self, blocking: bool = True) -> None:
        """Drop the guard. With `blocking=False` (from a finalizer, which may run while this
        thread holds the mutex) the guard is left in place if the mutex is busy."""
        locker = self._locker
        if locker is None or self._pid != os.getpid():
            return
        mutex = _MUTEX
        if not mutex.acquire(blocking):
            return
        try:
            self._locker = None
            if self.mode is Mode.SHARED:
                locker.drop_shared(self._gid)
            else:
                locker.drop_exclusive()
            _park_if_idle(locker)
        finally:
            mutex.release()


def _writer_byte(started: float) -> int:
    return WRITER_BASE + max(0, int(started))


def oldest_shared_lock_time(path: str, proc_locks: str | None = None) -> float | None:
    """GC's `oldest_writer` bound: the creation time (Unix seconds) of the oldest live shared
    CS guard on `path` of any process (others' to the second, from their writer bytes in
    `/proc/locks`; `proc_locks` replaces it in tests); None if there is none."""
    with _MUTEX:
        locker = _locker(path, create=False)
        own = min(locker.shared.values(), default=None) if locker else None
    try:
        st = os.stat(path)
    except OSError:
        return own
    me = os.getpid()
    others = [float(ln.start - WRITER_BASE) for ln in locks_on(st.st_dev, st.st_ino, proc_locks)
              if ln.kind == "POSIX" and ln.pid != me and ln.mode is Mode.SHARED
              and ln.start >= WRITER_BASE]
    return min([t for t in (own, *others) if t is not None], default=None)
