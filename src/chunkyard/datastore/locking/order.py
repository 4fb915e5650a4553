"""The runtime lock order checker ("lockdep", rule 3 of the locking design).

Every new acquisition must rank strictly above every lock held by the acquiring session and by
any other open session that has taken locks in the same thread (a thread that blocks in one
session while holding another session's locks is as deadlock-prone as one session taking them
out of order).
Reusing a lock the session already holds is not an acquisition and is always fine.

There are no exceptions: a backup releases CS before it takes MF(s) to write its manifest,
as PBS's `finish` drops the chunk-store lock before updating the manifest.

Upgrading a held lock from shared to exclusive inside one session is refused whether or not
the checker is on: with `flock` it would either conflict with the session's own lock or drop
it for a moment.

The checker is on when the environment has `CHUNKYARD_LOCKDEP=1` at import or after
`set_order_checking(True)`; the test suite turns it on for every test.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from chunkyard.datastore.locking.keys import LockKey, Mode

ORDER_TEXT = "NS < GW/GA < SN < MF < CS < JR"


class LockOrderViolation(AssertionError):
    """A lock was requested against the global order (or as an in-session upgrade)."""


_enabled = os.environ.get("CHUNKYARD_LOCKDEP", "").strip().lower() in ("1", "true", "yes", "on")


def set_order_checking(enabled: bool) -> bool:
    """Turn the order checker on or off for this process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


def order_checking_enabled() -> bool:
    return _enabled


@contextmanager
def order_checking(enabled: bool = True) -> Iterator[None]:
    """`with order_checking(): ...` or as the body of a pytest fixture."""
    previous = set_order_checking(enabled)
    try:
        yield
    finally:
        set_order_checking(previous)


def check_order(
    key: LockKey,
    mode: Mode,
    session_held: Mapping[LockKey, Mode],
    other_held: Sequence[tuple[str, Mapping[LockKey, Mode]]],
) -> None:
    """Raise LockOrderViolation unless `key` ranks above every held lock.

    `session_held` are the acquiring session's locks; `other_held` the locks of other open
    sessions of this thread, each with the session's operation for the message.
    """
    rank = key.rank
    for held, hmode in session_held.items():
        if held.rank >= rank:
            raise LockOrderViolation(
                f"lock order violation: {key} ({mode}) requested while the session holds "
                f"{held} ({hmode}); acquire in the global order {ORDER_TEXT} "
                "(locking design rule 3)"
            )
    for operation, held_map in other_held:
        for held, hmode in held_map.items():
            if held.rank >= rank:
                raise LockOrderViolation(
                    f"lock order violation: {key} ({mode}) requested while another session "
                    f"of this thread ({operation}) holds {held} ({hmode}); use one session "
                    f"per operation, or acquire in the global order {ORDER_TEXT}"
                )


# Per thread, the sessions that acquired a lock in it (weakly: a dropped session vanishes).
_THREAD_SESSIONS: dict[int, list[weakref.ref[object]]] = {}
_THREAD_MUTEX = threading.Lock()


def note_acquiring_session(session: object) -> int:
    """Record that `session` takes locks in the calling thread; returns the thread id."""
    tid = threading.get_ident()
    with _THREAD_MUTEX:
        refs = _THREAD_SESSIONS.setdefault(tid, [])
        if not any(r() is session for r in refs):
            refs[:] = [r for r in refs if r() is not None]
            refs.append(weakref.ref(session))
    return tid


def forget_session(tids: Iterable[int], session: object) -> None:
    with _THREAD_MUTEX:
        for tid in tids:
            refs = _THREAD_SESSIONS.get(tid)
            if refs is None:
                continue
            refs[:] = [r for r in refs if r() is not None and r() is not session]
            if not refs:
                del _THREAD_SESSIONS[tid]


def thread_sessions() -> list[object]:
    """The live sessions that have taken locks in the calling thread."""
    with _THREAD_MUTEX:
        refs = _THREAD_SESSIONS.get(threading.get_ident(), [])
        return [s for s in (r() for r in refs) if s is not None]


def _reset_after_fork() -> None:
    global _THREAD_MUTEX
    _THREAD_MUTEX = threading.Lock()
    _THREAD_SESSIONS.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
