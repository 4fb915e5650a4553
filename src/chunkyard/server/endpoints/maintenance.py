"""Prune, verify and garbage collection (spec §8-10, §11.3) below `/admin/datastore/{store}`.

| endpoint | task (worker type, id) | privileges |
|---|---|---|
| POST `prune` | `prune`, `<store>:<ns>:<type>/<id>` (inline w/o `use-task`) | Modify; Prune+owner |
| POST `prune-datastore` | `prune`, `<store>:<ns>` | Modify (all groups); Prune (owned ones) |
| POST `verify` | `verify` / `verify_group` / `verify_snapshot` (PBS's ids) | Verify; Backup+owner |
| GET `gc` | – | Audit |
| POST `gc` | `garbage_collection`, `<store>` | Modify |

Privileges are checked when the call is made, before anything is looked up; the work runs
as a task whose log says what it did. Prune and verify walk namespaces as PBS's
`ListAccessibleBackupGroups`: a namespace the caller has no access to is left out, and
without the overriding privilege only owned groups are touched.

A prune that removes nothing it was asked to remove because the snapshot is busy logs a
warning (as PBS's failed destroy); the API rows keep PBS's shape (no `skipped` key).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from chunkyard.config.datastore import tuning
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.maintenance.gc import load_status
from chunkyard.datastore.maintenance.prune import PruneReport, prune_group
from chunkyard.datastore.maintenance.prune_rules import RULES, KeepOptions
from chunkyard.datastore.maintenance.verify import (
    MAX_THREADS,
    SnapshotResult,
    VerifyOptions,
    VerifyWorker,
    plan_snapshots,
    verify_worker_id,
)
from chunkyard.errors import ChunkyardError, DatastoreError, NotFound
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH
from chunkyard.server.app import Call, Endpoint
from chunkyard.server.auth.acl import acl_path_for
from chunkyard.server.auth.checks import (
    REQUIREMENTS,
    GroupAccess,
    check_group_access,
    check_privs,
    is_backup_owner,
    namespace_group_access,
)
from chunkyard.server.auth.privileges import Privilege
from chunkyard.server.endpoints.common import (
    BACKUP_ID,
    BACKUP_TYPE,
    MAX_DEPTH,
    NS,
    STORE,
    bool_param,
    group_of,
    ns_of,
)
from chunkyard.server.jobs import GC_JOB, log_prune, ns_text, run_prune_datastore, start_gc_job
from chunkyard.server.params import Param
from chunkyard.server.scheduler import next_run
from chunkyard.server.tasks import TaskContext

P = Privilege
PREFIX = "/admin/datastore/{store}"
VERIFY_FAILED = "verification failed - please check the log for details"

KEEP_PARAMS = {f"keep-{rule}": Param("integer", minimum=1) for rule in RULES}


def keep_options(params: dict[str, Any]) -> KeepOptions:
    return KeepOptions(**{rule: params[f"keep-{rule}"] for rule in RULES})


# -- prune ----------------------------------------------------------------------------------

def _prune_rows(report: PruneReport) -> list[dict[str, Any]]:
    rows = report.as_json()
    for row in rows:
        row.pop("skipped", None)
    return rows


def prune(call: Call) -> Any:
    """PBS `prune`: the rows oldest first (inline, as a logged task), or with `use-task`
    the UPID of the task."""
    params = call.params
    store, ns, group = params["store"], ns_of(params), group_of(params)
    state = call.state
    check_group_access(call.acl, call.caller, store, ns, REQUIREMENTS["prune-group"],
                       lambda: state.datastore(store).get_owner(ns, group))
    options = keep_options(params)
    dry_run = params["dry-run"]
    ds = state.datastore(store, write=not dry_run)
    if dry_run and not params["use-task"]:
        return _prune_rows(prune_group(ds, ns, group, options, dry_run=True))
    outcome: dict[str, Any] = {}

    def run(ctx: TaskContext) -> None:
        ctx.log(f"{'Dry-run prune' if dry_run else 'Pruning'} group '{group}' in "
                f"{ns_text(ns)} of datastore '{store}'")
        ctx.log(f"retention options: {options.describe() or 'keep all'}")
        try:
            report = prune_group(ds, ns, group, options, dry_run=dry_run)
        except BaseException as e:
            outcome["error"] = e
            raise
        log_prune(ctx, report)
        outcome["rows"] = _prune_rows(report)

    upid = state.tasks.spawn("prune", f"{store}:{ns}:{group}", str(call.caller), run)
    if params["use-task"]:
        return upid
    state.tasks.wait(upid)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("rows", [])


def _accessible_groups(call: Call, ds: Datastore, store: str, ns: BackupNamespace,
                       max_depth: int, *, override_owner: Privilege, owner_and: Privilege,
                       warn: Callable[[str], None]
                       ) -> list[tuple[BackupNamespace, BackupGroup]]:
    """PBS `ListAccessibleBackupGroups`: the groups of `ns` and its descendants the caller
    may act on, namespaces depth-first, groups sorted."""
    out: list[tuple[BackupNamespace, BackupGroup]] = []
    for child in ds.iter_namespaces(ns, max_depth):
        access = namespace_group_access(call.acl, call.caller, store, child,
                                        override_owner=override_owner, owner_and=owner_and)
        if access is GroupAccess.NONE:
            continue
        try:
            found = ds.list_groups(child)
        except NotFound as e:
            warn(f"skipped {ns_text(child)}: {e}")
            continue
        for group in found:
            if access is GroupAccess.OWNED:
                try:
                    owner = ds.get_owner(child, group)
                except ChunkyardError:  # unreadable owner: left out, as in PBS
                    continue
                if not is_backup_owner(owner, call.caller):
                    continue
            out.append((child, group))
    return out


def prune_datastore(call: Call) -> str:
    params = call.params
    store, ns = params["store"], ns_of(params)
    check_privs(call.acl, call.caller, acl_path_for(store, ns),
                P.DATASTORE_MODIFY | P.DATASTORE_PRUNE, partial=True)
    options = keep_options(params)
    dry_run = params["dry-run"]
    depth = MAX_NAMESPACE_DEPTH if params["max-depth"] is None else params["max-depth"]
    ds = call.state.datastore(store, write=not dry_run)
    ds.require_namespace(ns)

    def groups(warn: Callable[[str], None]) -> list[tuple[BackupNamespace, BackupGroup]]:
        return _accessible_groups(call, ds, store, ns, depth, override_owner=P.DATASTORE_MODIFY,
                                  owner_and=P.DATASTORE_PRUNE, warn=warn)

    def run(ctx: TaskContext) -> None:
        run_prune_datastore(ctx, ds, store, ns, depth, options, groups, dry_run=dry_run)

    return call.state.tasks.spawn("prune", f"{store}:{ns}", str(call.caller), run)


# -- verify ---------------------------------------------------------------------------------

class _TaskVerifyProgress:
    """The library's `VerifyProgress`, reported as task progress lines."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.total = 0

    def start(self, total_snapshots: int) -> None:
        self.total = total_snapshots
        self.ctx.log(f"{total_snapshots} snapshot(s) to verify")

    def snapshot_done(self, done: int, result: SnapshotResult) -> None:
        for line in result.log:
            self.ctx.log(line)
        self.ctx.progress(done, self.total, "snapshots")

    def read(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _verify_options(call: Call, store: str) -> VerifyOptions:
    params = call.params
    t = tuning(call.state.store_section(store))
    readers = params["read-threads"] or t.default_verification_readers or 1
    workers = params["verify-threads"] or t.default_verification_workers or 4
    return VerifyOptions(ignore_verified=params["ignore-verified"],
                         outdated_after=params["outdated-after"],
                         read_threads=readers, decode_threads=workers)


def verify(call: Call) -> str:
    """PBS `verify`: one snapshot, one group, or a namespace subtree; a UPID."""
    params = call.params
    store, ns = params["store"], ns_of(params)
    btype, bid, btime = params["backup-type"], params["backup-id"], params["backup-time"]
    target: BackupGroup | BackupDir | None = None
    state = call.state
    if btype is not None and bid is not None:
        group = BackupGroup(btype, bid)
        target = group if btime is None else BackupDir(group, btime)
        check_group_access(call.acl, call.caller, store, ns, REQUIREMENTS["verify"],
                           lambda: state.datastore(store).get_owner(ns, group))
    elif btype is not None or bid is not None or btime is not None:
        raise DatastoreError("no such combination of parameters: backup-type and backup-id "
                             "name a group (backup-time a snapshot of it)")
    else:
        check_privs(call.acl, call.caller, acl_path_for(store, ns),
                    P.DATASTORE_VERIFY | P.DATASTORE_BACKUP, partial=True)
    options = _verify_options(call, store)
    ds = state.datastore(store)
    plan = plan_snapshots(ds, ns, target, params["max-depth"])  # NotFound before the task
    if target is None:
        depth = MAX_NAMESPACE_DEPTH if params["max-depth"] is None else params["max-depth"]
        allowed = set(_accessible_groups(call, ds, store, ns, depth,
                                         override_owner=P.DATASTORE_VERIFY,
                                         owner_and=P.DATASTORE_BACKUP, warn=lambda _: None))
        plan = [(n, s) for n, s in plan if (n, s.group) in allowed]
    wtype, wid = verify_worker_id(store, ns, target)

    def run(ctx: TaskContext) -> None:
        what = {"verify": f"datastore '{store}', {ns_text(ns)}",
                "verify_group": f"group {target} in {ns_text(ns)}",
                "verify_snapshot": f"snapshot {target} in {ns_text(ns)}"}[wtype]
        ctx.log(f"verify {what}")
        progress = _TaskVerifyProgress(ctx)
        failed: list[SnapshotResult] = []
        with VerifyWorker(ds, ctx.parsed_upid, options, progress) as worker:
            progress.start(len(plan))
            for done, (snap_ns, snap) in enumerate(plan, 1):
                ctx.check_abort()
                result = worker.verify_snapshot(snap_ns, snap)
                if not result.success:
                    failed.append(result)
                progress.snapshot_done(done, result)
            progress.finish()
        if failed:
            ctx.log("Failed to verify the following snapshots/groups:")
            for result in failed:
                ctx.log(f"\t{result.label()}")
            raise DatastoreError(VERIFY_FAILED)

    return state.tasks.spawn(wtype, wid, str(call.caller), run)


# -- garbage collection ---------------------------------------------------------------------

def gc_status(call: Call) -> dict[str, Any]:
    """PBS's `GarbageCollectionJobStatus`: the store, the last run's status fields, the
    schedule and its next run, and the last task's end, state and duration when its UPID
    resolves."""
    store = call.params["store"]
    check_privs(call.acl, call.caller, acl_path_for(store), P.DATASTORE_AUDIT)
    section = call.state.store_section(store)
    ds = call.state.datastore(store)
    status = load_status(ds).to_json()
    result: dict[str, Any] = {"store": store}
    result.update({k: v for k, v in status.items() if v is not None})
    schedule = section.props.get("gc-schedule")
    if isinstance(schedule, str) and schedule:
        result["schedule"] = schedule
        with contextlib.suppress(ValueError):  # an invalid schedule never runs
            next_run_at = next_run(call.state, GC_JOB, store, schedule)
            if next_run_at is not None:
                result["next-run"] = next_run_at
    upid = status.get("upid")
    if isinstance(upid, str):
        try:
            task = call.state.tasks.status(upid)
        except ChunkyardError:
            task = None
        if task is not None and task.get("status") == "stopped":
            end = task.get("endtime")
            if isinstance(end, int):
                result["last-run-endtime"] = end
                result["duration"] = max(0, end - int(task["starttime"]))
            state = task.get("exitstatus")
            if isinstance(state, str):
                result["last-run-state"] = state
    return result


def start_gc(call: Call) -> str:
    store = call.params["store"]
    check_privs(call.acl, call.caller, acl_path_for(store), P.DATASTORE_MODIFY)
    return start_gc_job(call.state, store, str(call.caller))


VERIFY_PARAMS = {
    "store": STORE, "ns": NS,
    "backup-type": Param(check=BACKUP_TYPE.check), "backup-id": Param(
        check=BACKUP_ID.check, max_length=BACKUP_ID.max_length),
    "backup-time": Param("integer", minimum=1),
    "ignore-verified": bool_param(True),
    "outdated-after": Param("integer", minimum=0),
    "max-depth": MAX_DEPTH,
    "read-threads": Param("integer", minimum=1, maximum=MAX_THREADS),
    "verify-threads": Param("integer", minimum=1, maximum=MAX_THREADS),
}

ENDPOINTS = [
    Endpoint("POST", PREFIX + "/prune", prune, {
        "store": STORE, "ns": NS, "backup-type": BACKUP_TYPE, "backup-id": BACKUP_ID,
        **KEEP_PARAMS, "dry-run": bool_param(False), "use-task": bool_param(False),
    }, description="Prune a group (rows oldest first; with use-task a UPID)."),
    Endpoint("POST", PREFIX + "/prune-datastore", prune_datastore, {
        "store": STORE, "ns": NS, "max-depth": MAX_DEPTH, **KEEP_PARAMS,
        "dry-run": bool_param(False),
    }, description="Prune a namespace subtree (a task; returns its UPID)."),
    Endpoint("POST", PREFIX + "/verify", verify, VERIFY_PARAMS,
             description="Verify a snapshot, group or namespace subtree (a task)."),
    Endpoint("GET", PREFIX + "/gc", gc_status, {"store": STORE},
             description="Garbage collection status."),
    Endpoint("POST", PREFIX + "/gc", start_gc, {"store": STORE},
             description="Start garbage collection (a task; returns its UPID)."),
]

__all__ = ["ENDPOINTS"]
