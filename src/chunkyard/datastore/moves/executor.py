"""Run a plan: journal, intent log, steps, sync, references, lock-file cleanup.

The caller holds every lock of `plan.locks`. Each step is idempotent against the tree it
finds (a rename whose destination exists is done; a removal of something absent is done),
which is what lets `recovery` run an interrupted plan again from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import (
    group_key,
    namespace_children_key,
    namespace_key,
    snapshot_key,
    type_key,
)
from chunkyard.datastore.locking import LockSession
from chunkyard.datastore.moves import intents, journal
from chunkyard.datastore.moves.plan import (
    MERGE_NOTES,
    MKDIR_NS,
    REMOVE_GROUP,
    REMOVE_NS,
    RENAME_GROUP,
    RENAME_NS,
    RENAME_SNAPSHOT,
    MovePlan,
    Step,
)
from chunkyard.datastore.moves.references import rewrite_references
from chunkyard.errors import FormatError, NotFound
from chunkyard.faults import fault_point
from chunkyard.names import BackupGroup, BackupNamespace

log = logging.getLogger("chunkyard.moves")

Progress = Callable[[int, int], None]


def execute(ds: Datastore, session: LockSession, plan: MovePlan, *,
            progress: Progress | None = None, intent: intents.Intent | None = None) -> None:
    """Carry out `plan` (no conflicts) under the session's locks. `intent` is a claimed
    intent log to finish (recovery); otherwise one is written first. The intent is released
    however this ends: if it ends early, the file stays for recovery."""
    if plan.conflicts:
        raise AssertionError("a plan with conflicts must not run")
    journal.append(ds, session, destinations(plan))
    fault_point("move.journaled")
    resumed = intent is not None
    if intent is None:
        intent = intents.write(ds, plan)
    try:
        _run_steps(ds, session, plan, progress, intent, resumed)
    finally:
        intents.release(intent)


def _run_steps(ds: Datastore, session: LockSession, plan: MovePlan,
               progress: Progress | None, intent: intents.Intent, resumed: bool) -> None:
    fault_point("move.intent-written")
    steps = still_needed(ds, plan) if resumed else plan.steps
    total = len(steps)
    for done, step in enumerate(steps, 1):
        try:
            warning = apply_step(ds, step)
        except NotFound as e:
            if not resumed:
                raise
            warning = f"skipped {step.op}: {e}"  # changed by others since the mover died
        if warning:
            plan.warnings.append(warning)
        if progress is not None:
            progress(done, total)
        fault_point("move.step")
    ds.sync_dirs(_touched_dirs(plan))
    fault_point("move.synced")
    plan.references.extend(rewrite_references(ds, plan.namespace_map))
    for line in plan.references:
        log.info("move %s: %s", plan.describe(), line)
    fault_point("move.references")
    for ns in plan.moved_namespaces:
        session.unlink_namespace_lock_files(ns)
    for ns, group in plan.moved_groups:
        session.unlink_group_lock_files(ns, group)
    fault_point("move.cleaned")
    intents.remove(ds, intent)


def destinations(plan: MovePlan) -> list[str]:
    """The keys GC's journal must know before the renames happen."""
    out: list[str] = []
    for step in plan.steps:
        dest = step.destination()
        if dest is None:
            continue
        ns, group, snapshot = dest
        if snapshot is not None:
            out.append(snapshot_key(ns, snapshot))
        elif group is not None:
            out.append(group_key(ns, group))
        else:
            out.append(namespace_key(ns))
    return out


def still_needed(ds: Datastore, plan: MovePlan) -> list[Step]:
    """The steps of an interrupted plan that still apply to the tree as it is now.

    Its locks died with its mover, so others may have changed the tree before the plan is
    completed: a rename whose source is gone (forgotten, deleted, moved away) is dropped with
    a warning, and a namespace is created only if a remaining rename goes into it, so a
    target deleted since is not brought back empty.
    """
    live: list[Step] = []
    for step in plan.steps:
        state = _rename_state(ds, step)
        if state == "done":
            continue
        if state == "gone":
            plan.warnings.append(f"skipped {step.op} of {_what(step)}: it is gone since the "
                                 "move was interrupted")
            continue
        live.append(step)
    into = {s.dst for s in live if s.op in (RENAME_NS, RENAME_GROUP, RENAME_SNAPSHOT)}
    needed = {a for d in into if d is not None for a in [d, *d.ancestors()]}
    return [s for s in live if s.op != MKDIR_NS or s.dst in needed]


