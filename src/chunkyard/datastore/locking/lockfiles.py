"""Lock files (rule 4): `flock(2)` with a deadline, the double-stat check, the lock directory.

A lock file is opened `O_RDWR|O_CREAT|O_CLOEXEC` with mode 0660 (less the umask) and locked
with `flock(LOCK_SH|LOCK_EX|LOCK_NB)`, polled until the deadline (`policy`). After the lock is
taken, `fstat` of the fd is compared with `stat` of the path: if the file was unlinked or
replaced meanwhile (a holder of X cleaned it up), the lock protects nothing, so the fd is closed
and the whole step is retried on the new file. PBS fails here; retrying is right because the
replacement can only happen after the remover released its claim.

Locks die with their process (`flock`), and `O_CLOEXEC` keeps them out of exec'd children.
A plain `fork()` would share the open file description (and so the lock) with the child; an
at-fork handler closes every lock fd in the child, so a forked child never keeps a parent's
lock alive (the parent's lock is unaffected: the description stays open in the parent).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import time
from collections.abc import Callable

from chunkyard.datastore.locking.holders import LockBusy, find_holders
from chunkyard.datastore.locking.keys import NAME_MAX, Mode
from chunkyard.datastore.locking.policy import MAX_REPLACED_RETRIES, POLL_MAX, POLL_MIN
from chunkyard.errors import DatastoreError

LOCK_DIR_ENV = "CHUNKYARD_LOCK_DIR"
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
FILE_MODE = 0o660
DIR_MODE = 0o770

# Every lock fd this process holds, so that a forked child can close its copies.
_LOCK_FDS: set[int] = set()


def _close_inherited_lock_fds() -> None:
    for fd in _LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_lock_fds)


def flock_acquire(
    dir_path: str, path: str, mode: Mode, deadline: float, what: Callable[[], str],
    lock_dir: str | None,
) -> int:
    """Lock `path` (created in `dir_path` on demand) and return the fd; LockBusy at deadline.

    `deadline` is a `time.monotonic()` value; a deadline in the past means one attempt.
    `what()` names the lock in the LockBusy message; `lock_dir` locates the task registry.
    """
    op = (fcntl.LOCK_EX if mode is Mode.EXCLUSIVE else fcntl.LOCK_SH) | fcntl.LOCK_NB
    started = 0.0
    for _ in range(MAX_REPLACED_RETRIES):
        try:
            fd = os.open(path, _OPEN_FLAGS, FILE_MODE)
        except FileNotFoundError:
            # The directory is missing (first use, or removed by a namespace cleanup).
            try:
                os.makedirs(dir_path, mode=DIR_MODE, exist_ok=True)
            except OSError as e:
                raise DatastoreError(
                    f"{what()}: cannot create lock directory {dir_path!r}: {e.strerror}"
                ) from e
            continue
        except OSError as e:
            raise DatastoreError(f"{what()}: cannot open lock file {path!r}: {e.strerror}") from e
        try:
            delay = POLL_MIN
            while True:
                try:
                    fcntl.flock(fd, op)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if not started:
                        started = now
                    if now >= deadline:
                        st = os.fstat(fd)
                        raise LockBusy(
                            what(), mode, find_holders(st.st_dev, st.st_ino, lock_dir),
                            now - started,
                        ) from None
                    time.sleep(min(delay, deadline - now))
                    delay = min(delay * 2, POLL_MAX)
            st = os.fstat(fd)
            try:
                cur = os.stat(path)
                same = cur.st_ino == st.st_ino and cur.st_dev == st.st_dev
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            _LOCK_FDS.add(fd)
            return fd
        os.close(fd)  # unlinked or replaced between open and flock: lock the new file
    raise DatastoreError(f"{what()}: lock file {path!r} keeps being replaced, giving up")


def flock_release(fd: int) -> None:
    _LOCK_FDS.discard(fd)
    os.close(fd)


def release_and_remove_if_last(fd: int, path: str) -> None:
    """Release a lock and, if no other process holds it, unlink its file (rule 4).

    Taking the lock exclusively without waiting succeeds only when nobody else holds it; the
    file is then unlinked as its sole (exclusive) holder, provided the path still names our
    inode. Anyone who opened the old file meanwhile notices the unlink after their flock (the
    double-stat of `flock_acquire`) and retries on a fresh file. For per-snapshot locks: a
    snapshot read or written once would otherwise leave its lock file until reboot.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        st = os.fstat(fd)
        try:
            cur = os.stat(path)
        except FileNotFoundError:
            cur = None
        if cur is not None and (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
    except OSError:
        pass  # someone else holds it (or it is gone): they will release it
    finally:
        flock_release(fd)


def unlink_quietly(path: str) -> bool:
    """Unlink a lock file; True if it existed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_lock_dir(dir_path: str) -> int:
    """Unlink every file in a per-namespace lock directory and the directory if it is empty.

    A process that recreates a file meanwhile keeps the directory (ENOTEMPTY is fine); one
    whose open fails because the directory vanished recreates it (`flock_acquire`).
    """
    try:
        names = os.listdir(dir_path)
    except FileNotFoundError:
        return 0
    removed = sum(unlink_quietly(os.path.join(dir_path, n)) for n in names)
    try:
        os.rmdir(dir_path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise
    return removed


# -- where the lock directory is --------------------------------------------------------

_ID_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


def identity_dir_name(identity: str) -> str:
    """A file-name-safe, injective form of a datastore identity such as `"2049:1234"`.

    Bytes outside `[A-Za-z0-9_.:-]` (and a leading `.`) become `\\xNN`; the backslash itself is
    escaped, so different identities never share a name. Over-long names are hashed.
    """
    raw = identity.encode()
    if not raw:
        raise DatastoreError("a lock directory needs a non-empty datastore identity")
    out = "".join(
        chr(b) if b in _ID_KEEP and not (i == 0 and b == 0x2E) else f"\\x{b:02x}"
        for i, b in enumerate(raw)
    )
    if len(out) > NAME_MAX:
        out = out[:100] + "#" + hashlib.sha256(raw).hexdigest()
    return out


def _usable(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def default_lock_dir(identity: str) -> str:
    """`<base>/<identity>` where base is, in order of preference:

    `$CHUNKYARD_LOCK_DIR` if set; `/run/chunkyard/locks` if `/run` (or that directory) is
    writable; `$XDG_RUNTIME_DIR/chunkyard/locks`; `/tmp/chunkyard-<uid>/locks`.
    Every process using one datastore must arrive at the same directory (rule 4).
    Nothing is created here (but the private /tmp fallback's root); the lock manager creates
    directories on first use.
    """
    name = identity_dir_name(identity)
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return os.path.join(env, name)
    if _usable("/run/chunkyard/locks") or (
        not os.path.exists("/run/chunkyard") and _usable("/run")
    ) or _usable("/run/chunkyard"):
        return os.path.join("/run/chunkyard/locks", name)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _usable(xdg):
        return os.path.join(xdg, "chunkyard", "locks", name)
    return os.path.join(_private_tmp_dir(f"/tmp/chunkyard-{os.getuid()}"), "locks", name)


def _private_tmp_dir(path: str) -> str:
    """The /tmp fallback, created 0700; refused unless it is ours and closed to others
    (another user could otherwise pre-create it and hold or swap our lock files)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise DatastoreError(f"cannot create the lock directory {path}: {e.strerror}") from None
    st = os.lstat(path)
    if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()
            or stat.S_IMODE(st.st_mode) & 0o077):
        raise DatastoreError(
            f"refusing the lock directory {path}: it must be a directory owned by uid "
            f"{os.getuid()} with mode 0700 (set CHUNKYARD_LOCK_DIR to use another)")
    return path
