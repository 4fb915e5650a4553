"""PBS task ids (UPIDs, spec §11.5): format and parse, both validated.

    UPID:<node>:<pid>:<pstart>:<task_id>:<starttime>:<worker_type>:<worker_id>:<authid>:

The four numbers are upper-case hex of at least 8 digits (`%08X`); `pstart` (the process start
in clock ticks) may take 9 and `task_id` up to 16, `starttime` exactly 8. `worker_id` is escaped
like a systemd unit name in non-path mode (`/` becomes `-`, every byte outside `[A-Za-z0-9_.]`
and a leading `.` become `\\xNN`), so it never holds `:`; an empty worker id means "none".
Parsing follows `proxmox-schema`'s `UPID::from_str`: its regex, then unescaping the worker id
(which must decode to UTF-8).

Pure values: creating a UPID for the running process (pid, /proc start time, host name) is
the caller's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chunkyard.errors import InvalidName
from chunkyard.names.systemd import escape_unit, unescape_unit

UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):"
    r"([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8,16}):([0-9A-Fa-f]{8}):"
    r"([^:\s]+):([^:\s]*):([^:\s]+):\Z"
)
NODE_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?\Z")
_BAD_IN_TYPE_OR_AUTHID = re.compile(r"[:\s]")
_MAX_PID = 0xFFFFFFFF
_MAX_PSTART = 0xFFFFFFFFF  # 9 hex digits
_MAX_TASK_ID = 0xFFFFFFFFFFFFFFFF  # 16 hex digits
_MAX_STARTTIME = 0xFFFFFFFF  # 8 hex digits: the regex allows no more


def _check_int(name: str, value: object, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidName(f"UPID {name} {value!r} must be an integer in 0..{maximum:#x}")
    return value


@dataclass(frozen=True, slots=True)
class Upid:
    """One task id; `worker_id` None means empty. `str()` gives the PBS string."""

    node: str
    pid: int
    pstart: int
    task_id: int
    starttime: int
    worker_type: str
    worker_id: str | None
    authid: str

    def __post_init__(self) -> None:
        if not isinstance(self.node, str) or not NODE_RE.match(self.node):
            raise InvalidName(f"UPID node name {self.node!r} is invalid")
        _check_int("pid", self.pid, _MAX_PID)
        _check_int("pstart", self.pstart, _MAX_PSTART)
        _check_int("task id", self.task_id, _MAX_TASK_ID)
        _check_int("start time", self.starttime, _MAX_STARTTIME)
        for name, value in (("worker type", self.worker_type), ("auth id", self.authid)):
            if not isinstance(value, str) or not value or _BAD_IN_TYPE_OR_AUTHID.search(value):
                raise InvalidName(f"UPID {name} {value!r} is empty or contains ':' or "
                                  "whitespace")
        if self.worker_id is not None and (
                not isinstance(self.worker_id, str) or not self.worker_id):
            raise InvalidName(f"UPID worker id {self.worker_id!r} must be None or non-empty")

    def __str__(self) -> str:
        wid = escape_unit(self.worker_id) if self.worker_id is not None else ""
        return (f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.task_id:08X}:"
                f"{self.starttime:08X}:{self.worker_type}:{wid}:{self.authid}:")

    @classmethod
    def parse(cls, text: str) -> Upid:
        """Parse a UPID string; InvalidName if it does not match PBS's format."""
        m = UPID_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise InvalidName(f"unable to parse UPID {text!r}")
        node, pid, pstart, task_id, starttime, wtype, wid, authid = m.groups()
        return cls(
            node=node, pid=int(pid, 16), pstart=int(pstart, 16), task_id=int(task_id, 16),
            starttime=int(starttime, 16), worker_type=wtype,
            worker_id=unescape_unit(wid) if wid else None, authid=authid,
        )


__all__ = ["UPID_RE", "Upid"]
