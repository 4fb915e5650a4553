"""What a running task sees: its UPID, its log, progress, warnings and the abort flag.

A task's function gets a `TaskContext`. It logs with `log`/`warn`, reports `progress`, and
calls `check_abort()` between units of work (or `sleep`, which wakes up on abort): abort is
cooperative, as in PBS. Datastore lock sessions should get `task_id=ctx.upid`, so a refused
lock names the task holding it.
"""

from __future__ import annotations

import threading
import time

from chunkyard.errors import ChunkyardError
from chunkyard.names.upid import Upid
from chunkyard.server.tasks.errors import ABORT_MESSAGE, TaskAborted
from chunkyard.server.tasks.logfile import TaskLogWriter
from chunkyard.server.tasks.state import TaskState, one_line

PROGRESS_INTERVAL = 1.0  # seconds between progress lines, at most


class TaskContext:
    """One running task (thread-safe: a task may log from several threads)."""

    def __init__(self, upid: Upid, writer: TaskLogWriter, *,
                 progress_interval: float = PROGRESS_INTERVAL) -> None:
        self.parsed_upid = upid
        self.upid = str(upid)
        self._writer = writer
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._abort_reason = ABORT_MESSAGE
        self._warnings = 0
        self._progress_interval = progress_interval
        self._progress_what: str | None = None
        self._progress_pct = -1
        self._progress_time = float("-inf")
        self._progress_final = False
        self.done = threading.Event()  # set by the manager once the task is archived

    # -- logging ---------------------------------------------------------------------------

    def log(self, line: str) -> None:
        """One line (or several) in the task log, each prefixed with the time."""
        self._writer.write(line)

    def warn(self, line: str) -> None:
        """A warning: logged with `WARN: ` and counted; a task with warnings and no error
        ends with `TASK WARNINGS: <n>`."""
        with self._lock:
            self._warnings += 1
        self._writer.write(f"WARN: {line}")

    @property
    def warnings(self) -> int:
        with self._lock:
            return self._warnings

    def progress(self, done: int, total: int, what: str = "items") -> None:
        """Report `done` of `total`; logs `progress: <pct>% (<done> of <total> <what>)` at
        most once per whole percent and per interval, plus the final 100% line once.
        A new `what` starts a new phase."""
        pct = 100 if total <= 0 else max(0, min(100, done * 100 // total))
        now = time.monotonic()
        with self._lock:
            if what != self._progress_what:
                self._progress_what, self._progress_pct = what, -1
                self._progress_time, self._progress_final = float("-inf"), False
            final = total > 0 and done >= total
            if final:
                if self._progress_final:
                    return
                self._progress_final = True
            elif pct == self._progress_pct or now - self._progress_time < self._progress_interval:
                return
            self._progress_pct, self._progress_time = pct, now
        self._writer.write(f"progress: {pct}% ({done} of {total} {what})")

    # -- abort -----------------------------------------------------------------------------

    @property
    def abort_requested(self) -> bool:
        return self._abort.is_set()

    def check_abort(self) -> None:
        """Raise `TaskAborted` if an abort was requested (the task then ends with an error)."""
        if self._abort.is_set():
            raise TaskAborted(self._abort_reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise `TaskAborted` as soon as an abort is requested."""
        if self._abort.wait(seconds):
            raise TaskAborted(self._abort_reason)

    def request_abort(self, reason: str = ABORT_MESSAGE) -> bool:
        """Set the abort flag; False if it was set already. Logs the request once (as PBS)."""
        with self._lock:
            if self._abort.is_set():
                return False
            self._abort_reason = reason
            self._abort.set()
        self._writer.write("received abort request ...")
        return True

    # -- the end ---------------------------------------------------------------------------

    def result(self, error: BaseException | None) -> TaskState:
        """The state this task ends in: error, else warnings, else OK."""
        now = int(time.time())
        if error is not None:
            return TaskState("error", now, message=error_message(error))
        warnings = self.warnings
        if warnings:
            return TaskState("warning", now, count=warnings)
        return TaskState("ok", now)

    def finish(self, state: TaskState) -> bool:
        """Write the final line; False if the task was already ended (then nothing is
        written: the first end wins, e.g. a forced end at shutdown)."""
        return self._writer.finish(state.result_text())


def error_message(error: BaseException) -> str:
    """A one-line message: ours as is, others with their type (`KeyError: 'x'`)."""
    text = str(error)
    if not isinstance(error, ChunkyardError | OSError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return one_line(text)


__all__ = ["PROGRESS_INTERVAL", "TaskContext", "error_message"]
