"""Moving groups and namespaces: online, atomic, mergeable, crash-safe.

    move_group(ds, source_ns, group, target_ns, merge_group=True, dry_run=False, wait=0)
    move_namespace(ds, source, target, max_depth=None, delete_source=True,
                   merge_groups=True, dry_run=False, wait=0)

Both return the result as a dict in the shape `--output-format json` prints, and raise
`MoveConflict` (carrying that dict) when the plan breaks a merge rule. PBS 4.1.9's semantics
(spec pbs-move-series §4-6), with these differences, each on purpose:

1. A namespace (or group) whose target does not exist moves with one rename(2) under the locks
   of locking.md: O(namespaces in the subtree) locks, whatever the number of snapshots.
2. The source namespace subtree is locked NS X for the whole move, so no backup, group or
   child namespace can appear in it meanwhile and nothing is left behind.
3. Merges are all or nothing: every target group is locked (GA X) before the first change and
   every merge rule is checked for every group first, so a conflict or a busy target fails
   the move before anything moves. The plan goes to a persistent intent log first, and a
   move cut short is completed the next time the datastore is opened (`recovery`).
4. `dry_run` returns the plan (groups, snapshot counts, merges, conflicts, a busy lock's
   holder) and changes nothing.
5. Before any rename the destinations go to the GC move journal (`journal`).
6. Configuration naming a moved namespace is rewritten by registered hooks (`references`).
7. A namespace cannot be moved onto its own ancestor (PBS would merge it into a namespace
   that contains it); move its groups instead.
"""

from __future__ import annotations

from typing import Any

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockKey, LockSession, Mode
from chunkyard.datastore.moves.executor import Progress, execute
from chunkyard.datastore.moves.plan import MovePlan
from chunkyard.datastore.moves.planner import (
    check_namespace_move,
    group_move_locks,
    plan_group_move,
    plan_namespace_move,
)
from chunkyard.datastore.moves.references import register_reference_hook
from chunkyard.errors import DatastoreError, NotFound
from chunkyard.faults import fault_point
from chunkyard.names import BackupGroup, BackupNamespace

# How often a namespace move re-plans when the tree changed between planning and locking.
LOCK_ATTEMPTS = 5


class MoveConflict(DatastoreError):
    """The move breaks a merge rule; nothing was changed. `report` is the full plan."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def move_group(ds: Datastore, source: BackupNamespace, group: BackupGroup,
               target: BackupNamespace, *, merge_group: bool = True, dry_run: bool = False,
               wait: float = 0.0, task_id: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Move `group` from namespace `source` into the existing namespace `target`."""
    operation = f"move group {group} from '{source.display()}' to '{target.display()}'"
    with ds.locks.session(operation, wait=wait, task_id=task_id) as session:
        if source == target:  # before locking: the lock set would hold one key twice
            plan_group_move(ds, source, group, target, merge_group=merge_group)
        try:
            session.lock_all(group_move_locks(source, target, group))
        except LockBusy as busy:
            if not dry_run:
                raise
            plan = plan_group_move(ds, source, group, target, merge_group=merge_group)
            return plan.report(dry_run=True, busy=str(busy))
        plan = plan_group_move(ds, source, group, target, merge_group=merge_group)
        return _run(ds, session, plan, dry_run, progress)


def move_namespace(ds: Datastore, source: BackupNamespace, target: BackupNamespace, *,
                   max_depth: int | None = None, delete_source: bool = True,
                   merge_groups: bool = True, dry_run: bool = False, wait: float = 0.0,
                   task_id: str | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Make namespace `source` (and its descendants down to `max_depth`) `target`, a full
    path whose parent exists; `target` is created when missing and merged into otherwise."""
    def plan_now() -> MovePlan:
        return plan_namespace_move(ds, source, target, max_depth=max_depth,
                                   merge_groups=merge_groups, delete_source=delete_source,
                                   count=dry_run)

    operation = f"move namespace '{source}' to '{target}'"
    check_namespace_move(source, target, max_depth)
    # First lock what makes "missing" authoritative (the source and the target's parent);
    # then lock what the plan made under them needs, re-planning until the plan needs no
    # lock we lack: what it reads without a lock may change, what it reads under one not.
    wanted = [(LockKey.namespace(source), Mode.EXCLUSIVE),
              (LockKey.namespace(target.parent), Mode.SHARED)]
    with ds.locks.session(operation, wait=wait, task_id=task_id) as session:
        for attempt in range(LOCK_ATTEMPTS):
            try:
                guard = session.lock_all(wanted)
            except LockBusy as busy:
                if not dry_run:
                    raise
                return plan_now().report(dry_run=True, busy=str(busy))
            try:
                plan = plan_now()
            except NotFound:
                if attempt == LOCK_ATTEMPTS - 1 or not ds.namespace_exists(source) or \
                        not ds.namespace_exists(target.parent):
                    raise
                guard.release()  # something vanished where we held no lock yet
                continue
            if all(session.holds(key, mode) for key, mode in plan.locks):
                return _run(ds, session, plan, dry_run, progress)
            guard.release()
            wanted = plan.locks
        raise DatastoreError(f"the namespace tree below '{source}' kept changing while the "
                             "move was locking it; try again")


def _run(ds: Datastore, session: LockSession, plan: MovePlan, dry_run: bool,
         progress: Progress | None) -> dict[str, Any]:
    if dry_run:
        return plan.report(dry_run=True)
    if plan.conflicts:
        shown = "; ".join(plan.conflicts[:3])
        more = f" (and {len(plan.conflicts) - 3} more)" if len(plan.conflicts) > 3 else ""
        raise MoveConflict(f"cannot move {plan.describe()}: {shown}{more}; nothing was moved",
                           plan.report(dry_run=False))
    fault_point("move.locked")
    execute(ds, session, plan, progress=progress)
    return plan.report(dry_run=False)


__all__ = ["MoveConflict", "move_group", "move_namespace", "register_reference_hook"]
