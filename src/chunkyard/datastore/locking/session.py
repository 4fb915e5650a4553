"""The lock-session API: the only way to take a datastore lock (rule 1 of the locking design).

    manager = LockManager(lock_dir, chunk_store_lock_path=f"{base}/.lock")
    with manager.session("backup host/a", wait=0.0, task_id=upid) as s:
        s.group_writer(ns, group)                # NS(ns) S implicitly, then GW X
        s.snapshot(ns, base_snap, Mode.SHARED)   # GA S implicitly (NS S reused)
        s.snapshot(ns, new_snap, Mode.EXCLUSIVE)
        s.chunk_store(Mode.SHARED)
        ...
        s.manifest(ns, new_snap)                 # short wait (5 s) by default

Each call returns a `LockGuard` owning the lock and any container locks it took implicitly;
`guard.release()` drops them in reverse order, and closing the session drops everything the
session still holds in reverse acquisition order. A lock the session already holds in an equal
or stronger mode is reference-counted, never taken twice; a container lock is reused the same
way. Asking for X on a lock the session holds in S is an upgrade and is refused
(`LockOrderViolation`): take it exclusively the first time.

A session belongs to one operation and one thread of control; it is not thread-safe. Open one
session per operation and pass it down rather than opening nested sessions (the order checker
treats the locks of all sessions that took locks in a thread as that thread's locks). Sessions
do not survive `fork()`: a forked child cannot use them, and its copies of the lock fds are
closed at fork. Helpers for the documented multi-lock operations: `namespace_create`,
`namespace_subtree_exclusive` (delete namespace) and `lock_all` (a planned set, taken in the
global order: moves, see `chunkyard.datastore.moves`).

Waiting: each call has a deadline of `wait` seconds from the call (the session's `wait` unless
the call passes its own), shared by its implicit containers and, for a subtree walk, by every
namespace of the walk. See `policy` for the constants. A lock that cannot be taken by the
deadline raises `LockBusy`, naming the lock, the mode wanted and every holder.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType

from chunkyard.datastore.locking import chunk_store_lock, order
from chunkyard.datastore.locking.keys import (
    LockKey,
    LockKind,
    Mode,
    group_part,
    namespace_dir_name,
)
from chunkyard.datastore.locking.lockfiles import (
    flock_acquire,
    flock_release,
    release_and_remove_if_last,
    remove_lock_dir,
    unlink_quietly,
)
from chunkyard.datastore.locking.policy import DEFAULT_WAIT, JOURNAL_WAIT, MANIFEST_WAIT
from chunkyard.datastore.locking.tasks import REGISTRY, TaskInfo
from chunkyard.errors import DatastoreError
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace

S = Mode.SHARED
X = Mode.EXCLUSIVE
# Per-snapshot locks: released by their last holder, the file goes too, so snapshots that were
# backed up or read leave no lock files behind, and moving or deleting a namespace has none
# to unlink however many snapshots it holds. Namespace and group lock files stay (bounded by
# the namespaces and groups; removing those too measured ~20 us more per backup session).
_REMOVED_WHEN_FREE = frozenset({LockKind.SN, LockKind.MF})
NAMESPACES_DIR = "ns"


def _open_file_budget() -> int:
    """How many more files this process may open, keeping 256 spare for its other work."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    return max(0, soft - in_use - 256)


