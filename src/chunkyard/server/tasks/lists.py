"""The task lists `tasks/active` and `tasks/archive`, updated under `tasks/.active.lock`.

An update (PBS's `update_active_workers`), under an exclusive flock plus a thread lock:
read `active`; every entry whose task no longer runs gets its state from its log and goes to
the archive; a new task is added; then the archive is appended to (fsynced) and only then
`active` is replaced atomically (tmp file, fsync, rename). A crash between the two leaves a
task in both lists: the next update drops it from `active` without archiving it twice, and
readers prefer the archive entry. (PBS writes `active` first, so such a crash loses the task.)

The archive is append-only, written one whole buffer per update; a torn tail (power loss,
full disk) is cut back to the last complete line before the next append. Readers need no
lock: they read `active`, then the archive, and drop duplicates. The parsed archive is cached
and only its new tail is read on later calls.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from chunkyard.errors import ChunkyardError
from chunkyard.names.upid import Upid
from chunkyard.server.tasks.errors import TaskError
from chunkyard.server.tasks.paths import TaskPaths
from chunkyard.server.tasks.state import TaskListEntry, TaskState, parse_list_line

log = logging.getLogger("chunkyard.tasks")

LIST_MODE = 0o660
LOCK_TIMEOUT = 15.0  # PBS's `lock_task_list_files`
_TAIL_SCAN = 65536


class TaskLists:
    """Reads and updates one task directory's `active` and `archive`."""

    def __init__(self, paths: TaskPaths, *, durable: bool = True,
                 lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.paths = paths
        self.durable = durable
        self.lock_timeout = lock_timeout
        self._thread_lock = threading.Lock()
        self._archive = _ArchiveCache(paths.archive)

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access to the lists, against threads here and other processes."""
        with self._thread_lock:
            fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LIST_MODE)
            try:
                deadline = time.monotonic() + self.lock_timeout
                delay = 0.002
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise TaskError("unable to lock the task list: another process "
                                            f"holds {self.paths.lock}") from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
                yield
            finally:
                os.close(fd)  # releases the flock

    # -- reading ---------------------------------------------------------------------------

    def read_active(self) -> list[TaskListEntry]:
        """`active` in file order (oldest first); malformed lines are skipped, as PBS."""
        try:
            with open(self.paths.active, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return _parse_lines(data, self.paths.active)

    def read_archive(self) -> tuple[TaskListEntry, ...]:
        """The archive in file order (by end time, oldest first)."""
        return self._archive.load()

    def archived(self) -> frozenset[str]:
        """UPID strings the archive holds."""
        self._archive.load()
        return self._archive.upids()

    def snapshot(self) -> tuple[list[TaskListEntry], tuple[TaskListEntry, ...]]:
        """(running, finished) without a lock; a task seen in both is finished."""
        active = self.read_active()
        archive = self.read_archive()
        if active:
            done = self._archive.upids()
            active = [e for e in active if e.upid_str not in done]
        return active, archive

    # -- updating --------------------------------------------------------------------------

    def update(self, is_active: Callable[[Upid], bool],
               status_of: Callable[[Upid], TaskState], add: Upid | None = None) -> None:
        """Move ended tasks from `active` to the archive; add `add` as running."""
        with self.locked():
            entries = self.read_active()
            keep: list[TaskListEntry] = []
            ended: list[TaskListEntry] = []
            for e in entries:
                if e.state is not None:
                    ended.append(e)
                elif is_active(e.upid):
                    keep.append(e)
                else:
                    ended.append(TaskListEntry(e.upid, e.upid_str, status_of(e.upid)))
            if add is not None:
                keep.append(TaskListEntry(add, str(add), None))
            if not ended and add is None:
                return
            if ended:
                done = set(self.archived())
                fresh: list[TaskListEntry] = []
                for e in ended:
                    if e.upid_str not in done:
                        done.add(e.upid_str)
                        fresh.append(e)
                fresh.sort(key=lambda e: (e.state.endtime if e.state else 0,
                                          e.upid.starttime))
                if fresh:
                    self._append_archive("".join(e.render() for e in fresh).encode())
            self._replace_active("".join(e.render() for e in keep).encode())

    def needs_update(self, is_active: Callable[[Upid], bool]) -> bool:
        """True if `active` names a finished or dead task (cheap, lock-free)."""
        return any(e.state is not None or not is_active(e.upid) for e in self.read_active())

    def _replace_active(self, data: bytes) -> None:
        tmp = f"{self.paths.active}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, LIST_MODE)
        try:
            _write_all(fd, data)
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.paths.active)
        if self.durable:
            _fsync_dir(self.paths.task_dir)

    def _append_archive(self, data: bytes) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(self.paths.archive, flags, LIST_MODE)
        try:
            size = _cut_torn_tail(fd)
            try:
                _write_all(fd, data)
            except OSError:
                os.ftruncate(fd, size)  # all of this update's lines or none
                raise
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)


class _ArchiveCache:
    """The parsed archive; appended lines are parsed once, a replaced file is re-read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._key: tuple[int, int] | None = None
        self._offset = 0
        self._entries: list[TaskListEntry] = []
        self._upids: set[str] = set()
        self._frozen: frozenset[str] = frozenset()

    def load(self) -> tuple[TaskListEntry, ...]:
        with self._lock:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                self._reset(None)
                return ()
            with f:
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino)
                if key != self._key or st.st_size < self._offset:
                    self._reset(key)
                if st.st_size > self._offset:
                    f.seek(self._offset)
                    data = f.read(st.st_size - self._offset)
                    end = data.rfind(b"\n") + 1  # a torn last line waits for its repair
                    if end:
                        new = _parse_lines(data[:end], self.path)
                        self._entries.extend(new)
                        self._upids.update(e.upid_str for e in new)
                        self._frozen = frozenset(self._upids)
                        self._offset += end
            return tuple(self._entries)

    def upids(self) -> frozenset[str]:
        with self._lock:
            return self._frozen

    def _reset(self, key: tuple[int, int] | None) -> None:
        self._key, self._offset = key, 0
        self._entries, self._upids, self._frozen = [], set(), frozenset()


def _parse_lines(data: bytes, path: str) -> list[TaskListEntry]:
    out: list[TaskListEntry] = []
    for raw in data.decode("utf-8", "replace").splitlines():
        if not raw:
            continue
        try:
            out.append(parse_list_line(raw))
        except ChunkyardError as e:
            log.warning("%s: skipping malformed task list line %r: %s", path, raw, e)
    return out


def _cut_torn_tail(fd: int) -> int:
    """Truncate a last line without newline; the (new) size."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return size
    pos = size
    while pos > 0:
        start = max(0, pos - _TAIL_SCAN)
        chunk = os.pread(fd, pos - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            pos = start + nl + 1
            break
        pos = start
    log.warning("task archive: cutting a torn last line (%d bytes)", size - pos)
    os.ftruncate(fd, pos)
    return pos


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - write(2) reports errors by raising
            raise OSError(errno.EIO, "short write")
        view = view[n:]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["LOCK_TIMEOUT", "TaskLists"]
