"""Locks between real OS processes: conflicts, holder diagnostics, implicit containers,
bounded waits, locks dying with their process, the double-stat retry, the chunk store
ProcessLocker and the task registry."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chunkyard.datastore.locking import (
    LockBusy,
    LockKey,
    LockManager,
    Mode,
    order_checking,
)
from chunkyard.datastore.locking.tasks import process_start_time
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from tests.helpers import in_thread

S, X = Mode.SHARED, Mode.EXCLUSIVE
ROOT = BackupNamespace()
ABC = BackupNamespace.parse("a/b/c")
G = BackupGroup.parse("host/web")
SNAP = BackupDir(G, 1_700_000_000)
CTX = multiprocessing.get_context("fork")


@pytest.fixture(autouse=True)
def _checker_on() -> Iterator[None]:
    with order_checking(True):
        yield


def _holder_main(conn: multiprocessing.connection.Connection, lock_dir: str, cs: str,
                 operation: str | None, task_id: str | None, comm: str) -> None:
    with open("/proc/self/comm", "w") as f:
        f.write(comm)
    session = LockManager(lock_dir, cs).session(operation, task_id=task_id)
    guards: list[Any] = []
    while True:
        cmd, *args = conn.recv()
        try:
            if cmd == "call":
                method, margs = args
                guards.append(getattr(session, method)(*margs))
                conn.send(("ok", len(guards) - 1))
            elif cmd == "release_later":  # reply first, then act: the caller races with us
                delay, index, unlink = args
                conn.send(("ok", None))
                time.sleep(delay)
                if unlink is not None:
                    session.unlink_lock_file(unlink)
                guards[index].release()
            elif cmd == "release":
                guards[args[0]].release()
                conn.send(("ok", None))
            elif cmd == "exit":
                session.close()
                conn.send(("ok", None))
                return
        except Exception as e:
            conn.send(("err", f"{type(e).__name__}: {e}"))


class Holder:
    """Another OS process holding locks through its own session until told otherwise."""

    def __init__(self, manager: LockManager, operation: str | None = "hold for test",
                 task_id: str | None = None, comm: str = "holder-proc") -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(
            target=_holder_main, daemon=True,
            args=(child, manager.lock_dir, manager.chunk_store_lock_path or "", operation,
                  task_id, comm))
        self.proc.start()
        assert self.proc.pid is not None
        self.pid: int = self.proc.pid

    def _ask(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        status, value = self.conn.recv()
        if status != "ok":
            raise AssertionError(f"holder failed: {value}")
        return value

    def call(self, method: str, *args: Any) -> int:
        return int(self._ask("call", method, args))

    def release(self, index: int) -> None:
        self._ask("release", index)

    def release_later(self, delay: float, index: int, unlink: LockKey | None = None) -> None:
        self._ask("release_later", delay, index, unlink)

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(EOFError, OSError):
                self._ask("exit")
        self.proc.join(5)


@pytest.fixture
def manager(tmp_path: Path) -> LockManager:
    (tmp_path / "store").mkdir()
    return LockManager(str(tmp_path / "locks"), str(tmp_path / "store" / ".lock"))


@pytest.fixture
def holder(manager: LockManager) -> Iterator[Holder]:
    h = Holder(manager, operation="backup host/web", task_id="UPID:test:0001")
    yield h
    h.stop()


def busy(manager: LockManager, method: str, *args: Any, wait: float = 0.0) -> LockBusy:
    with manager.session(wait=wait) as s, pytest.raises(LockBusy) as info:
        getattr(s, method)(*args)
    return info.value


def test_the_last_holder_of_a_snapshot_lock_removes_its_file(
        manager: LockManager, holder: Holder) -> None:
    """A reader that is not the last one leaves the file for the others; the last one (here
    the other process) removes it, and a newcomer meanwhile is never locked out."""
    path = manager.lock_file_path(LockKey.snapshot(ABC, SNAP))
    index = holder.call("snapshot", ABC, SNAP, S)
    with manager.session("reader") as s:
        s.snapshot(ABC, SNAP, S)
    assert os.path.exists(path), "another process still holds it"
    holder.release(index)
    assert not os.path.exists(path), "its last holder removed it"
    free(manager, "snapshot", ABC, SNAP, X)  # a fresh file, lockable at once
    assert not os.path.exists(path)


def busy_in(holder: Holder, method: str, *args: Any) -> str:
    """The LockBusy message another process got."""
    with pytest.raises(AssertionError, match="LockBusy") as info:
        holder.call(method, *args)
    return str(info.value)


def free(manager: LockManager, method: str, *args: Any, wait: float = 0.0) -> None:
    with manager.session(wait=wait) as s:
        getattr(s, method)(*args)


def test_shared_shared_compatible_shared_exclusive_conflict(
        manager: LockManager, holder: Holder) -> None:
    holder.call("snapshot", ABC, SNAP, S)
    free(manager, "snapshot", ABC, SNAP, S)
    err = busy(manager, "snapshot", ABC, SNAP, X)
    assert err.wanted is X
    assert [h.pid for h in err.holders] == [holder.pid]


def test_busy_message_names_the_lock_and_its_holder(manager: LockManager,
                                                    holder: Holder) -> None:
    holder.call("group_writer", ABC, G)
    msg = str(busy(manager, "group_writer", ABC, G))
    assert "\n" not in msg
    assert msg.startswith("group host/web (writer lock) in 'a/b/c' is locked: wanted exclusive")
    for part in (f"pid {holder.pid}", "holder-proc", "operation 'backup host/web'",
                 "task UPID:test:0001"):
        assert part in msg


def test_stale_registry_entries_are_ignored(manager: LockManager, holder: Holder) -> None:
    holder.call("namespace", ABC, X)
    path = Path(manager.lock_dir, "tasks", f"{holder.pid}.json")
    doc = json.loads(path.read_text())
    assert doc["start_time"] == process_start_time(holder.pid)
    doc["start_time"] += 1  # as if the pid had been reused
    path.write_text(json.dumps(doc))
    msg = str(busy(manager, "namespace", ABC, S))
    assert f"pid {holder.pid} (holder-proc, exclusive)" in msg
    assert "backup host/web" not in msg


def test_registry_is_written_per_session_and_removed(manager: LockManager) -> None:
    tasks = Path(manager.lock_dir, "tasks")
    with manager.session():
        assert not tasks.exists()  # no operation, no task id: nothing to register
    with manager.session("verify"), manager.session("prune", task_id="UPID:x"):
        doc = json.loads((tasks / f"{os.getpid()}.json").read_text())
        assert doc["sessions"] == [{"operation": "verify", "task_id": None},
                                   {"operation": "prune", "task_id": "UPID:x"}]
    assert os.listdir(tasks) == []


def test_snapshot_reader_blocks_namespace_x_on_it_and_every_ancestor(
        manager: LockManager, holder: Holder) -> None:
    holder.call("snapshot", ABC, SNAP, S)
    nss = {n: BackupNamespace.parse(n) for n in ("", "a", "a/b", "a/b/c", "a/x")}

    def children(n: BackupNamespace) -> list[BackupNamespace]:
        return [c for c in nss.values() if c.depth == n.depth + 1 and n.is_ancestor_of(c)]

    for start in ("", "a", "a/b", "a/b/c"):
        with manager.session("delete namespace") as s:
            with pytest.raises(LockBusy) as info:
                s.namespace_subtree_exclusive(nss[start], children)
            assert str(info.value).startswith("namespace 'a/b/c' is locked: wanted exclusive")
            assert f"pid {holder.pid}" in str(info.value)
            assert s.held() == []  # the walk rolled back
    # A sibling subtree and the group writer lock are unaffected.
    free(manager, "namespace_subtree_exclusive", nss["a/x"], children)
    free(manager, "group_writer", ABC, G)
    # The reader's group access lock blocks GA X (delete or move the group).
    assert "group host/web in 'a/b/c'" in str(busy(manager, "group", ABC, G, X))


def test_bounded_wait_succeeds_when_released_in_time(manager: LockManager,
                                                     holder: Holder) -> None:
    index = holder.call("snapshot", ABC, SNAP, X)
    holder.release_later(0.2, index)
    start = time.monotonic()
    free(manager, "snapshot", ABC, SNAP, X, wait=5.0)
    assert 0.15 < time.monotonic() - start < 3.0


def test_bounded_wait_fails_after_the_deadline(manager: LockManager, holder: Holder) -> None:
    holder.call("snapshot", ABC, SNAP, X)
    start = time.monotonic()
    err = busy(manager, "snapshot", ABC, SNAP, S, wait=0.3)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.5
    assert "after waiting 0.3 s" in str(err)


def test_manifest_waits_five_seconds_by_default(manager: LockManager,
                                                holder: Holder) -> None:
    index = holder.call("manifest", ABC, SNAP)
    holder.release_later(0.2, index)
    free(manager, "manifest", ABC, SNAP)  # session wait is 0, MF's default is 5 s


def test_lock_dies_with_its_process(manager: LockManager, holder: Holder) -> None:
    holder.call("namespace_subtree_exclusive", ROOT, _no_children)
    busy(manager, "namespace", ROOT, S)
    os.kill(holder.pid, signal.SIGKILL)
    holder.proc.join(5)
    free(manager, "namespace", ROOT, S)


def _no_children(n: BackupNamespace) -> list[BackupNamespace]:
    return []


def test_double_stat_retries_when_the_file_is_unlinked(manager: LockManager,
                                                       holder: Holder) -> None:
    key = LockKey.snapshot(ABC, SNAP)
    path = manager.lock_file_path(key)
    index = holder.call("snapshot", ABC, SNAP, X)
    # We open the file and poll; the holder unlinks it (it may: it holds X) and releases.
    holder.release_later(0.2, index, unlink=key)
    with manager.session("winner", wait=5.0) as s:
        s.snapshot(ABC, SNAP, X)
        assert os.path.exists(path)
        # We hold the file that is now at the path, not the orphan: a third process that
        # opens the path must be refused.
        third = Holder(manager, operation="third")
        try:
            with pytest.raises(AssertionError, match="LockBusy: snapshot host/web"):
                third.call("snapshot", ABC, SNAP, S)
        finally:
            third.stop()


def test_forked_child_does_not_keep_the_parents_lock(manager: LockManager) -> None:
    with manager.session("parent") as s:
        guard = s.namespace(ABC, X)
        child = CTX.Process(target=time.sleep, args=(5,), daemon=True)
        child.start()
        try:
            guard.release()
            other = Holder(manager)
            try:
                other.call("namespace", ABC, X)  # would fail if the child kept the lock
            finally:
                other.stop()
        finally:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(5)


# -- chunk store lock (ProcessLocker semantics) -----------------------------------------

def test_a_backup_in_another_process_does_not_block_gc_and_gc_sees_its_start(
        manager: LockManager, holder: Holder) -> None:
    """chunkyard's CS (on purpose unlike PBS's whole-file lock): writers lock one byte that
    encodes their start, GC locks byte 0. A backup process blocks no GC, GC no backup, and
    GC's oldest-writer bound includes the other process's writer, to the second."""
    before = time.time()
    index = holder.call("chunk_store", S)
    with manager.session("gc") as gc:
        gc.chunk_store(X)
        oldest = manager.oldest_shared_lock_time()
        assert oldest is not None and int(before) <= oldest <= time.time()
        second, other_gc = Holder(manager, "second backup"), Holder(manager, "second gc")
        try:
            second.call("chunk_store", S)  # a backup starting during GC is not refused
            err = busy_in(other_gc, "chunk_store", X)
            assert f"pid {os.getpid()} " in err  # a second GC is refused, naming the first
        finally:
            second.stop()
            other_gc.stop()
    holder.release(index)
    assert manager.oldest_shared_lock_time() is None


def test_only_one_gc_across_processes(manager: LockManager, holder: Holder) -> None:
    index = holder.call("chunk_store", X)
    err = busy(manager, "chunk_store", X)
    assert str(err).startswith("chunk store lock ")
    assert f"pid {holder.pid} (holder-proc, exclusive" in str(err)
    free(manager, "chunk_store", S)
    holder.release(index)
    free(manager, "chunk_store", X)


def _pbs_style_lock(path: str, mode: int, ready: Any, done: Any) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, mode)  # whole file, as PBS's ProcessLocker
    ready.set()
    done.wait(30)


@pytest.mark.parametrize(("pbs_mode", "we_may"), [("shared", {S}), ("exclusive", set())])
def test_pbs_whole_file_locks_still_exclude_us(manager: LockManager, pbs_mode: str,
                                               we_may: set[Mode]) -> None:
    """A PBS daemon on the same datastore: its backups (whole-file read lock) stop our GC,
    its GC (whole-file write lock) stops our backups and GC."""
    assert manager.chunk_store_lock_path is not None
    ready, done = CTX.Event(), CTX.Event()
    mode = fcntl.LOCK_SH if pbs_mode == "shared" else fcntl.LOCK_EX
    proc = CTX.Process(target=_pbs_style_lock, daemon=True,
                       args=(manager.chunk_store_lock_path, mode, ready, done))
    proc.start()
    try:
        assert ready.wait(10)
        for ours in (S, X):
            if ours in we_may:
                free(manager, "chunk_store", ours)
            else:
                busy(manager, "chunk_store", ours)
    finally:
        done.set()
        proc.join(10)


def test_oldest_shared_lock_time(manager: LockManager) -> None:
    assert manager.oldest_shared_lock_time() is None
    t0 = time.time()
    first = manager.session("first")
    first.chunk_store(S)
    t1 = time.time()
    time.sleep(0.01)
    second = manager.session("second")
    t2 = time.time()
    in_thread(lambda: second.chunk_store(S))
    oldest = manager.oldest_shared_lock_time()
    assert oldest is not None and t0 <= oldest <= t1
    first.close()
    oldest = manager.oldest_shared_lock_time()
    assert oldest is not None and oldest >= t2
    second.close()
    assert manager.oldest_shared_lock_time() is None


