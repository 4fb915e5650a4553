"""Datastore locks: one session API, one global order, lock files that name their holders.

Design: `shared/design/locking.md` (rules 1-6); PBS background: spec §7.

Locks (modes): NS(n) S/X, GW(g) X, GA(g) S/X, SN(s) S/X, MF(s) X, CS S/X, JR X.
The only way to take one is a `LockSession`:

    manager = LockManager(default_lock_dir(identity), chunk_store_lock_path=base + "/.lock")
    with manager.session("backup host/a", wait=0.0, task_id=upid) as s:
        s.namespace(ns, Mode.SHARED)                  # NS
        s.group_writer(ns, group)                     # GW X       (+ NS S)
        s.group(ns, group, Mode.SHARED)               # GA         (+ NS S)
        s.snapshot(ns, snap, Mode.EXCLUSIVE)          # SN         (+ NS S, GA S)
        s.manifest(ns, snap)                          # MF X, 5 s  (+ NS S, GA S)
        s.chunk_store(Mode.SHARED)                    # CS, never waits
        s.journal()                                   # JR X, 10 s
        s.namespace_create(child)                     # NS(parent) S, NS(child) X
        s.namespace_subtree_exclusive(ns, list_children)   # NS X top-down (rule 2)
        s.lock_all([(key, mode), ...])                # a planned set, sorted (moves)
        s.unlink_lock_file(key) / unlink_group_lock_files / unlink_namespace_lock_files

Container locks are implicit and reused (rule 1); every call returns a guard that releases
what it took; closing the session releases the rest in reverse order.

Order (rule 3): NS by namespace tuple < GW, GA by (ns, type, id), GW first < SN by (group,
time) < MF < CS < JR. With the checker on (`CHUNKYARD_LOCKDEP=1` or
`set_order_checking(True)`) an out-of-order acquisition raises `LockOrderViolation`.

Wait policy (rule 5, constants in `policy`): the session's `wait` (default 0 s: do not wait)
applies to each call; MF waits 5 s and JR 10 s unless told otherwise; CS never waits. A lock
not taken by its deadline raises `LockBusy` naming the lock, the mode wanted and each holder's
pid, program, task id and operation (rule 6).
"""

from chunkyard.datastore.locking.holders import Holder, LockBusy
from chunkyard.datastore.locking.keys import LockKey, LockKind, Mode
from chunkyard.datastore.locking.lockfiles import default_lock_dir
from chunkyard.datastore.locking.order import (
    LockOrderViolation,
    order_checking,
    order_checking_enabled,
    set_order_checking,
)
from chunkyard.datastore.locking.policy import DEFAULT_WAIT, JOURNAL_WAIT, MANIFEST_WAIT
from chunkyard.datastore.locking.session import LockGuard, LockManager, LockSession

__all__ = [
    "DEFAULT_WAIT",
    "JOURNAL_WAIT",
    "MANIFEST_WAIT",
    "Holder",
    "LockBusy",
    "LockGuard",
    "LockKey",
    "LockKind",
    "LockManager",
    "LockOrderViolation",
    "LockSession",
    "Mode",
    "default_lock_dir",
    "order_checking",
    "order_checking_enabled",
    "set_order_checking",
]
