"""Task listing filters and the API's row shapes (spec §11.5; PBS `api2/node/tasks.rs`).

Filter semantics are PBS's `list_tasks`: `until`/`since` compare the start time; `userfilter`
and `typefilter` are substring matches on the auth id and the worker type; `running=True`
lists running tasks only (False, like None, lists all); `errors` drops tasks that ended OK;
`statusfilter` keeps finished tasks of those kinds and drops running ones; `store` keeps the
tasks whose worker id names that datastore (`check_job_store`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chunkyard.errors import InvalidName
from chunkyard.names.authid import Authid
from chunkyard.names.patterns import SAFE_ID
from chunkyard.names.upid import Upid
from chunkyard.server.tasks.state import KINDS, Kind, TaskListEntry, TaskState

# PBS's VERIFICATION_JOB_WORKER_ID_REGEX and SYNC_JOB_WORKER_ID_REGEX (store is group 1 / 3)
_VERIFY_JOB_RE = re.compile(rf"^({SAFE_ID}):")
_NS = rf"{SAFE_ID}(?:/{SAFE_ID})*"
_SYNC_JOB_RE = re.compile(rf"^({SAFE_ID}|\-):({SAFE_ID}):({SAFE_ID})(?::({_NS}))?:")
# Worker types whose id is `<store>` or `<store>:...` (PBS's list, plus chunkyard's own
# datastore tasks: add a type here when a new one gets a `<store>:...` worker id).
STORE_PREFIXED_TYPES = frozenset({"prune", "prunejob", "backup", "garbage_collection",
                                  "move-group", "move-namespace"})


def check_job_store(upid: Upid, store: str) -> bool:
    """True if the task works on datastore `store` (PBS's `check_job_store`)."""
    wtype, wid = upid.worker_type, upid.worker_id
    if wid is None:
        return False
    if wtype.startswith("verif"):
        m = _VERIFY_JOB_RE.match(wid)
        return m.group(1) == store if m else wid == store
    if wtype == "syncjob":
        m = _SYNC_JOB_RE.match(wid)
        return m is not None and m.group(3) == store
    if wtype in STORE_PREFIXED_TYPES:
        return wid == store or wid.startswith(f"{store}:")
    return False


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """The list endpoint's filters."""

    running: bool | None = None
    errors: bool = False
    userfilter: str | None = None
    since: int | None = None
    until: int | None = None
    typefilter: str | None = None
    statusfilter: frozenset[Kind] | None = None
    store: str | None = None

    @staticmethod
    def kinds(values: Iterable[str] | str | None) -> frozenset[Kind] | None:
        """`statusfilter` values (`ok|warning|error|unknown`), validated."""
        if values is None:
            return None
        items = [values] if isinstance(values, str) else list(values)
        out: set[Kind] = set()
        for v in items:
            kind = next((k for k in KINDS if k == v), None)
            if kind is None:
                raise InvalidName(f"task status filter {v!r} is not one of {', '.join(KINDS)}")
            out.add(kind)
        return frozenset(out)

    def matches(self, entry: TaskListEntry) -> bool:
        upid, state = entry.upid, entry.state
        if self.until is not None and upid.starttime > self.until:
            return False
        if self.since is not None and upid.starttime < self.since:
            return False
        if self.userfilter is not None and self.userfilter not in upid.authid:
            return False
        if self.store is not None and not check_job_store(upid, self.store):
            return False
        if self.typefilter is not None and self.typefilter not in upid.worker_type:
            return False
        if state is None:
            return self.statusfilter is None
        if self.running:
            return False
        if self.errors and state.kind == "ok":
            return False
        return self.statusfilter is None or state.kind in self.statusfilter


def list_row(entry: TaskListEntry) -> dict[str, Any]:
    """One row of `GET /nodes/{node}/tasks` (PBS's `TaskListItem`)."""
    u = entry.upid
    row: dict[str, Any] = {
        "upid": entry.upid_str, "node": u.node, "pid": u.pid, "pstart": u.pstart,
        "starttime": u.starttime, "worker_type": u.worker_type,
    }
    if u.worker_id is not None:
        row["worker_id"] = u.worker_id
    row["user"] = u.authid
    if entry.state is not None:
        row["endtime"] = entry.state.endtime
        row["status"] = str(entry.state)
    return row


def status_dict(upid: Upid, state: TaskState | None) -> dict[str, Any]:
    """`GET /nodes/{node}/tasks/{upid}/status`; `state` None means running."""
    out: dict[str, Any] = {
        "upid": str(upid), "node": upid.node, "pid": upid.pid, "pstart": upid.pstart,
        "starttime": upid.starttime, "type": upid.worker_type,
    }
    if upid.worker_id is not None:
        out["id"] = upid.worker_id
    try:
        auth = Authid.parse(upid.authid)
        out["user"] = auth.userid
        if auth.token:
            out["tokenid"] = auth.token
    except InvalidName:
        out["user"] = upid.authid
    if state is None:
        out["status"] = "running"
    else:
        out["status"] = "stopped"
        out["exitstatus"] = str(state)
        out["endtime"] = state.endtime
    return out


__all__ = ["STORE_PREFIXED_TYPES", "TaskFilter", "check_job_store", "list_row", "status_dict"]
