"""PBS's task directory layout, and the only way a UPID becomes a path.

    <base>/tasks/<pstart & 255 as %02X>/<UPID>     task logs
    <base>/tasks/active                            running tasks, one UPID a line
    <base>/tasks/archive                           finished tasks, `UPID ENDTIME status`
    <base>/tasks/.active.lock                      flock around list updates

A UPID from a request is parsed (`Upid.parse`) and only its canonical form names a file. The
UPID format lets the worker type and the auth id hold `/` (only `:` and white space are
excluded), so the canonical string is checked to be one harmless file name as well.
"""

from __future__ import annotations

import os
import re

from chunkyard.errors import InvalidName
from chunkyard.names.upid import Upid

TASKS_DIR = "tasks"
ACTIVE_FILE = "active"
ARCHIVE_FILE = "archive"
LOCK_FILE = ".active.lock"
NAME_MAX = 255
_UNSAFE = re.compile(r"[/\x00-\x1f\x7f]")


def parse_upid(text: object) -> Upid:
    """A received UPID, validated: PBS's format, and usable as a file name."""
    if not isinstance(text, str):
        raise InvalidName(f"UPID must be a string, not {type(text).__name__}")
    return checked(Upid.parse(text))


def checked(upid: Upid) -> Upid:
    """`upid` if its string is one safe file name (no `/`, no control bytes, short)."""
    name = str(upid)
    if _UNSAFE.search(name) or len(name.encode("utf-8")) > NAME_MAX:
        raise InvalidName(f"UPID {name!r} cannot name a task log (contains '/' or control "
                          "characters, or is too long)")
    return upid


class TaskPaths:
    """File names under one task directory."""

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self.base_dir = os.fspath(base_dir)
        self.task_dir = os.path.join(self.base_dir, TASKS_DIR)
        self.active = os.path.join(self.task_dir, ACTIVE_FILE)
        self.archive = os.path.join(self.task_dir, ARCHIVE_FILE)
        self.lock = os.path.join(self.task_dir, LOCK_FILE)

    def log_dir(self, upid: Upid) -> str:
        return os.path.join(self.task_dir, f"{upid.pstart & 255:02X}")

    def log_path(self, upid: Upid) -> str:
        """`tasks/<pstart & 255 %02X>/<UPID>`, built from the parsed form only."""
        name = str(checked(upid))
        path = os.path.join(self.log_dir(upid), name)
        if os.path.dirname(path) != self.log_dir(upid):  # pragma: no cover - checked() above
            raise InvalidName(f"UPID {name!r} escapes the task directory")
        return path


__all__ = ["ACTIVE_FILE", "ARCHIVE_FILE", "LOCK_FILE", "TASKS_DIR", "TaskPaths", "checked",
           "parse_upid"]
