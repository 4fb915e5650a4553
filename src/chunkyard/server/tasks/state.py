"""A finished task's state and the text forms PBS stores it in.

- task log, last line: `<time>: TASK OK`, `TASK WARNINGS: <n>`, `TASK ERROR: <message>`;
- `tasks/active`: one UPID a line (a line with a state is a finished task not yet moved);
- `tasks/archive`: `<UPID> <endtime %08X> <status>`, `<status>` being `OK`, `WARNINGS: <n>`,
  `unknown` or the bare error message (proxmox-rest-server's `render_task_line`).

`unknown` is what PBS reports for a task whose log has no final line: its process died
(`upid_read_status`). Log times are RFC 3339 in local time with a numeric offset, as PBS's
`FileLogger`; parsing also takes `Z`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from chunkyard.errors import FormatError
from chunkyard.names.upid import Upid

Kind = Literal["ok", "warning", "error", "unknown"]
KINDS: tuple[Kind, ...] = ("ok", "warning", "error", "unknown")
MAX_MESSAGE = 2000  # the final line must fit the 8 KiB tail PBS reads the status from


@dataclass(frozen=True, slots=True)
class TaskState:
    """How a task ended; `kind` is PBS's `TaskStateType` (the API's `statusfilter` values)."""

    kind: Kind
    endtime: int
    count: int = 0         # warnings, for kind "warning"
    message: str = ""      # for kind "error"

    def __str__(self) -> str:
        """The status text of the API and the archive."""
        if self.kind == "ok":
            return "OK"
        if self.kind == "warning":
            return f"WARNINGS: {self.count}"
        if self.kind == "error":
            return self.message
        return "unknown"

    def result_text(self) -> str:
        """The final log line's text (after the time)."""
        if self.kind == "error":
            return f"TASK ERROR: {self.message}"
        return f"TASK {self}"

    @classmethod
    def from_text(cls, endtime: int, text: str) -> TaskState:
        """PBS's `TaskState::from_endtime_and_message`: status text to state."""
        if text == "unknown":
            return cls("unknown", endtime)
        if text == "OK":
            return cls("ok", endtime)
        if text.startswith("WARNINGS: "):
            try:
                count = int(text[len("WARNINGS: "):])
            except ValueError:
                raise FormatError(f"bad warning count in task status {text!r}") from None
            return cls("warning", endtime, count=count)
        if not text:
            raise FormatError("empty task status")
        return cls("error", endtime, message=text.removeprefix("ERROR: "))


def one_line(message: str) -> str:
    """An error message as a status: one line, never empty, never mistaken for another state
    when the archive is read back."""
    text = " ".join(message.split())[:MAX_MESSAGE] or "unknown error"
    if text in ("OK", "unknown") or text.startswith(("WARNINGS: ", "ERROR: ")):
        text = f"error: {text}"
    return text


# -- log time stamps ---------------------------------------------------------------------------

def log_time(epoch: float) -> str:
    """`2025-09-22T14:31:04+02:00`: PBS's `epoch_to_rfc3339` (local time, numeric offset)."""
    return datetime.fromtimestamp(int(epoch)).astimezone().isoformat(timespec="seconds")


def parse_log_time(text: str) -> int | None:
    """The epoch of a log line's time stamp, None if it is not one."""
    if len(text) < 20 or text[4:5] != "-" or text[10:11] != "T":
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return int(dt.timestamp()) if dt.tzinfo is not None else None


def status_from_last_line(line: str, starttime: int) -> TaskState:
    """PBS's `upid_read_status` on a log's last line: a time and `TASK ...` give that state;
    anything else is `unknown`, ending at the line's time (or the start time)."""
    head, sep, rest = line.partition(": ")
    endtime = parse_log_time(head) if sep else None
    if endtime is None:
        return TaskState("unknown", starttime)
    if rest.startswith("TASK "):
        try:
            return TaskState.from_text(endtime, rest[len("TASK "):])
        except FormatError:
            pass
    return TaskState("unknown", endtime)


# -- list file lines ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TaskListEntry:
    """One line of `active` or `archive`; `state` None means running."""

    upid: Upid
    upid_str: str
    state: TaskState | None

    def render(self) -> str:
        if self.state is None:
            return f"{self.upid_str}\n"
        return f"{self.upid_str} {self.state.endtime:08X} {self.state}\n"


def parse_list_line(line: str) -> TaskListEntry:
    """PBS's `parse_worker_status_line`: `UPID` or `UPID ENDTIME status`; FormatError or
    InvalidName if malformed (readers skip such lines, as PBS)."""
    parts = line.split(" ", 2)
    if len(parts) == 1:
        return TaskListEntry(Upid.parse(parts[0]), parts[0], None)
    if len(parts) != 3:
        raise FormatError(f"task list line {line!r} has the wrong number of fields")
    try:
        endtime = int(parts[1], 16)
    except ValueError:
        raise FormatError(f"task list line {line!r} has a bad end time") from None
    return TaskListEntry(Upid.parse(parts[0]), parts[0], TaskState.from_text(endtime, parts[2]))


__all__ = [
    "KINDS",
    "Kind",
    "TaskListEntry",
    "TaskState",
    "log_time",
    "one_line",
    "parse_list_line",
    "parse_log_time",
    "status_from_last_line",
]