class LockManager:
    """The locks of one datastore: its lock directory and its chunk store `.lock` file.

    `lock_dir` must be the same for every process using the datastore (see
    `default_lock_dir`); `chunk_store_lock_path` is `<base>/.lock`, or None for a manager
    that never takes CS.
    """

    def __init__(self, lock_dir: str, chunk_store_lock_path: str | None = None) -> None:
        self.lock_dir = os.path.abspath(lock_dir)
        self.chunk_store_lock_path = chunk_store_lock_path
        self._ns_root = os.path.join(self.lock_dir, NAMESPACES_DIR)
        self._paths: dict[LockKey, tuple[str, str]] = {}

    def session(
        self, operation: str | None = None, *, wait: float = DEFAULT_WAIT,
        task_id: str | None = None,
    ) -> LockSession:
        """A new session; use it as a context manager. `operation` and `task_id` are what a
        refused competitor is told about this process (task registry, rule 6)."""
        return LockSession(self, operation, wait, task_id)

    def namespace_lock_dir(self, ns: BackupNamespace) -> str:
        return os.path.join(self._ns_root, namespace_dir_name(ns))

    def lock_file_path(self, key: LockKey) -> str:
        """The lock file of `key` (CS has none: it is `chunk_store_lock_path`)."""
        return self._dir_and_path(key)[1]

    def _dir_and_path(self, key: LockKey) -> tuple[str, str]:
        cached = self._paths.get(key)
        if cached is not None:
            return cached
        dname, fname = key.file_parts()
        d = self.lock_dir if dname is None else os.path.join(self._ns_root, dname)
        result = (d, os.path.join(d, fname))
        if len(self._paths) > 4096:
            self._paths.clear()
        self._paths[key] = result
        return result

    def oldest_shared_lock_time(self) -> float | None:
        """Creation time of this process's oldest live shared CS guard (GC's cutoff bound)."""
        if self.chunk_store_lock_path is None:
            return None
        return chunk_store_lock.oldest_shared_lock_time(self.chunk_store_lock_path)


class _Held:
    __slots__ = ("handle", "mode", "refs")

    def __init__(self, mode: Mode, handle: int | chunk_store_lock.CsGuard) -> None:
        self.mode = mode
        self.refs = 1
        self.handle = handle


