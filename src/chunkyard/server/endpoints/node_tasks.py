"""`/nodes/{node}/tasks`: list, status, log, stop (spec §11.5; PBS `api2/node/tasks.rs`).

Access as PBS's `check_task_access`: a caller sees its own tasks and those of its tokens;
others' need Sys.Audit on `/system/tasks` (Sys.Modify to stop them). The node name is
checked for syntax only, as in PBS (`localhost` works).
"""

from __future__ import annotations

from typing import Any

from chunkyard.errors import InvalidName
from chunkyard.names import Authid
from chunkyard.server.app import Call, Endpoint, Result
from chunkyard.server.auth import PermissionDenied, Privilege
from chunkyard.server.auth.checks import is_backup_owner
from chunkyard.server.endpoints.common import NODE, STORE, bool_param
from chunkyard.server.params import Param
from chunkyard.server.tasks import parse_upid

TASKS_PATH = "/system/tasks"
UPID = Param(optional=False, max_length=256, check=lambda text: str(parse_upid(text)))
STATUS_KINDS = frozenset({"ok", "warning", "error", "unknown"})


def _check_status_kind(text: str) -> str:
    if text not in STATUS_KINDS:
        raise InvalidName(f"value '{text}' is not one of ok, warning, error, unknown")
    return text


def _own(caller: Authid, owner: str) -> bool:
    try:
        return is_backup_owner(Authid.parse(owner), caller)
    except InvalidName:
        return False


def _check_access(call: Call, upid: str, privilege: Privilege) -> None:
    if _own(call.caller, parse_upid(upid).authid):
        return
    if not call.acl.privileges(call.caller, TASKS_PATH) & privilege:
        raise PermissionDenied(f"task access check failed for {call.caller}")


def list_tasks(call: Call) -> Result:
    p = call.params
    rows, _total = call.state.tasks.list(
        start=0, limit=0, running=p["running"], errors=p["errors"],
        userfilter=p["userfilter"], since=p["since"], until=p["until"],
        typefilter=p["typefilter"], statusfilter=p["statusfilter"], store=p["store"])
    if not call.acl.privileges(call.caller, TASKS_PATH) & Privilege.SYS_AUDIT:
        rows = [row for row in rows if _own(call.caller, row["user"])]
    start, limit = p["start"], p["limit"]
    page = rows[start:] if limit == 0 else rows[start:start + limit]
    return Result(page, {"total": len(rows)})


def task_status(call: Call) -> dict[str, Any]:
    upid = call.params["upid"]
    _check_access(call, upid, Privilege.SYS_AUDIT)
    return call.state.tasks.status(upid)


def task_log(call: Call) -> Result:
    p = call.params
    upid = p["upid"]
    _check_access(call, upid, Privilege.SYS_AUDIT)
    lines, total, active = call.state.tasks.read_log(upid, start=p["start"], limit=p["limit"])
    extra: dict[str, Any] = {"total": total, "success": 1}
    if p["test-status"]:
        extra["active"] = active
    return Result(lines, extra)


def stop_task(call: Call) -> None:
    upid = call.params["upid"]
    _check_access(call, upid, Privilege.SYS_MODIFY)
    call.state.tasks.abort(upid)


ENDPOINTS = [
    Endpoint("GET", "/nodes/{node}/tasks", list_tasks, {
        "node": NODE, "start": Param("integer", default=0, minimum=0),
        "limit": Param("integer", default=50, minimum=0),
        "store": Param(pattern=STORE.pattern, max_length=32),
        "running": bool_param(False), "errors": bool_param(False),
        "userfilter": Param(max_length=128), "typefilter": Param(max_length=64),
        "since": Param("integer", minimum=0), "until": Param("integer", minimum=0),
        "statusfilter": Param("array", check=_check_status_kind),
    }, description="Tasks, running first, then finished ones newest first."),
    Endpoint("GET", "/nodes/{node}/tasks/{upid}/status", task_status,
             {"node": NODE, "upid": UPID}, description="A task's status."),
    Endpoint("GET", "/nodes/{node}/tasks/{upid}/log", task_log, {
        "node": NODE, "upid": UPID, "start": Param("integer", default=0, minimum=0),
        "limit": Param("integer", default=50, minimum=0),
        "download": bool_param(False), "test-status": bool_param(False),
    }, description="A task's log lines."),
    Endpoint("DELETE", "/nodes/{node}/tasks/{upid}", stop_task,
             {"node": NODE, "upid": UPID}, description="Ask a running task to stop."),
]
