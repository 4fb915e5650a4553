"""Scheduled jobs' state and the garbage-collection job (PBS's `jobstate` and
`do_garbage_collection_job`).

A job (type, id) keeps one state file, `<data-dir>/lib/jobstates/<type>-<id>.json` (PBS:
`/var/lib/proxmox-backup/jobstates/`), in the shape of PBS's externally tagged `JobState`:
`{"created": {"time": T}}`, `{"started": {"upid": U}}` or
`{"finished": {"upid": U, "state": {"ok"|"warning"|"error": {...}, "endtime": E}}}`.
Its *last run time* is the creation time or the start time of the UPID; a schedule's next run
is its first event after that. Every GC, started by the API or by the scheduler, is the
store's `garbage_collection` job, so a manual run also moves the next scheduled one, as in
PBS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from chunkyard.config.datastore import tuning
from chunkyard.config.fileio import read_optional, replace_file
from chunkyard.datastore.maintenance.gc import GcOptions, garbage_collection
from chunkyard.errors import ChunkyardError, DatastoreError
from chunkyard.names.upid import Upid
from chunkyard.server.state import ServerState
from chunkyard.server.tasks import TaskContext
from chunkyard.server.tasks.context import error_message

log = logging.getLogger("chunkyard.server")

GC_JOB = "garbage_collection"
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
        save_job_state(state, GC_JOB, store, JobState("started", upid=ctx.upid))
        try:
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
        except BaseException as err:
            _finished(state, store, ctx.upid, {"error": {"message": error_message(err)}})
            raise
        warnings = ctx.warnings
        _finished(state, store, ctx.upid,
                  {"warning": {"count": warnings}} if warnings else {"ok": {}})

    return state.tasks.spawn(GC_JOB, store, authid, run)


def _finished(state: ServerState, store: str, upid: str, result: dict[str, Any]) -> None:
    (body,) = result.values()
    body["endtime"] = int(time.time())
    try:
        save_job_state(state, GC_JOB, store, JobState("finished", upid=upid, result=result))
    except (OSError, ChunkyardError) as e:  # the task's own result matters more
        log.warning("cannot save the job state of %s: %s", upid, e)


__all__ = ["GC_JOB", "JobState", "load_job_state", "remove_job_state", "save_job_state",
           "start_gc_job", "state_path"]
