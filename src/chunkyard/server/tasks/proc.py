"""Is the process that started a task still there? (pid plus start time, as PBS)

A pid can be reused after a crash, so a UPID's process is alive only if `/proc/<pid>/stat`
shows the same start time (field 22) as the UPID's `pstart`. Unlike PBS, a zombie (state `Z`
or `X`) counts as dead: its threads are gone, so its tasks can no longer finish.
"""

from __future__ import annotations

import os

from chunkyard.datastore.locking.tasks import process_start_time


def process_alive(pid: int, pstart: int) -> bool:
    """True if `pid` runs and started at `pstart` (clock ticks since boot)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        state, start = fields[0], int(fields[19])
    except (IndexError, ValueError):
        return False
    return state not in (b"Z", b"X") and start == pstart


_OWN: tuple[int, int] | None = None


def own_identity() -> tuple[int, int]:
    """(pid, pstart) of this process, recomputed after a fork."""
    global _OWN
    pid = os.getpid()
    if _OWN is None or _OWN[0] != pid:
        _OWN = (pid, process_start_time(pid) or 0)
    return _OWN


__all__ = ["own_identity", "process_alive"]
