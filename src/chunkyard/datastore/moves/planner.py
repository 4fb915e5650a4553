"""Turn a move request into a plan: validation, merge rules, the steps and the locks.

Read-only: planning never changes the tree, so it runs once without locks (to learn which
locks the move needs, and as the API's fast-fail pre-flight) and again under them, where its
answer is authoritative. Semantics are PBS 4.1.9's (spec pbs-move-series §4-5) except where
the module docstring of `chunkyard.datastore.moves` says otherwise.
"""

from __future__ import annotations

from chunkyard.datastore.datastore import Datastore, SnapshotInfo
from chunkyard.datastore.locking import LockKey, Mode
from chunkyard.datastore.moves.plan import (
    MERGE_NOTES,
    MKDIR_NS,
    REMOVE_GROUP,
    REMOVE_NS,
    RENAME_GROUP,
    RENAME_NS,
    RENAME_SNAPSHOT,
    GroupPlan,
    MovePlan,
    Step,
)
from chunkyard.errors import ChunkyardError, DatastoreError, InvalidName, NotFound
from chunkyard.names import MAX_NAMESPACE_DEPTH, BackupGroup, BackupNamespace
from chunkyard.names.backup import epoch_to_rfc3339
from chunkyard.names.namespace import MAX_COMPONENT_CREATE_LENGTH

S = Mode.SHARED
X = Mode.EXCLUSIVE


def group_move_locks(source: BackupNamespace, target: BackupNamespace,
                     group: BackupGroup) -> list[tuple[LockKey, Mode]]:
    """NS S on both namespaces, GA X on both groups (locking.md), and GW X on the source so
    the mover may unlink every lock file the source group leaves behind (rule 4)."""
    return [(LockKey.namespace(source), S), (LockKey.namespace(target), S),
            (LockKey.group_writer(source, group), X),
            (LockKey.group_access(source, group), X),
            (LockKey.group_access(target, group), X)]


def plan_group_move(ds: Datastore, source: BackupNamespace, group: BackupGroup,
                    target: BackupNamespace, *, merge_group: bool = True) -> MovePlan:
    """The plan to move `group` from `source` to the existing namespace `target`.

    Raises for what PBS rejects before a task starts (same namespace, missing target
    namespace or source group); merge rule violations become the plan's conflicts.
    """
    if source == target:
        raise DatastoreError(
            f"source and target namespace are the same ('{source.display()}')")
    if not ds.namespace_exists(target):
        raise NotFound(f"target namespace '{target.display()}' does not exist")
    ds.require_group(source, group)
    plan = MovePlan("group", source, target, group)
    plan.locks = group_move_locks(source, target, group)
    plan.moved_groups = [(source, group)]
    _plan_group(ds, plan, source, target, group, merge_group)
    return plan


def check_namespace_move(source: BackupNamespace, target: BackupNamespace,
                         max_depth: int | None) -> None:
    """The checks that need no datastore: root, same path, own subtree, depth argument."""
    if source.is_root:
        raise DatastoreError("the root namespace cannot be moved")
    if target.is_root:
        raise DatastoreError("the root namespace cannot be a move target "
                             "(move the groups one by one instead)")
    if source == target:
        raise DatastoreError(f"source and target namespace are the same ('{source}')")
    if source.contains(target):
        raise DatastoreError(f"cannot move namespace '{source}' into its own subtree "
                             f"('{target}')")
    if target.is_ancestor_of(source):
        raise DatastoreError(f"cannot move namespace '{source}' onto its own ancestor "
                             f"'{target}' (move its groups with group move instead)")
    if len(target.name) > MAX_COMPONENT_CREATE_LENGTH:
        raise InvalidName(f"namespace name {target.name!r} is longer than "
                          f"{MAX_COMPONENT_CREATE_LENGTH} characters")
    if max_depth is not None and (
        not isinstance(max_depth, int) or isinstance(max_depth, bool)
        or not 0 <= max_depth <= MAX_NAMESPACE_DEPTH
    ):
        raise InvalidName(f"max depth {max_depth!r} must be 0..{MAX_NAMESPACE_DEPTH}")


def plan_namespace_move(ds: Datastore, source: BackupNamespace, target: BackupNamespace, *,
                        max_depth: int | None = None, merge_groups: bool = True,
                        delete_source: bool = True, count: bool = False) -> MovePlan:
    """The plan to make `source` (with its descendants down to `max_depth`) `target`.

    A source namespace whose target does not exist and whose whole subtree moves is renamed
    in one step; the others get their target created (or merged into) and their groups
    renamed or merged one by one. `count` lists the snapshots of renamed namespaces too
    (for `--dry-run`; a real rename never reads them).
    """
    check_namespace_move(source, target, max_depth)
    ds.require_namespace(source)
    if not ds.namespace_exists(target.parent):
        raise NotFound(f"parent namespace '{target.parent.display()}' of the target "
                       "does not exist")
    depth = MAX_NAMESPACE_DEPTH if max_depth is None else max_depth
    subtree = list(ds.iter_namespaces(source, depth))
    below = max(m.depth for m in subtree) - source.depth
    if target.depth + below > MAX_NAMESPACE_DEPTH:
        raise DatastoreError(
            f"moving '{source}' to '{target}' would exceed the namespace depth limit of "
            f"{MAX_NAMESPACE_DEPTH}: its subtree reaches {below} level(s) below it")
    # namespaces at the depth boundary that have children: their subtrees only partly move
    open_ends = [m for m in subtree
                 if m.depth - source.depth == depth and ds.list_child_namespaces(m)]

    plan = MovePlan("namespace", source, target)
    plan.locks = [(LockKey.namespace(m), X) for m in subtree]
    plan.locks.append((LockKey.namespace(target.parent), S))
    plan.moved_namespaces = subtree
    covered: set[BackupNamespace] = set()
    for m in subtree:
        if m in covered:
            continue
        t = _rebase(m, source, target)
        t_exists = ds.namespace_exists(t)
        plan.locks.append((LockKey.namespace(t), S if t_exists else X))
        if not t_exists and not any(m.contains(b) for b in open_ends):
            _plan_namespace_rename(ds, plan, m, t, subtree, covered, delete_source, count)
            continue
        if not t_exists:
            plan.steps.append(Step(MKDIR_NS, dst=t))
        plan.namespaces.append({"ns": str(m), "target-ns": str(t),
                                "action": "merge" if t_exists else "create"})
        plan.namespace_map.append((m, t))
        for group in ds.list_groups(m):
            plan.locks.append((LockKey.group_access(t, group), X))
            _plan_group(ds, plan, m, t, group, merge_groups)
    if delete_source:
        plan.steps.extend(Step(REMOVE_NS, src=m) for m in reversed(subtree) if m not in covered)
    return plan


