"""Tasks across restarts: a server SIGKILLed mid-task, a crash between the two list writes,
a torn archive, pid reuse and tasks of other live processes."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from pathlib import Path

import pytest

from chunkyard.datastore.locking.tasks import process_start_time
from chunkyard.names.upid import Upid
from chunkyard.server.tasks import TaskContext, TaskManager, TaskNotRunning
from chunkyard.server.tasks.proc import process_alive
from chunkyard.server.tasks.state import log_time, parse_list_line

AUTH = "root@pam"
CTX = multiprocessing.get_context("fork")
WAIT = 10.0


def _server(base: str, conn: multiprocessing.connection.Connection) -> None:
    """A 'server' that starts a task and hangs in it until it is killed."""
    m = TaskManager(base, progress_interval=0.0)

    def work(ctx: TaskContext) -> None:
        ctx.log("working")
        ctx.progress(1, 10, "groups")
        conn.send(ctx.upid)
        while True:
            time.sleep(1)

    m.spawn("garbage_collection", "store1", AUTH, work)
    while True:
        time.sleep(1)


def _stat_state(pid: int) -> bytes:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return b"gone"
    return data[data.rfind(b")") + 2:].split()[0]


def test_task_of_a_killed_server_is_failed_not_running(tmp_path: Path) -> None:
    base = tmp_path / "log"
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_server, args=(str(base), child), daemon=True)
    proc.start()
    try:
        assert parent.poll(WAIT)
        upid: str = parent.recv()
        assert proc.pid is not None
        # while it lives, another manager sees the task running but cannot abort it
        other = TaskManager(base)
        assert other.status(upid)["status"] == "running"
        assert [r["upid"] for r in other.list(running=True)[0]] == [upid]
        assert other.read_log(upid)[2] is True
        with pytest.raises(TaskNotRunning, match="another process"):
            other.abort(upid)
        pstart = Upid.parse(upid).pstart

        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while _stat_state(proc.pid) not in (b"Z", b"gone") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_alive(proc.pid, pstart)    # a zombie is dead already
    finally:
        proc.kill()
        proc.join(WAIT)

    m = TaskManager(base)
    assert Path(m.paths.active).read_text() == ""
    [line] = Path(m.paths.archive).read_text().splitlines()
    entry = parse_list_line(line)
    assert entry.upid_str == upid and entry.state is not None
    assert entry.state.kind == "unknown" and line.endswith(" unknown")

    status = m.status(upid)
    assert status["status"] == "stopped" and status["exitstatus"] == "unknown"
    assert status["endtime"] == entry.state.endtime >= Upid.parse(upid).starttime
    rows, total = m.list()
    assert total == 1 and rows[0]["status"] == "unknown"
    assert m.list(running=True) == ([], 0)
    assert [r["upid"] for r in m.list(errors=True)[0]] == [upid]
    assert [r["upid"] for r in m.list(statusfilter=["unknown"])[0]] == [upid]
    lines, total, active = m.read_log(upid)
    assert not active and lines[-1]["t"].endswith("progress: 10% (1 of 10 groups)")
    with pytest.raises(TaskNotRunning):
        m.abort(upid)
    # the manager that watched it live agrees once it looks again
    assert other.status(upid)["status"] == "stopped"
    assert other.list(running=True) == ([], 0)


def test_crash_between_archive_and_active_archives_once(tmp_path: Path) -> None:
    m = TaskManager(tmp_path)
    upid = m.spawn("test", None, AUTH, lambda ctx: None)
    assert m.wait(upid, WAIT)
    archive = Path(m.paths.archive).read_text()
    Path(m.paths.active).write_text(f"{upid}\n")         # the old active file survived

    rows, total = m.list()                               # readers prefer the archive
    assert total == 1 and rows[0]["status"] == "OK"
    m2 = TaskManager(tmp_path)
    assert Path(m2.paths.active).read_text() == ""
    assert Path(m2.paths.archive).read_text() == archive


def test_torn_archive_tail_is_cut_before_the_next_append(tmp_path: Path) -> None:
    m = TaskManager(tmp_path)
    first = m.spawn("test", None, AUTH, lambda ctx: None)
    assert m.wait(first, WAIT)
    with open(m.paths.archive, "a") as f:
        f.write("this line is not a task\n")           # complete but malformed: skipped
        f.write(f"{first[:30]}")                       # torn: cut
    assert m.list()[1] == 1
    second = m.spawn("test", None, AUTH, lambda ctx: None)
    assert m.wait(second, WAIT)
    lines = Path(m.paths.archive).read_text().splitlines()
    assert len(lines) == 3 and lines[1] == "this line is not a task"
    assert [r["upid"] for r in m.list()[0]] == [second, first]
    assert [r["upid"] for r in TaskManager(tmp_path).list()[0]] == [second, first]


def _fake_task(base: Path, pid: int, pstart: int, task_id: int, last: str | None) -> str:
    upid = str(Upid(node="node1", pid=pid, pstart=pstart, task_id=task_id,
                    starttime=int(time.time()) - 60, worker_type="verify",
                    worker_id="store1", authid=AUTH))
    log_dir = base / "tasks" / f"{pstart & 255:02X}"
    log_dir.mkdir(parents=True, exist_ok=True)
    text = f"{log_time(time.time() - 30)}: started\n"
    if last is not None:
        text += f"{log_time(time.time() - 10)}: {last}\n"
    (log_dir / upid).write_text(text)
    return upid


def test_liveness_uses_pid_and_start_time(tmp_path: Path) -> None:
    ppid = os.getppid()
    ppstart = process_start_time(ppid)
    assert ppstart is not None
    own = os.getpid()
    own_start = process_start_time(own)
    assert own_start is not None
    alive = _fake_task(tmp_path, ppid, ppstart, 1, None)              # a live process's
    reused = _fake_task(tmp_path, ppid, ppstart + 1, 2, None)        # pid reused
    gone = _fake_task(tmp_path, 0x7FFFFFF0, 123, 3, "TASK OK")       # no such pid
    orphan = _fake_task(tmp_path, own, own_start, 0xFFFF0001, None)  # "ours", not registered
    finished = _fake_task(tmp_path, ppid, ppstart, 5, "TASK WARNINGS: 1")
    (tmp_path / "tasks" / "active").write_text(
        f"{alive}\n{reused}\n{gone}\n{orphan}\nnot a upid\n{finished} 65A1B2C3 WARNINGS: 1\n")

    m = TaskManager(tmp_path)
    assert Path(m.paths.active).read_text() == f"{alive}\n"
    states = {e.upid_str: e.state for e in m.lists.read_archive()}
    assert set(states) == {reused, gone, orphan, finished}
    assert {u: str(s) for u, s in states.items()} == {
        reused: "unknown", gone: "OK", orphan: "unknown", finished: "WARNINGS: 1"}
    assert m.status(alive)["status"] == "running"
    assert m.status(reused)["exitstatus"] == "unknown"
    assert [r["upid"] for r in m.list(running=True)[0]] == [alive]
