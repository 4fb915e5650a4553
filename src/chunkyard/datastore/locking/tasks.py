"""The task registry: which chunkyard operation a pid runs, for holder diagnostics (rule 6).

A session created with an operation or task id registers it in `<lock_dir>/tasks/<pid>.json`
(pid, the process start time from `/proc/<pid>/stat`, and every live registered session of the
process for that lock directory). The file is written when a session opens and rewritten or
removed when it closes: one write per session, never one per lock. Readers ignore a file whose
pid is gone or whose start time differs (a reused pid), so a crash leaves nothing harmful.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass

from chunkyard.names.upid import NODE_RE, Upid

TASKS_DIR = "tasks"
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One registered session of a process."""

    operation: str | None
    task_id: str | None


def process_start_time(pid: int) -> int | None:
    """Field 22 of `/proc/<pid>/stat` (clock ticks since boot), None if the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _task_file(lock_dir: str, pid: int) -> str:
    return os.path.join(lock_dir, TASKS_DIR, f"{pid}.json")


class _ProcessRegistry:
    """This process's registered sessions, grouped by lock directory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[str, TaskInfo]] = {}
        self._next = 0
        self._start_time: tuple[int, int | None] | None = None

    def reset_after_fork(self) -> None:
        # The child is another pid: it must neither rewrite nor remove the parent's file.
        self._lock = threading.Lock()
        self._entries = {}
        self._start_time = None

    def _own_start_time(self) -> int | None:
        pid = os.getpid()
        if self._start_time is None or self._start_time[0] != pid:
            self._start_time = (pid, process_start_time(pid))
        return self._start_time[1]

    def register(self, lock_dir: str, info: TaskInfo) -> int:
        with self._lock:
            self._next += 1
            token = self._next
            self._entries[token] = (lock_dir, info)
            self._write(lock_dir)
            return token

    def unregister(self, token: int) -> None:
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is not None:
                self._write(entry[0])

    def _write(self, lock_dir: str) -> None:
        pid = os.getpid()
        path = _task_file(lock_dir, pid)
        infos = [info for d, info in self._entries.values() if d == lock_dir]
        try:
            if not infos:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return
            doc = {
                "pid": pid,
                "start_time": self._own_start_time(),
                "sessions": [{"operation": i.operation, "task_id": i.task_id} for i in infos],
            }
            data = json.dumps(doc).encode()
            tmp = f"{path}.tmp"
            try:
                fd = os.open(tmp, _TMP_FLAGS, 0o664)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), mode=0o770, exist_ok=True)
                fd = os.open(tmp, _TMP_FLAGS, 0o664)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            # Diagnostics only: a registry that cannot be written must not fail the operation.
            pass


REGISTRY = _ProcessRegistry()
os.register_at_fork(after_in_child=REGISTRY.reset_after_fork)


def read_tasks(lock_dir: str, pid: int) -> list[TaskInfo]:
    """The registered sessions of `pid`, or [] if none, stale or unreadable."""
    try:
        with open(_task_file(lock_dir, pid)) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("pid") != pid:
        return []
    start = doc.get("start_time")
    if start is None or start != process_start_time(pid):
        return []
    out: list[TaskInfo] = []
    sessions = doc.get("sessions")
    for s in sessions if isinstance(sessions, list) else []:
        if isinstance(s, dict):
            op, tid = s.get("operation"), s.get("task_id")
            out.append(TaskInfo(op if isinstance(op, str) else None,
                                tid if isinstance(tid, str) else None))
    return out


# -- task ids (UPIDs) of the tasks this process runs ------------------------------------------

_TASK_COUNTER = itertools.count()
_TASK_COUNTER_LOCK = threading.Lock()


def node_name() -> str:
    """The short host name, as PBS's `nodename()`, made to fit the UPID node rule."""
    name = socket.gethostname().split(".", 1)[0]
    if not NODE_RE.match(name):
        name = re.sub(r"[^a-zA-Z0-9\-]", "-", name).strip("-") or "localhost"
    return name


def new_task_upid(worker_type: str, worker_id: str | None, authid: str) -> Upid:
    """A UPID for a task this process starts now (node, pid, process start, a counter)."""
    with _TASK_COUNTER_LOCK:
        task_id = next(_TASK_COUNTER)
    return Upid(node=node_name(), pid=os.getpid(),
                pstart=process_start_time(os.getpid()) or 0, task_id=task_id,
                starttime=int(time.time()), worker_type=worker_type,
                worker_id=worker_id or None, authid=authid)
