"""Long operations as PBS tasks (spec §11.5): UPIDs, logs, the task lists, abort, shutdown.

    manager = TaskManager("/var/log/chunkyard")          # PBS: /var/log/proxmox-backup
    upid = manager.spawn("garbage_collection", store, authid, run_gc)
    manager.status(upid); manager.read_log(upid); manager.list(running=True)
    manager.abort(upid); manager.shutdown(timeout=10)    # on SIGTERM

| module | purpose |
|---|---|
| `manager.py` | `TaskManager`: spawn on threads, the task endpoints' queries, abort, shutdown |
| `context.py` | `TaskContext`: what a task sees (log, warn, progress, check_abort, upid) |
| `lists.py` | `tasks/active` and `tasks/archive` under `tasks/.active.lock` |
| `logfile.py` | task log files: whole time-stamped lines, the final `TASK ...` line |
| `state.py` | `TaskState` and the text forms of the log and the lists |
| `queries.py` | list filters (PBS's `list_tasks`) and the API's row shapes |
| `paths.py` | the directory layout; received UPIDs validated before they name a file |
| `proc.py` | is a UPID's process alive (pid and start time) |
| `errors.py` | `TaskAborted`, `TaskNotRunning`, `TaskNotFound` |
"""

from chunkyard.server.tasks.context import TaskContext
from chunkyard.server.tasks.errors import TaskAborted, TaskError, TaskNotFound, TaskNotRunning
from chunkyard.server.tasks.manager import TaskFn, TaskManager
from chunkyard.server.tasks.paths import parse_upid
from chunkyard.server.tasks.state import TaskState

__all__ = [
    "TaskAborted",
    "TaskContext",
    "TaskError",
    "TaskFn",
    "TaskManager",
    "TaskNotFound",
    "TaskNotRunning",
    "TaskState",
    "parse_upid",
]