def _rename_state(ds: Datastore, step: Step) -> str:
    """'todo', 'done' (the destination exists) or 'gone' (neither exists); 'todo' for steps
    that are not renames."""
    src, dst, group, snap = step.src, step.dst, step.group, step.snapshot
    if src is None or dst is None:
        return "todo"
    if step.op == RENAME_NS:
        there, here = ds.namespace_exists(dst), ds.namespace_exists(src)
    elif step.op == RENAME_GROUP and group is not None:
        there, here = ds.group_exists(dst, group), ds.group_exists(src, group)
    elif step.op == RENAME_SNAPSHOT and snap is not None:
        there, here = ds.snapshot_exists(dst, snap), ds.snapshot_exists(src, snap)
    else:
        return "todo"
    return "done" if there else "todo" if here else "gone"


def _what(step: Step) -> str:
    thing = step.snapshot or step.group
    where = f"'{step.src.display()}'" if step.src is not None else ""
    return f"{thing} in {where}" if thing is not None else where


def apply_step(ds: Datastore, step: Step) -> str | None:
    """Apply one step unless the tree shows it done; returns a warning, if any."""
    src, dst, group, snap = step.src, step.dst, step.group, step.snapshot
    if step.op == MKDIR_NS:
        assert dst is not None
        if not ds.namespace_exists(dst):
            ds.make_namespace_dir(dst)
    elif step.op == RENAME_NS:
        assert src is not None and dst is not None
        if not ds.namespace_exists(dst):
            _require(ds.namespace_exists(src), f"namespace '{src}'")
            ds.rename_namespace_dir(src, dst)
    elif step.op == RENAME_GROUP:
        assert src is not None and dst is not None and group is not None
        if not ds.group_exists(dst, group):
            _require(ds.group_exists(src, group), f"group {group} in '{src.display()}'")
            ds.rename_group_dir(src, dst, group)
    elif step.op == RENAME_SNAPSHOT:
        assert src is not None and dst is not None and snap is not None
        if not ds.snapshot_exists(dst, snap):
            _require(ds.snapshot_exists(src, snap), f"snapshot {snap} in '{src.display()}'")
            ds.rename_snapshot_dir(src, dst, snap)
    elif step.op == MERGE_NOTES:
        assert src is not None and dst is not None and group is not None
        _merge_notes(ds, src, dst, group)
    elif step.op == REMOVE_GROUP:
        assert src is not None and group is not None
        if ds.group_exists(src, group):
            left = ds.list_snapshots(src, group)
            if left:
                return (f"kept group {group} in '{src.display()}': it still has "
                        f"{len(left)} snapshot(s)")
            ds.remove_group_dir(src, group)
    elif step.op == REMOVE_NS:
        assert src is not None
        if ds.namespace_exists(src):
            # kept silently when namespaces beyond max-depth remain below it (as PBS)
            ds.remove_namespace_dir_if_empty(src)
    else:  # pragma: no cover - Step.from_json admits only known ops
        raise AssertionError(step.op)
    return None


def _require(present: bool, what: str) -> None:
    if not present:
        raise NotFound(f"{what} vanished during the move")


def _merge_notes(ds: Datastore, src: BackupNamespace, dst: BackupNamespace,
                 group: BackupGroup) -> None:
    """PBS's rule: source-only notes move; with notes on both sides the target's stay (the
    planner warned when they differ)."""
    if not ds.group_exists(src, group):
        return
    if _has_notes(ds, src, group) and not _has_notes(ds, dst, group):
        ds.remove_group_notes(dst, group)  # an empty notes file counts as none
        ds.rename_group_notes(src, dst, group)
    else:
        ds.remove_group_notes(src, group)


def _has_notes(ds: Datastore, ns: BackupNamespace, group: BackupGroup) -> bool:
    try:
        return bool(ds.get_group_notes(ns, group))
    except FormatError:  # not UTF-8: still notes
        return True


def _touched_dirs(plan: MovePlan) -> list[str]:
    """The directories whose entries the steps changed: fsynced before the intent goes."""
    out: list[str] = []
    for step in plan.steps:
        src, dst, group, snap = step.src, step.dst, step.group, step.snapshot
        if step.op == RENAME_NS and src is not None and dst is not None:
            out += [namespace_children_key(src.parent), namespace_children_key(dst.parent)]
        elif step.op == RENAME_GROUP and src is not None and dst is not None and group:
            out += [type_key(src, group.type), type_key(dst, group.type)]
        elif step.op == RENAME_SNAPSHOT and src is not None and dst is not None and snap:
            out += [group_key(src, snap.group), group_key(dst, snap.group)]
    return out
