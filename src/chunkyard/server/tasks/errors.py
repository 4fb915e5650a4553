"""Errors of the task machinery, so the API can map them to HTTP codes (404, 400)."""

from __future__ import annotations

from chunkyard.errors import ChunkyardError, NotFound

# PBS's wording (`WorkerTaskContext::fail_on_abort`), so task logs read the same.
ABORT_MESSAGE = "abort requested - aborting task"
SHUTDOWN_MESSAGE = "task aborted by shutdown"


class TaskError(ChunkyardError):
    """A task request was refused: not running, another process's, shutting down."""


class TaskNotRunning(TaskError):
    """The task exists but has already finished (or is not this process's to abort)."""


class TaskNotFound(NotFound):
    """No task with this UPID is known here (no log file, no list entry)."""


class TaskAborted(TaskError):
    """Raised by `TaskContext.check_abort` once an abort was requested; the task ends with
    `TASK ERROR: <message>`."""

    def __init__(self, message: str = ABORT_MESSAGE) -> None:
        super().__init__(message)


__all__ = [
    "ABORT_MESSAGE",
    "SHUTDOWN_MESSAGE",
    "TaskAborted",
    "TaskError",
    "TaskNotFound",
    "TaskNotRunning",
]
