"""`move-group` and `move-namespace` (pbs-move-series §6): checked at once, run as tasks.

Our extension: an optional boolean `dry-run` (default false; PBS's API has none). With it the
request, after the same privilege checks as the move itself, plans the move and answers the
plan at once as `data` (the object `chunkyard group move --dry-run --output-format json`
prints locally: namespaces, groups with snapshot counts and actions, conflicts, and `busy`
with the holder when a lock the move needs is taken now) instead of a UPID; nothing changes
and no task is started. Like prune's dry run it only reads, so it is allowed while the
datastore is in read-only maintenance.

Worker types `move-group` / `move-namespace`, ids `{store}:{ns}/{group}:{target_ns}` and
`{store}:{ns}:{target_ns}` (namespaces in the API form, the root as the empty string).
A task checks for abort before it takes its locks, never in the middle of a move: a move
runs to its end (its steps are renames; recovery would complete it anyway), so stopping
the server never leaves one half done.
"""

from __future__ import annotations

from typing import Any

from chunkyard.datastore.moves import MoveConflict, move_group, move_namespace
from chunkyard.names import BackupGroup
from chunkyard.server.app import Call, Endpoint
from chunkyard.server.auth.checks import check_move_group, check_move_namespace
from chunkyard.server.endpoints.common import (
    BACKUP_ID,
    BACKUP_TYPE,
    MAX_DEPTH,
    NS,
    NS_REQUIRED,
    STORE,
    bool_param,
    group_of,
    ns_of,
)
from chunkyard.server.tasks import TaskContext

PREFIX = "/admin/datastore"
DRY_RUN_NOTE = ("chunkyard extension, not in PBS: `dry-run` (default false) returns the plan "
                "as an object instead (after the same privilege checks; nothing changes, no "
                "task starts).")


def _progress(ctx: TaskContext) -> Any:
    def report(done: int, total: int) -> None:
        ctx.progress(done, total, "steps")

    return report


def _log_report(ctx: TaskContext, report: dict[str, Any]) -> None:
    for key, value in report.items():
        if isinstance(value, list | dict):
            ctx.log(f"{key}: {len(value)} entries")
        else:
            ctx.log(f"{key}: {value}")


def _run_move(ctx: TaskContext, describe: str, move: Any) -> None:
    ctx.log(describe)
    ctx.check_abort()
    try:
        report = move(ctx)
    except MoveConflict as conflict:
        for line in conflict.report.get("conflicts", []) or []:
            ctx.log(f"conflict: {line}")
        raise
    _log_report(ctx, report)


def start_move_group(call: Call) -> str | dict[str, Any]:
    params = call.params
    store = params["store"]
    source, target = ns_of(params), ns_of(params, "target-ns")
    group: BackupGroup = group_of(params)
    merge = params["merge-group"]
    state = call.state
    check_move_group(call.acl, call.caller, store, source, target,
                     lambda: state.datastore(store).get_owner(source, group))
    if params["dry-run"]:
        return move_group(state.datastore(store), source, group, target, merge_group=merge,
                          dry_run=True)
    ds = state.datastore(store, write=True)

    def run(ctx: TaskContext) -> None:
        _run_move(ctx, f"moving group {group} from '{source.display()}' to "
                       f"'{target.display()}' in datastore {store}",
                  lambda c: move_group(ds, source, group, target, merge_group=merge,
                                       task_id=c.upid, progress=_progress(c)))

    return state.tasks.spawn("move-group", f"{store}:{source}/{group}:{target}",
                             str(call.caller), run)


def start_move_namespace(call: Call) -> str | dict[str, Any]:
    params = call.params
    store = params["store"]
    source, target = ns_of(params), ns_of(params, "target-ns")
    check_move_namespace(call.acl, call.caller, store, source, target)
    state = call.state
    options = {"max_depth": params["max-depth"], "delete_source": params["delete-source"],
               "merge_groups": params["merge-groups"]}
    if params["dry-run"]:
        return move_namespace(state.datastore(store), source, target, dry_run=True, **options)
    ds = state.datastore(store, write=True)

    def run(ctx: TaskContext) -> None:
        _run_move(ctx, f"moving namespace '{source}' to '{target}' in datastore {store}",
                  lambda c: move_namespace(ds, source, target, task_id=c.upid,
                                           progress=_progress(c), **options))

    return state.tasks.spawn("move-namespace", f"{store}:{source}:{target}",
                             str(call.caller), run)


ENDPOINTS = [
    Endpoint("POST", PREFIX + "/{store}/move-group", start_move_group, {
        "store": STORE, "ns": NS, "backup-type": BACKUP_TYPE, "backup-id": BACKUP_ID,
        "target-ns": NS, "merge-group": bool_param(True), "dry-run": bool_param(False),
    }, description="Move a backup group to another namespace (a task; returns its UPID). "
                   + DRY_RUN_NOTE),
    Endpoint("POST", PREFIX + "/{store}/move-namespace", start_move_namespace, {
        "store": STORE, "ns": NS_REQUIRED, "target-ns": NS_REQUIRED,
        "max-depth": MAX_DEPTH, "delete-source": bool_param(True),
        "merge-groups": bool_param(True), "dry-run": bool_param(False),
    }, description="Move a namespace (a task; returns its UPID). " + DRY_RUN_NOTE),
]

__all__ = ["ENDPOINTS"]
