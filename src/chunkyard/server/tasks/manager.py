"""`TaskManager`: spawn tasks on threads, answer the task endpoints, end them on shutdown.

A task's life (proxmox-rest-server's `WorkerTask::new_thread` and `log_result`):
1. a UPID (`new_task_upid`), its log created exclusively, the task registered here and added
   to `tasks/active`;
2. the function runs on a daemon thread with a `TaskContext`;
3. its end writes `TASK OK` / `TASK WARNINGS: n` / `TASK ERROR: msg` to the log (fsynced),
   unregisters it, and runs the list update, which moves every task that no longer runs to
   the archive with the state read back from its log.

Whether a task runs: one of this process's if it is registered here (a process-wide registry,
like PBS's `WORKER_TASK_LIST`, so any manager of this process can abort it); another
process's if that process lives (pid and start time). Opening a manager runs the update, so
a task whose process died is archived as `unknown` (PBS's wording for a log without a final
line) and is never shown as running.

Shutdown asks every task to abort, waits, and ends the ones still running with
`TASK ERROR: task aborted by shutdown (...)`; their threads are daemons and die with the
process, which releases their flocks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from chunkyard.datastore.locking.tasks import new_task_upid
from chunkyard.errors import ChunkyardError
from chunkyard.names.authid import Authid
from chunkyard.names.upid import Upid
from chunkyard.server.tasks.context import PROGRESS_INTERVAL, TaskContext
from chunkyard.server.tasks.errors import (
    SHUTDOWN_MESSAGE,
    TaskError,
    TaskNotFound,
    TaskNotRunning,
)
from chunkyard.server.tasks.lists import LOCK_TIMEOUT, TaskLists
from chunkyard.server.tasks.logfile import TaskLogWriter, last_line
from chunkyard.server.tasks.paths import TaskPaths, checked, parse_upid
from chunkyard.server.tasks.proc import own_identity, process_alive
from chunkyard.server.tasks.queries import TaskFilter, list_row, status_dict
from chunkyard.server.tasks.state import TaskState, one_line, status_from_last_line

log = logging.getLogger("chunkyard.tasks")

TaskFn = Callable[[TaskContext], object]
Rows = list[dict[str, Any]]  # (`TaskManager.list` hides the builtin in the class body)
DIR_MODE = 0o755
_POLL = 0.05


class _Registry:
    """This process's running tasks, by UPID string."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskContext] = {}

    def add(self, ctx: TaskContext) -> None:
        with self._lock:
            self._tasks[ctx.upid] = ctx

    def remove(self, upid: str) -> None:
        with self._lock:
            self._tasks.pop(upid, None)

    def get(self, upid: str) -> TaskContext | None:
        with self._lock:
            return self._tasks.get(upid)

    def reset_after_fork(self) -> None:
        # A forked child is another process: the parent's tasks are not its own.
        self._lock = threading.Lock()
        self._tasks = {}


_LOCAL = _Registry()
os.register_at_fork(after_in_child=_LOCAL.reset_after_fork)


