"""Task log files: `<time>: <text>` lines, appended whole, read back as PBS does.

Each line goes out in one `write(2)` on an `O_APPEND` descriptor, so a reader (or a crash)
sees whole lines only, except after a power loss; readers tolerate a torn last line. The final
`TASK ...` line is fsynced before the task is moved to the archive, so the archive never
names a result the log does not have.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from chunkyard.server.tasks.state import log_time

LOG_MODE = 0o640
DIR_MODE = 0o755
TAIL_BYTES = 8192  # PBS reads the status from the last 8 KiB


class TaskLogWriter:
    """The log of one running task; thread-safe, silent after `close` (a task thread that
    outlives a forced finish must not write past the final line)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=DIR_MODE, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd: int | None = os.open(path, flags, LOG_MODE)
        self._lock = threading.Lock()
        self.path = path

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, text: str, *, now: float | None = None) -> bool:
        """Append `text` (each of its lines gets the time stamp); False once closed."""
        stamp = log_time(time.time() if now is None else now)
        lines = text.splitlines() or [""]
        data = "".join(f"{stamp}: {line}\n" for line in lines).encode("utf-8", "replace")
        with self._lock:
            if self._fd is None:
                return False
            with contextlib.suppress(OSError):  # a full disk must not kill the task
                _write_all(self._fd, data)
            return True

    def finish(self, result_text: str) -> bool:
        """Write the final line, fsync, close. False if already closed (someone else ended
        the task first): exactly one final line is ever written."""
        stamp = log_time(time.time())
        with self._lock:
            if self._fd is None:
                return False
            fd, self._fd = self._fd, None
            try:
                _write_all(fd, f"{stamp}: {result_text}\n".encode("utf-8", "replace"))
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)
            return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def iter_lines(path: str) -> Iterator[str]:
    """The log's lines without their newline (FileNotFoundError if there is no log)."""
    with open(path, "rb") as f:
        for raw in f:
            yield raw.rstrip(b"\n").decode("utf-8", "replace")


def last_line(path: str) -> str:
    """The last non-empty line of the log's last 8 KiB ('' if none)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL_BYTES))
        data = f.read().rstrip(b"\n")
    return data[data.rfind(b"\n") + 1:].decode("utf-8", "replace")


__all__ = ["TaskLogWriter", "iter_lines", "last_line"]
