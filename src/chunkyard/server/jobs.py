"""Scheduled jobs' state, and the jobs: garbage collection (PBS's `jobstate` and
`do_garbage_collection_job`) and the legacy datastore prune (`prune-schedule` with the
`keep-*` options of datastore.cfg, run as PBS's prune job of the whole store would run).

A job (type, id) keeps one state file, `<data-dir>/lib/jobstates/<type>-<id>.json` (PBS:
`/var/lib/proxmox-backup/jobstates/`), in the shape of PBS's externally tagged `JobState`:
`{"created": {"time": T}}`, `{"started": {"upid": U}}` or
`{"finished": {"upid": U, "state": {"ok"|"warning"|"error": {...}, "endtime": E}}}`.
Its *last run time* is the creation time or the start time of the UPID; a schedule's next run
is its first event after that. Every GC, started by the API or by the scheduler, is the
store's `garbage_collection` job, so a manual run also moves the next scheduled one, as in
PBS. The prune job is `prunejob`, id the store: PBS moves these legacy settings into a
prune job of `prune.cfg` when a store is created; chunkyard has no prune.cfg yet and runs them
where they are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chunkyard.config.datastore import tuning
from chunkyard.config.fileio import read_optional, replace_file
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.maintenance.gc import GcOptions, garbage_collection
from chunkyard.datastore.maintenance.prune import KEEP_ALL_WARNING, PruneReport, prune_group
from chunkyard.datastore.maintenance.prune_rules import RULES, KeepOptions
from chunkyard.errors import ChunkyardError, DatastoreError, NotFound
from chunkyard.names import BackupGroup, BackupNamespace
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH
from chunkyard.names.upid import Upid
from chunkyard.server.state import ServerState
from chunkyard.server.tasks import TaskContext
from chunkyard.server.tasks.context import error_message

log = logging.getLogger("chunkyard.server")

GC_JOB = "garbage_collection"
PRUNE_JOB = "prunejob"
STATE_MODE = 0o644
_LOCK = threading.Lock()  # one writer of job state files per process


@dataclass(frozen=True)
class JobState:
    """`created` (never ran: `time`), `started` (`upid`) or `finished` (`upid`, `result`)."""

    kind: str
    time: int | None = None
    upid: str | None = None
    result: dict[str, Any] | None = None

    def last_run_time(self) -> int:
        if self.upid is not None:
            return Upid.parse(self.upid).starttime
        return int(self.time or 0)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "created":
            return {"created": {"time": self.time}}
        if self.kind == "started":
            return {"started": {"upid": self.upid}}
        return {"finished": {"upid": self.upid, "state": self.result}}

    @classmethod
    def from_json(cls, raw: bytes) -> JobState:
        try:
            value = json.loads(raw)
            (kind, body), = value.items()
            if kind == "created" and isinstance(body.get("time"), int):
                return cls("created", time=body["time"])
            if kind in ("started", "finished") and isinstance(body.get("upid"), str):
                Upid.parse(body["upid"])
                result = body.get("state") if kind == "finished" else None
                return cls(kind, upid=body["upid"],
                           result=result if isinstance(result, dict) else None)
        except (ValueError, AttributeError, TypeError, ChunkyardError):
            pass
        raise DatastoreError("unreadable job state")


def state_path(state: ServerState, job_type: str, job_id: str) -> str:
    return os.path.join(state.data.root, "lib", "jobstates", f"{job_type}-{job_id}.json")


def load_job_state(state: ServerState, job_type: str, job_id: str) -> JobState:
    """The job's state; a missing or unreadable file starts the job now (`created`)."""
    path = state_path(state, job_type, job_id)
    with _LOCK:
        raw = read_optional(path)
        if raw is not None:
            try:
                return JobState.from_json(raw)
            except DatastoreError:
                log.warning("job state %s is unreadable: starting the job anew", path)
        created = JobState("created", time=int(time.time()))
        _write(path, created)
        return created


def save_job_state(state: ServerState, job_type: str, job_id: str, job: JobState) -> None:
    with _LOCK:
        _write(state_path(state, job_type, job_id), job)


def remove_job_state(state: ServerState, job_type: str, job_id: str) -> None:
    with _LOCK, contextlib.suppress(FileNotFoundError):
        os.unlink(state_path(state, job_type, job_id))


def _write(path: str, job: JobState) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    replace_file(path, json.dumps(job.to_json(), separators=(",", ":")).encode(), STATE_MODE)


def start_gc_job(state: ServerState, store: str, authid: str,
                 schedule: str | None = None) -> str:
    """Start garbage collection on `store` as a task; its UPID. The store's tuning options
    apply; the task stops at the next index or chunk directory when aborted."""
    t = tuning(state.store_section(store))
    options = GcOptions(atime_safety_check=t.gc_atime_safety_check,
                        atime_cutoff_minutes=t.gc_atime_cutoff,
                        cache_capacity=t.gc_cache_capacity)
    ds = state.datastore(store, write=True)

    def run(ctx: TaskContext) -> None:
        ctx.log(f"starting garbage collection on store {store}")
        if schedule is not None:
            ctx.log(f"task triggered by schedule '{schedule}'")
        ctx.check_abort()
        names = {"mark": "index files marked", "sweep": "chunk directories swept"}
        starts = {"mark": "Start GC phase1 (mark used chunks)",
                  "sweep": "Start GC phase2 (sweep unused chunks)"}

        def progress(phase: str, done: int, total: int) -> None:
            start = starts.pop(phase, None)
            if start is not None:
                ctx.log(start)
            ctx.progress(done, total, names.get(phase, phase))

        status = garbage_collection(ds, upid=ctx.upid, options=options, progress=progress,
                                    check_abort=ctx.check_abort)
        for line in status.summary():
            ctx.log(line)

    return state.tasks.spawn(GC_JOB, store, authid, _as_job(state, GC_JOB, store, run))