def _plan_namespace_rename(ds: Datastore, plan: MovePlan, m: BackupNamespace,
                           t: BackupNamespace, subtree: list[BackupNamespace],
                           covered: set[BackupNamespace], delete_source: bool,
                           count: bool) -> None:
    moved = [d for d in subtree if m.contains(d)]
    covered.update(moved)
    plan.steps.append(Step(RENAME_NS, src=m, dst=t))
    if not delete_source:  # PBS keeps the emptied source namespaces
        plan.steps.extend(Step(MKDIR_NS, dst=d) for d in moved)
    for d in moved:
        dt = _rebase(d, plan.source, plan.target)
        plan.namespace_map.append((d, dt))
        plan.namespaces.append({"ns": str(d), "target-ns": str(dt), "action": "rename"})
        if count:
            for group in ds.list_groups(d):
                plan.groups.append(GroupPlan(d, group, dt, "rename",
                                             len(ds.list_snapshots(d, group))))


def _rebase(m: BackupNamespace, source: BackupNamespace,
            target: BackupNamespace) -> BackupNamespace:
    try:
        return m.rebase(source, target)
    except InvalidName as e:
        raise DatastoreError(f"cannot move namespace '{m}' below '{target}': {e}") from None


def _plan_group(ds: Datastore, plan: MovePlan, src: BackupNamespace, dst: BackupNamespace,
                group: BackupGroup, merge: bool) -> None:
    """Steps for one group: a rename if the target group is absent, else a merge under
    PBS's rules (same owner; every target snapshot older than the oldest source one)."""
    source_snaps = ds.list_snapshots(src, group)
    if not ds.group_exists(dst, group):
        plan.steps.append(Step(RENAME_GROUP, src=src, dst=dst, group=group))
        plan.groups.append(GroupPlan(src, group, dst, "rename", len(source_snaps)))
        return
    reason = _merge_conflict(ds, src, dst, group, source_snaps, merge)
    if reason:
        plan.groups.append(GroupPlan(src, group, dst, "conflict", len(source_snaps), reason))
        plan.conflicts.append(f"group {group} in '{src.display()}': {reason}")
        return
    plan.steps.extend(Step(RENAME_SNAPSHOT, src=src, dst=dst, snapshot=s.dir)
                      for s in source_snaps)
    plan.steps.append(Step(MERGE_NOTES, src=src, dst=dst, group=group))
    plan.steps.append(Step(REMOVE_GROUP, src=src, group=group))
    plan.groups.append(GroupPlan(src, group, dst, "merge", len(source_snaps)))
    notes_warning = _notes_conflict(ds, src, dst, group)
    if notes_warning:
        plan.warnings.append(notes_warning)


def _merge_conflict(ds: Datastore, src: BackupNamespace, dst: BackupNamespace,
                    group: BackupGroup, source_snaps: list[SnapshotInfo], merge: bool) -> str:
    where = f"'{dst.display()}'"
    if not merge:
        return f"the group already exists in {where} and merging is disabled"
    try:
        source_owner = ds.get_owner(src, group)
        target_owner = ds.get_owner(dst, group)
    except ChunkyardError as e:
        return f"cannot compare owners: {e}"
    if source_owner != target_owner:
        return (f"owner mismatch: the source group belongs to {source_owner}, the one in "
                f"{where} to {target_owner}")
    if not source_snaps:
        return ""
    oldest = source_snaps[0].dir.time
    newer = [s for s in ds.list_snapshots(dst, group) if s.dir.time >= oldest]
    if newer:
        return (f"snapshot time mismatch: the target has {len(newer)} snapshot(s) not older "
                f"than the oldest source snapshot {epoch_to_rfc3339(oldest)}, e.g. "
                f"{epoch_to_rfc3339(newer[0].dir.time)}")
    return ""


def _notes_conflict(ds: Datastore, src: BackupNamespace, dst: BackupNamespace,
                    group: BackupGroup) -> str:
    try:
        source_notes = ds.get_group_notes(src, group)
        target_notes = ds.get_group_notes(dst, group)
    except ChunkyardError:
        return ""
    if source_notes and target_notes and source_notes != target_notes:
        return (f"group {group}: the notes differ; the target's notes in "
                f"'{dst.display()}' are kept and the source's are dropped")
    return ""