class TaskManager:
    """Tasks under `base_dir` (PBS: `/var/log/proxmox-backup`), in PBS's layout."""

    def __init__(self, base_dir: str | os.PathLike[str], *, durable: bool = True,
                 progress_interval: float = PROGRESS_INTERVAL,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.paths = TaskPaths(base_dir)
        os.makedirs(self.paths.task_dir, mode=DIR_MODE, exist_ok=True)
        self.lists = TaskLists(self.paths, durable=durable, lock_timeout=lock_timeout)
        self.progress_interval = progress_interval
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[TaskContext, threading.Thread]] = {}
        self._closing = False
        self._update()  # tasks of a dead server: archived, never shown as running

    # -- running tasks ---------------------------------------------------------------------

    def spawn(self, worker_type: str, worker_id: str | None, authid: str, fn: TaskFn) -> str:
        """Start `fn(ctx)` on a new thread; its UPID, at once."""
        Authid.parse(authid)
        if self._closing:
            raise TaskError("the server is shutting down: no new tasks")
        upid = checked(new_task_upid(worker_type, worker_id, authid))
        writer = TaskLogWriter(self.paths.log_path(upid))
        ctx = TaskContext(upid, writer, progress_interval=self.progress_interval)
        thread = threading.Thread(target=self._run, args=(ctx, fn), daemon=True,
                                  name=f"task {worker_type} {upid.task_id}")
        # Under the lock up to the thread's start, so `shutdown` sees every task it must stop.
        with self._lock:
            try:
                if self._closing:
                    raise TaskError("the server is shutting down: no new tasks")
                _LOCAL.add(ctx)
                self._update(add=upid)
            except BaseException:
                # never started, never listed: no log either
                _LOCAL.remove(ctx.upid)
                writer.finish("TASK ERROR: not started")
                with contextlib.suppress(OSError):
                    os.unlink(writer.path)
                raise
            self._tasks[ctx.upid] = (ctx, thread)
            thread.start()
        return ctx.upid

    def running_upids(self) -> list[Upid]:
        """The tasks this manager started that are still running."""
        with self._lock:
            return [ctx.parsed_upid for ctx, thread in self._tasks.values()
                    if thread.is_alive()]

    def _run(self, ctx: TaskContext, fn: TaskFn) -> None:
        error: BaseException | None = None
        try:
            fn(ctx)
        except BaseException as e:  # the task ends with an error line, whatever it raised
            error = e
            if not isinstance(e, ChunkyardError | OSError):
                log.error("task %s failed", ctx.upid, exc_info=e)
                for chunk in traceback.format_exception(e):
                    ctx.log(chunk.rstrip("\n"))
        self._end(ctx, ctx.result(error))

    def _end(self, ctx: TaskContext, state: TaskState, *, update: bool = True) -> bool:
        """Write the final line, unregister, update the lists; False if already ended."""
        if not ctx.finish(state):
            return False
        _LOCAL.remove(ctx.upid)
        with self._lock:
            self._tasks.pop(ctx.upid, None)
        if update:
            try:
                self._update()
            except Exception:  # the log has the result; the next update archives it
                log.exception("task %s: updating the task list failed", ctx.upid)
        ctx.done.set()
        return True

    def wait(self, upid: str, timeout: float | None = None) -> bool:
        """Wait for a task to end (and be archived, if it is this process's); False on
        timeout."""
        parsed = parse_upid(upid)
        ctx = _LOCAL.get(str(parsed))
        if ctx is not None:
            return ctx.done.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._running(parsed):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True

    def abort(self, upid: str) -> None:
        """Ask a running task to stop; it does at its next `check_abort`."""
        parsed = parse_upid(upid)
        ctx = _LOCAL.get(str(parsed))
        if ctx is not None:
            ctx.request_abort()
            return
        self._final_state(parsed)  # TaskNotFound if unknown
        if self._running(parsed):
            raise TaskNotRunning(f"task {parsed} runs in another process (pid {parsed.pid}); "
                                 "it can only be aborted there")
        raise TaskNotRunning(f"task {parsed} is not running")

    def shutdown(self, timeout: float) -> list[str]:
        """Abort every task of this manager, wait up to `timeout` seconds, then end the ones
        still running as aborted. Refuses new tasks from now on. The UPIDs ended by force."""
        with self._lock:
            self._closing = True
            tasks = list(self._tasks.values())
        for ctx, _thread in tasks:
            ctx.request_abort(SHUTDOWN_MESSAGE)
        deadline = time.monotonic() + max(0.0, timeout)
        for _ctx, thread in tasks:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        forced: list[str] = []
        for ctx, thread in tasks:
            if thread.is_alive():
                message = f"{SHUTDOWN_MESSAGE} (still running after {timeout:g} s)"
                if self._end(ctx, TaskState("error", int(time.time()),
                                            message=one_line(message))):
                    forced.append(ctx.upid)
        return forced

    # -- queries ---------------------------------------------------------------------------

    def list(self, start: int = 0, limit: int = 50, running: bool | None = None,
             errors: bool = False, userfilter: str | None = None, since: int | None = None,
             until: int | None = None, typefilter: str | None = None,
             statusfilter: Iterable[str] | str | None = None, store: str | None = None,
             ) -> tuple[Rows, int]:
        """`GET /nodes/{node}/tasks`: (rows, total), running tasks first, then finished
        ones by end time, newest first. `limit` 0 means all; `total` counts every match."""
        _check_paging(start, limit)
        flt = TaskFilter(running=running, errors=errors, userfilter=userfilter, since=since,
                         until=until, typefilter=typefilter,
                         statusfilter=TaskFilter.kinds(statusfilter), store=store)
        if self.lists.needs_update(self._is_active):
            self._update()
        active, archive = self.lists.snapshot()
        entries = list(reversed(active))
        if not running:
            entries.extend(reversed(archive))
        rows: Rows = []
        total = 0
        for entry in entries:
            if not flt.matches(entry):
                continue
            if total >= start and (limit == 0 or len(rows) < limit):
                rows.append(list_row(entry))
            total += 1
        return rows, total

    def status(self, upid: str) -> dict[str, Any]:
        """`GET /nodes/{node}/tasks/{upid}/status`."""
        parsed = parse_upid(upid)
        state = self._final_state(parsed)
        return status_dict(parsed, None if self._running(parsed) else state)

    def read_log(self, upid: str, start: int = 0, limit: int = 50,
                 ) -> tuple[Rows, int, bool]:
        """`GET /nodes/{node}/tasks/{upid}/log`: (lines `{n, t}`, total, active). As PBS,
        line numbers start at 1 and lines numbered below `start` are skipped; `limit` 0
        means to the end."""
        _check_paging(start, limit)
        parsed = parse_upid(upid)
        try:
            f = open(self.paths.log_path(parsed), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise TaskNotFound(f"no task log for {parsed}") from None
        lines: Rows = []
        count = 0
        with f:
            for raw in f:
                count += 1
                if count < start or (limit and len(lines) >= limit):
                    continue
                lines.append({"n": count, "t": raw.rstrip(b"\n").decode("utf-8", "replace")})
        return lines, count, self._running(parsed)

    # -- state -----------------------------------------------------------------------------

    def _is_active(self, upid: Upid) -> bool:
        """PBS's `worker_is_active_local`: registered here, or its process lives."""
        pid, pstart = own_identity()
        if upid.pid == pid and upid.pstart == pstart:
            return _LOCAL.get(str(upid)) is not None
        return process_alive(upid.pid, upid.pstart)

    def _running(self, upid: Upid) -> bool:
        """`_is_active`, and for another process's task: no final line in its log yet."""
        if not self._is_active(upid):
            return False
        if _LOCAL.get(str(upid)) is not None:
            return True
        try:
            line = last_line(self.paths.log_path(upid))
        except OSError:
            return False
        return status_from_last_line(line, upid.starttime).kind == "unknown"

    def _read_status(self, upid: Upid) -> TaskState:
        """PBS's `upid_read_status`, `unknown` (now) if the log is gone."""
        try:
            line = last_line(self.paths.log_path(upid))
        except OSError:
            return TaskState("unknown", int(time.time()))
        return status_from_last_line(line, upid.starttime)

    def _final_state(self, upid: Upid) -> TaskState:
        """The state the log's last line gives (`unknown` without a final line), or the
        archive's if the log is gone; TaskNotFound if neither knows the task."""
        try:
            line = last_line(self.paths.log_path(upid))
        except FileNotFoundError:
            name = str(upid)
            for entry in reversed(self.lists.read_archive()):
                if entry.upid_str == name and entry.state is not None:
                    return entry.state
            raise TaskNotFound(f"no such task: {upid}") from None
        return status_from_last_line(line, upid.starttime)

    def _update(self, add: Upid | None = None) -> None:
        self.lists.update(self._is_active, self._read_status, add=add)


def _check_paging(start: int, limit: int) -> None:
    for name, value in (("start", start), ("limit", limit)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


__all__ = ["TaskFn", "TaskManager"]