def _as_job(state: ServerState, job_type: str, store: str,
            work: Callable[[TaskContext], None]) -> Callable[[TaskContext], None]:
    """`work` as the store's job: its state is `started` with the task's UPID, then
    `finished` with the task's result (error, warnings or ok)."""
    def run(ctx: TaskContext) -> None:
        save_job_state(state, job_type, store, JobState("started", upid=ctx.upid))
        try:
            work(ctx)
        except BaseException as err:
            _finished(state, job_type, store, ctx.upid,
                      {"error": {"message": error_message(err)}})
            raise
        warnings = ctx.warnings
        _finished(state, job_type, store, ctx.upid,
                  {"warning": {"count": warnings}} if warnings else {"ok": {}})

    return run


def _finished(state: ServerState, job_type: str, store: str, upid: str,
              result: dict[str, Any]) -> None:
    (body,) = result.values()
    body["endtime"] = int(time.time())
    try:
        save_job_state(state, job_type, store, JobState("finished", upid=upid, result=result))
    except (OSError, ChunkyardError) as e:  # the task's own result matters more
        log.warning("cannot save the job state of %s: %s", upid, e)


# -- prune --------------------------------------------------------------------------------

def ns_text(ns: BackupNamespace) -> str:
    return "root namespace" if ns.is_root else f"namespace '{ns}'"


def log_prune(ctx: TaskContext, report: PruneReport) -> None:
    for warning in report.warnings:
        ctx.warn(warning)
    for row in report.rows:
        where = "" if row.ns.is_root else f"{row.ns}:"
        ctx.log(f"{where}{row.snapshot} {row.mark}")
        if row.skipped is not None:
            ctx.warn(f"could not remove {where}{row.snapshot}: {row.skipped}")


GroupLister = Callable[[Callable[[str], None]], list[tuple[BackupNamespace, BackupGroup]]]


def run_prune_datastore(ctx: TaskContext, ds: Datastore, store: str, ns: BackupNamespace,
                        depth: int, options: KeepOptions, groups: GroupLister, *,
                        dry_run: bool = False) -> None:
    """A prune-datastore task's work: every group `groups(warn)` lists, one by one (a busy
    or vanished group is a warning, not the end)."""
    ctx.log(f"{'Dry-run prune' if dry_run else 'Pruning'} datastore '{store}', "
            f"{ns_text(ns)}, max depth {depth}")
    ctx.log(f"retention options: {options.describe() or 'keep all'}")
    targets = groups(ctx.warn)
    if not options.keeps_something:
        ctx.warn(KEEP_ALL_WARNING)
    for done, (child, group) in enumerate(targets, 1):
        ctx.check_abort()
        where = "" if child.is_root else f"{child}:"
        ctx.log(f"Pruning group {where}{group}")
        try:
            report = prune_group(ds, child, group, options, dry_run=dry_run)
        except ChunkyardError as e:
            ctx.warn(f"skipped group {where}{group}: {e}")
        else:
            report.warnings = [w for w in report.warnings
                               if w != KEEP_ALL_WARNING]  # said once above
            log_prune(ctx, report)
        ctx.progress(done, len(targets), "groups")
    ctx.log(f"pruned {len(targets)} group(s)")


def legacy_keep_options(state: ServerState, store: str) -> KeepOptions:
    """The `keep-*` options of the store's datastore.cfg entry."""
    props = state.store_section(store).props
    values = {rule: props.get(f"keep-{rule}") for rule in RULES}
    return KeepOptions(**{k: v if isinstance(v, int) else None for k, v in values.items()})


def start_legacy_prune_job(state: ServerState, store: str, authid: str,
                           schedule: str | None = None) -> str:
    """Prune the whole store (every namespace, every group) with its legacy `keep-*`
    options, as a task; its UPID."""
    options = legacy_keep_options(state, store)
    ds = state.datastore(store, write=True)
    root = BackupNamespace()

    def all_groups(warn: Callable[[str], None]) -> list[tuple[BackupNamespace, BackupGroup]]:
        out: list[tuple[BackupNamespace, BackupGroup]] = []
        for child in ds.iter_namespaces(root, MAX_NAMESPACE_DEPTH):
            try:
                out.extend((child, group) for group in ds.list_groups(child))
            except NotFound as e:
                warn(f"skipped {ns_text(child)}: {e}")
        return out

    def run(ctx: TaskContext) -> None:
        if schedule is not None:
            ctx.log(f"task triggered by schedule '{schedule}'")
        run_prune_datastore(ctx, ds, store, root, MAX_NAMESPACE_DEPTH, options, all_groups)

    return state.tasks.spawn(PRUNE_JOB, store, authid,
                             _as_job(state, PRUNE_JOB, store, run))


__all__ = [
    "GC_JOB",
    "PRUNE_JOB",
    "JobState",
    "load_job_state",
    "log_prune",
    "ns_text",
    "remove_job_state",
    "run_prune_datastore",
    "save_job_state",
    "start_gc_job",
    "start_legacy_prune_job",
    "state_path",
]