class LockGuard:
    """A lock taken through a session, with the container locks the call took or reused.

    `release()` (or leaving `with guard:`) drops one reference of each, in reverse order.
    """

    __slots__ = ("_keys", "_session", "key", "mode", "namespaces")

    def __init__(
        self, session: LockSession, keys: list[LockKey], key: LockKey, mode: Mode,
        namespaces: list[BackupNamespace] | None = None,
    ) -> None:
        self._session: LockSession | None = session
        self._keys = keys
        self.key = key
        self.mode = mode
        # For a subtree walk: every namespace locked, top-down (parents before children).
        self.namespaces = namespaces or []

    @property
    def released(self) -> bool:
        return self._session is None or self._session.closed

    def release(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            session._unref_all(self._keys)

    def __enter__(self) -> LockGuard:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class LockSession:
    """All locks of one operation; see the module docstring."""

    def __init__(
        self, manager: LockManager, operation: str | None, wait: float, task_id: str | None
    ) -> None:
        self.manager = manager
        self.operation = operation
        self.task_id = task_id
        self.wait = float(wait)
        self._held: dict[LockKey, _Held] = {}  # insertion order = acquisition order
        self._pid = os.getpid()
        self._closed = False
        self._token = (
            REGISTRY.register(manager.lock_dir, TaskInfo(operation, task_id))
            if operation is not None or task_id is not None else None
        )
        self._threads: set[int] = set()

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> LockSession:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A session dropped without close() must not keep its locks for the process's life.
        # A finalizer may run in the middle of any code of this thread, so it takes no
        # blocking mutex: it closes the lock fds and drops CS guards only if that is free.
        # Task registry entries of such a session stay until the process ends.
        if getattr(self, "_closed", True) or self._pid != os.getpid():
            return
        self._closed = True
        warnings.warn(f"lock session {self.operation!r} was not closed", ResourceWarning,
                      stacklevel=1)
        for held in reversed(list(self._held.values())):
            with contextlib.suppress(Exception):
                h = held.handle
                if isinstance(h, int):
                    flock_release(h)
                else:
                    h.release(blocking=False)
        self._held.clear()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release every held lock in reverse acquisition order; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pid == os.getpid():  # a forked child's copies were closed at fork
                for key in reversed(list(self._held)):
                    self._release(key, self._held.pop(key))
            self._held.clear()
        finally:
            if self._threads:
                order.forget_session(self._threads, self)
            if self._token is not None and self._pid == os.getpid():
                REGISTRY.unregister(self._token)

    # -- what is held ---------------------------------------------------------------------
    def holds(self, key: LockKey, mode: Mode = S) -> bool:
        """True if the session holds `key` in `mode` or stronger."""
        h = self._held.get(key)
        return h is not None and h.mode.covers(mode)

    def held(self) -> list[tuple[LockKey, Mode]]:
        """The held locks in acquisition order."""
        return [(k, h.mode) for k, h in self._held.items()]

    # -- taking locks ---------------------------------------------------------------------
    def namespace(self, ns: BackupNamespace, mode: Mode, *, wait: float | None = None
                  ) -> LockGuard:
        """NS(ns) in `mode`. S: "I work inside ns"; X: "I restructure ns" (use the subtree
        walk for that, so descendants are covered)."""
        key = LockKey.namespace(ns)
        return self._take([(key, mode)], self._deadline(wait), key, mode)

    def namespace_create(self, ns: BackupNamespace, *, wait: float | None = None
                         ) -> LockGuard:
        """NS(parent) S and NS(ns) X: the locks to create `ns` (check existence after)."""
        if ns.is_root:
            raise DatastoreError("the root namespace cannot be created")
        key = LockKey.namespace(ns)
        return self._take([(LockKey.namespace(ns.parent), S), (key, X)],
                          self._deadline(wait), key, X)

    def group_writer(self, ns: BackupNamespace, group: BackupGroup, *,
                     wait: float | None = None) -> LockGuard:
        """GW X, the one writer of a group (backup, pull sync, change owner, group notes)."""
        key = LockKey.group_writer(ns, group)
        return self._take(self._with_containers(key, X), self._deadline(wait), key, X)

    def group(self, ns: BackupNamespace, group: BackupGroup, mode: Mode, *,
              wait: float | None = None) -> LockGuard:
        """GA in `mode`. S: "I use this group"; X: "I move, delete or re-own the group"."""
        key = LockKey.group_access(ns, group)
        return self._take(self._with_containers(key, mode), self._deadline(wait), key, mode)

    def snapshot(self, ns: BackupNamespace, snap: BackupDir, mode: Mode, *,
                 wait: float | None = None) -> LockGuard:
        """SN in `mode`. S: read it; X: create, delete, move or protect it."""
        key = LockKey.snapshot(ns, snap)
        return self._take(self._with_containers(key, mode), self._deadline(wait), key, mode)

    def manifest(self, ns: BackupNamespace, snap: BackupDir, *,
                 wait: float = MANIFEST_WAIT) -> LockGuard:
        """MF X, for a manifest update; waits up to 5 s by default."""
        key = LockKey.manifest(ns, snap)
        return self._take(self._with_containers(key, X), self._deadline(wait), key, X)

    def chunk_store(self, mode: Mode) -> LockGuard:
        """CS: the chunk store record lock, never waiting (spec §7.4); S for writers, X for GC."""
        if self.manager.chunk_store_lock_path is None:
            raise DatastoreError("this lock manager has no chunk store lock file")
        key = LockKey.chunk_store()
        return self._take([(key, mode)], 0.0, key, mode)

    def journal(self, *, wait: float = JOURNAL_WAIT) -> LockGuard:
        """JR X, the move journal (movers append, GC drains); waits up to 10 s by default."""
        key = LockKey.journal()
        return self._take([(key, X)], self._deadline(wait), key, X)

    def lock_all(self, wanted: Iterable[tuple[LockKey, Mode]], *,
                 wait: float | None = None) -> LockGuard:
        """Take a planned set of locks in the global order (sorted by rank), each key once in
        the strongest mode asked for: how a move takes the locks its plan needs.

        A caller that planned without locks must re-check its plan once this returns and
        retry if the plan now needs a lock it does not hold (rule 2: existence is checked
        under the lock that guards it). Refused when the set would exhaust the process's
        open-file limit.
        """
        modes: dict[LockKey, Mode] = {}
        for k, m in wanted:
            if modes.get(k) is not X:
                modes[k] = m
        if not modes:
            raise DatastoreError("lock_all needs at least one lock")
        ordered = sorted(modes.items(), key=lambda km: km[0].rank)
        new = sum(1 for k, _ in ordered if k not in self._held)
        budget = _open_file_budget()
        if new > budget:
            raise DatastoreError(
                f"this operation needs {new} lock files open at once, more than the "
                f"{budget} this process may open; raise the open-file limit (ulimit -n)")
        return self._take(ordered, self._deadline(wait), ordered[0][0], ordered[0][1])

    def namespace_subtree_exclusive(
        self, ns: BackupNamespace,
        list_children: Callable[[BackupNamespace], Iterable[BackupNamespace]], *,
        wait: float | None = None,
    ) -> LockGuard:
        """NS X on `ns` and every descendant, top-down (rule 2): delete namespace.

        `list_children(m)` is called only after NS(m) X is held, so no child can appear
        unseen; it must return direct children of m. The walk is depth-first over sorted
        children, which is the global order. The guard's `namespaces` lists what was locked.
        """
        deadline = self._deadline(wait)
        self._check_usable()
        taken: list[LockKey] = []
        locked: list[BackupNamespace] = []
        try:
            self._walk_subtree(ns, list_children, deadline, taken, locked)
        except BaseException:
            self._unref_all(taken)
            raise
        return LockGuard(self, taken, LockKey.namespace(ns), X, locked)

    # -- removing stale lock files (rule 4) -------------------------------------------------
    def may_unlink(self, key: LockKey) -> bool:
        """True if this session excludes every other user of `key`'s lock file: it holds X on
        the key, NS X on its namespace, or (for GA, SN, MF) GA X on its group."""
        if key.kind is LockKind.CS:
            return False
        if self.holds(key, X):
            return True
        if key.kind is LockKind.JR:
            return False
        if self.holds(LockKey.namespace(key.ns), X):
            return True
        return key.kind in (LockKind.GA, LockKind.SN, LockKind.MF) and self.holds(
            LockKey(LockKind.GA, key.ns, key.group), X)

    def unlink_lock_file(self, key: LockKey) -> bool:
        """Unlink the lock file of a deleted or moved object; True if it existed.

        Call it only once the change that made the key stale is complete: from then on a
        newcomer locks a fresh file and finds the object gone.
        """
        if not self.may_unlink(key):
            raise DatastoreError(
                f"refusing to unlink the lock file of {key}: the session must hold it "
                "exclusively or hold an exclusive lock on its namespace or group"
            )
        return unlink_quietly(self.manager.lock_file_path(key))

    def unlink_group_lock_files(self, ns: BackupNamespace, group: BackupGroup) -> int:
        """Unlink the GA, SN and MF lock files of a deleted or moved group (needs GA X or
        NS X), and its GW file if the session holds GW or NS X. Returns how many existed."""
        ga = LockKey.group_access(ns, group)
        if not self.may_unlink(ga):
            raise DatastoreError(
                f"refusing to unlink the lock files of {ga}: hold the group or its namespace "
                "exclusively"
            )
        gp = group_part(group)
        prefixes = ["ga-" + gp, "sn-" + gp + "-", "mf-" + gp + "-"]
        if self.may_unlink(LockKey.group_writer(ns, group)):
            prefixes.append("gw-" + gp)
        d = self.manager.namespace_lock_dir(ns)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return 0
        exact = {"ga-" + gp, "gw-" + gp}
        return sum(
            unlink_quietly(os.path.join(d, n)) for n in names
            if any(n == p if p in exact else n.startswith(p) for p in prefixes)
        )

    def unlink_namespace_lock_files(self, ns: BackupNamespace) -> int:
        """Unlink every lock file of a deleted or moved namespace and its lock directory
        (needs NS X on it). Returns how many files existed."""
        if not self.holds(LockKey.namespace(ns), X):
            raise DatastoreError(
                f"refusing to unlink the lock files of {LockKey.namespace(ns)}: "
                "hold it exclusively"
            )
        return remove_lock_dir(self.manager.namespace_lock_dir(ns))

    # -- internals ------------------------------------------------------------------------
    def _deadline(self, wait: float | None) -> float:
        return time.monotonic() + (self.wait if wait is None else wait)

    @staticmethod
    def _with_containers(key: LockKey, mode: Mode) -> list[tuple[LockKey, Mode]]:
        return [(c, S) for c in key.containers()] + [(key, mode)]

    def _check_usable(self) -> None:
        if self._closed:
            raise DatastoreError("the lock session is closed")
        if self._pid != os.getpid():
            raise DatastoreError("a lock session cannot be used after fork()")

    def _walk_subtree(
        self, ns: BackupNamespace,
        list_children: Callable[[BackupNamespace], Iterable[BackupNamespace]],
        deadline: float, taken: list[LockKey], locked: list[BackupNamespace],
    ) -> None:
        stack = [ns]
        while stack:
            cur = stack.pop()
            key = LockKey.namespace(cur)
            self._ref(key, X, deadline)
            taken.append(key)
            locked.append(cur)
            children = list(list_children(cur))
            for child in children:
                if not isinstance(child, BackupNamespace) or child.is_root or \
                        child.components[:-1] != cur.components:
                    raise DatastoreError(
                        f"list_children({cur.display()}) returned {child!r}, "
                        "which is not a direct child"
                    )
            # Popping the smallest first gives a pre-order walk in ascending order.
            stack.extend(sorted(children, reverse=True))

    def _take(self, wanted: list[tuple[LockKey, Mode]], deadline: float,
              key: LockKey, mode: Mode) -> LockGuard:
        self._check_usable()
        taken: list[LockKey] = []
        try:
            for k, m in wanted:
                self._ref(k, m, deadline)
                taken.append(k)
        except BaseException:
            self._unref_all(taken)
            raise
        return LockGuard(self, taken, key, mode)

    def _ref(self, key: LockKey, mode: Mode, deadline: float) -> None:
        held = self._held.get(key)
        if held is not None:
            if not held.mode.covers(mode):
                raise order.LockOrderViolation(
                    f"cannot upgrade {key} from shared to exclusive inside one session; "
                    "take it exclusively the first time"
                )
            held.refs += 1
            return
        if not key.allows(mode):
            raise DatastoreError(f"{key} cannot be locked in {mode} mode")
        if order.order_checking_enabled():
            self._check_order(key, mode)
            self._threads.add(order.note_acquiring_session(self))
        handle: int | chunk_store_lock.CsGuard
        if key.kind is LockKind.CS:
            assert self.manager.chunk_store_lock_path is not None
            handle = chunk_store_lock.acquire(
                self.manager.chunk_store_lock_path, mode, self.manager.lock_dir)
        else:
            d, path = self.manager._dir_and_path(key)
            handle = flock_acquire(d, path, mode, deadline, key.describe,
                                   self.manager.lock_dir)
        self._held[key] = _Held(mode, handle)

    def _check_order(self, key: LockKey, mode: Mode) -> None:
        mine = {k: h.mode for k, h in self._held.items()}
        others: list[tuple[str, dict[LockKey, Mode]]] = []
        for s in order.thread_sessions():
            if s is not self and isinstance(s, LockSession) and s._held:
                others.append((repr(s.operation or "unnamed session"),
                               {k: h.mode for k, h in s._held.items()}))
        order.check_order(key, mode, mine, others)

    def _unref_all(self, keys: list[LockKey]) -> None:
        if self._pid != os.getpid():
            return  # a forked child: its copies were closed at fork
        for k in reversed(keys):
            held = self._held.get(k)
            if held is None:
                continue
            held.refs -= 1
            if held.refs <= 0:
                del self._held[k]
                self._release(k, held)

    def _release(self, key: LockKey, held: _Held) -> None:
        h = held.handle
        if not isinstance(h, int):
            h.release()
        elif key.kind in _REMOVED_WHEN_FREE:
            release_and_remove_if_last(h, self.manager.lock_file_path(key))
        else:
            with contextlib.suppress(OSError):
                flock_release(h)
