"""Server tasks (spec §11.5) on real threads and real files: results, warnings, errors,
abort, shutdown, list filters and paging, log paging, hostile UPIDs, many tasks at once."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkyard.datastore.locking import LockManager
from chunkyard.datastore.locking.tasks import TaskInfo, read_tasks
from chunkyard.errors import ChunkyardError, DatastoreError, InvalidName
from chunkyard.names.upid import Upid
from chunkyard.server.tasks import (
    TaskAborted,
    TaskContext,
    TaskError,
    TaskManager,
    TaskNotFound,
    TaskNotRunning,
)
from chunkyard.server.tasks.state import (
    TaskState,
    log_time,
    one_line,
    parse_list_line,
    parse_log_time,
    status_from_last_line,
)

AUTH = "root@pam"
WAIT = 10.0


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[TaskManager]:
    m = TaskManager(tmp_path / "log", progress_interval=0.0)
    yield m
    m.shutdown(timeout=2.0)


def run(m: TaskManager, fn: object, wtype: str = "test", wid: str | None = "store1",
        authid: str = AUTH) -> str:
    upid = m.spawn(wtype, wid, authid, fn)  # type: ignore[arg-type]
    assert m.wait(upid, WAIT)
    return upid


def log_texts(m: TaskManager, upid: str) -> list[str]:
    lines, total, active = m.read_log(upid, limit=0)
    assert total == len(lines) and not active
    return [line["t"].split(": ", 1)[1] for line in lines]


def archive_lines(m: TaskManager) -> list[str]:
    return Path(m.paths.archive).read_text().splitlines()


# -- results ---------------------------------------------------------------------------------

def test_task_logs_progress_and_succeeds(manager: TaskManager) -> None:
    def work(ctx: TaskContext) -> None:
        ctx.log("starting")
        for i in range(1001):
            ctx.progress(i, 1000, "chunks")
        ctx.log("done")

    upid = run(manager, work, "garbage_collection", "store1")
    texts = log_texts(manager, upid)
    assert texts[0] == "starting" and texts[-2] == "done" and texts[-1] == "TASK OK"
    progress = [t for t in texts if t.startswith("progress:")]
    assert 2 <= len(progress) <= 101                   # once per percent at most
    assert progress[-1] == "progress: 100% (1000 of 1000 chunks)"
    assert len(set(progress)) == len(progress)

    status = manager.status(upid)
    parsed = Upid.parse(upid)
    assert status == {
        "upid": upid, "node": parsed.node, "pid": os.getpid(), "pstart": parsed.pstart,
        "starttime": parsed.starttime, "type": "garbage_collection", "id": "store1",
        "user": AUTH, "status": "stopped", "exitstatus": "OK",
        "endtime": status["endtime"],
    }
    assert parsed.starttime <= status["endtime"] <= time.time() + 1

    rows, total = manager.list()
    assert total == 1 and rows[0]["upid"] == upid and rows[0]["status"] == "OK"
    assert rows[0]["worker_type"] == "garbage_collection" and rows[0]["worker_id"] == "store1"
    assert rows[0]["user"] == AUTH and rows[0]["endtime"] == status["endtime"]

    # PBS's layout and line formats
    log_file = Path(manager.paths.task_dir) / f"{parsed.pstart & 255:02X}" / upid
    assert log_file.is_file()
    first = log_file.read_text().splitlines()[0]
    stamp, _, text = first.partition(": ")
    assert text == "starting" and parse_log_time(stamp) is not None
    assert archive_lines(manager) == [f"{upid} {status['endtime']:08X} OK"]
    assert Path(manager.paths.active).read_text() == ""


def test_progress_is_rate_limited(tmp_path: Path) -> None:
    m = TaskManager(tmp_path, progress_interval=3600.0)

    def work(ctx: TaskContext) -> None:
        for i in range(500):
            ctx.progress(i, 499, "groups")
        for i in range(3):
            ctx.progress(i, 2, "snapshots")            # a new phase starts over

    texts = log_texts(m, run(m, work))
    assert [t for t in texts if t.startswith("progress")] == [
        "progress: 0% (0 of 499 groups)", "progress: 100% (499 of 499 groups)",
        "progress: 0% (0 of 2 snapshots)", "progress: 100% (2 of 2 snapshots)",
    ]


def test_warnings(manager: TaskManager) -> None:
    def work(ctx: TaskContext) -> None:
        ctx.warn("chunk a is missing")
        ctx.log("between")
        ctx.warn("chunk b is missing")

    upid = run(manager, work)
    texts = log_texts(manager, upid)
    assert texts == ["WARN: chunk a is missing", "between", "WARN: chunk b is missing",
                     "TASK WARNINGS: 2"]
    assert manager.status(upid)["exitstatus"] == "WARNINGS: 2"
    rows, _ = manager.list()
    assert rows[0]["status"] == "WARNINGS: 2"


def test_exception_is_a_one_line_error(manager: TaskManager) -> None:
    def bug(ctx: TaskContext) -> None:
        ctx.log("working")
        raise RuntimeError("boom\nsecond line")

    upid = run(manager, bug)
    status = manager.status(upid)
    assert status["status"] == "stopped"
    assert status["exitstatus"] == "RuntimeError: boom second line"
    texts = log_texts(manager, upid)
    assert texts[-1] == "TASK ERROR: RuntimeError: boom second line"
    assert any(t.startswith("Traceback") for t in texts)   # the traceback as log lines only
    assert archive_lines(manager)[0].endswith(" RuntimeError: boom second line")

    def refused(ctx: TaskContext) -> None:
        raise DatastoreError("snapshot is protected")

    upid2 = run(manager, refused)
    assert manager.status(upid2)["exitstatus"] == "snapshot is protected"
    assert log_texts(manager, upid2) == ["TASK ERROR: snapshot is protected"]

    def tricky(ctx: TaskContext) -> None:
        raise ChunkyardError("OK")                  # must not read back as success

    upid3 = run(manager, tricky)
    assert manager.status(upid3)["exitstatus"] == "error: OK"
    rows, _ = manager.list(statusfilter=["error"])
    assert {r["upid"] for r in rows} == {upid, upid2, upid3}


def test_abort(manager: TaskManager) -> None:
    started = threading.Event()

    def loop(ctx: TaskContext) -> None:
        started.set()
        while True:
            ctx.check_abort()
            time.sleep(0.005)

    upid = manager.spawn("verify", "store1", AUTH, loop)
    assert started.wait(WAIT)
    assert manager.status(upid)["status"] == "running"
    rows, total = manager.list(running=True)
    assert total == 1 and rows[0]["upid"] == upid and "status" not in rows[0]
    assert manager.read_log(upid)[2] is True

    manager.abort(upid)
    assert manager.wait(upid, WAIT)
    status = manager.status(upid)
    assert status["exitstatus"] == "abort requested - aborting task"
    texts = log_texts(manager, upid)
    assert texts[-2:] == ["received abort request ...",
                          "TASK ERROR: abort requested - aborting task"]

    with pytest.raises(TaskNotRunning):
        manager.abort(upid)
    unknown = str(dataclasses.replace(Upid.parse(upid), task_id=999_999))
    with pytest.raises(TaskNotFound):
        manager.abort(unknown)
    with pytest.raises(TaskNotFound):
        manager.status(unknown)
    with pytest.raises(TaskNotFound):
        manager.read_log(unknown)


def test_sleep_wakes_up_on_abort(manager: TaskManager) -> None:
    def sleeper(ctx: TaskContext) -> None:
        ctx.sleep(60)

    upid = manager.spawn("test", None, AUTH, sleeper)
    t0 = time.monotonic()
    manager.abort(upid)
    assert manager.wait(upid, WAIT) and time.monotonic() - t0 < 5
    status = manager.status(upid)
    assert "id" not in status and status["exitstatus"] == "abort requested - aborting task"


def test_token_owner_in_status(manager: TaskManager) -> None:
    upid = run(manager, lambda ctx: None, authid="alice@pbs!backup")
    status = manager.status(upid)
    assert status["user"] == "alice@pbs" and status["tokenid"] == "backup"
    assert manager.list()[0][0]["user"] == "alice@pbs!backup"
    with pytest.raises(InvalidName):
        manager.spawn("test", None, "not an authid", lambda ctx: None)
    with pytest.raises(InvalidName):
        manager.spawn("bad/type", None, AUTH, lambda ctx: None)


# -- shutdown --------------------------------------------------------------------------------

def test_shutdown_aborts_and_force_ends(tmp_path: Path) -> None:
    m = TaskManager(tmp_path, progress_interval=0.0)
    stuck = threading.Event()
    release = threading.Event()
    started = threading.Barrier(3)

    def cooperative(ctx: TaskContext) -> None:
        started.wait()
        ctx.sleep(60)

    def stubborn(ctx: TaskContext) -> None:
        started.wait()
        stuck.set()
        release.wait(WAIT)                            # ignores the abort flag
        ctx.log("too late")

    good = m.spawn("verify", "store1", AUTH, cooperative)
    bad = m.spawn("garbage_collection", "store1", AUTH, stubborn)
    started.wait(WAIT)
    assert stuck.wait(WAIT)
    forced = m.shutdown(timeout=0.3)
    assert forced == [bad]
    assert m.status(good)["exitstatus"] == "task aborted by shutdown"
    assert m.status(bad)["exitstatus"] == "task aborted by shutdown (still running after 0.3 s)"
    with pytest.raises(TaskError):
        m.spawn("test", None, AUTH, lambda ctx: None)

    release.set()                                    # the stubborn thread ends later...
    time.sleep(0.1)
    texts = log_texts(m, bad)                        # ...and writes nothing after the end
    assert texts[-1].startswith("TASK ERROR: task aborted by shutdown")
    assert sum(t.startswith("TASK ") for t in texts) == 1 and "too late" not in texts
    rows, total = m.list()
    assert total == 2 and all(r["status"].startswith("task aborted") for r in rows)
    assert Path(m.paths.active).read_text() == ""


# -- listing ---------------------------------------------------------------------------------

def test_list_filters_and_paging(manager: TaskManager) -> None:
    def ok(ctx: TaskContext) -> None:
        pass

    def warn(ctx: TaskContext) -> None:
        ctx.warn("w")

    def fail(ctx: TaskContext) -> None:
        raise DatastoreError("failed")

    done = [
        run(manager, ok, "garbage_collection", "store1"),
        run(manager, warn, "verify", "store1:ns1"),
        run(manager, fail, "prune", "store2:ns1/host/a", "alice@pbs"),
        run(manager, ok, "backup", "store1:host/web", "alice@pbs!tok"),
        run(manager, ok, "verificationjob", "store2:job-1"),
        run(manager, ok, "syncjob", "remote1:rstore:store1::s-job"),
        run(manager, ok, "move-group", "store1:host/x"),
    ]
    gate = threading.Event()
    running = manager.spawn("verify_group", "store1:host/web", AUTH, lambda ctx: gate.wait())
    try:
        rows, total = manager.list(limit=0)
        assert total == 8
        assert [r["upid"] for r in rows] == [running, *reversed(done)]   # newest first

        def upids(**kw: object) -> list[str]:
            found, n = manager.list(limit=0, **kw)  # type: ignore[arg-type]
            assert n == len(found)
            return [r["upid"] for r in found]

        assert upids(running=True) == [running]
        assert upids(running=False) == [r["upid"] for r in rows]        # PBS: False = all
        assert upids(errors=True) == [running, done[2], done[1]]   # PBS keeps running ones
        assert upids(statusfilter=["warning"]) == [done[1]]
        assert upids(statusfilter=["ok", "error"]) == [done[6], done[5], done[4], done[3],
                                                       done[2], done[0]]
        assert upids(statusfilter=["unknown"]) == []
        assert upids(userfilter="alice") == [done[3], done[2]]
        assert upids(userfilter="!tok") == [done[3]]
        assert upids(typefilter="verif") == [running, done[4], done[1]]
        assert upids(store="store2") == [done[4], done[2]]
        assert upids(store="store1") == [running, done[6], done[5], done[3], done[1], done[0]]
        start = Upid.parse(done[0]).starttime
        assert upids(since=start + 3600) == []
        assert len(upids(since=start, until=start + 3600)) == 8
        assert upids(until=start - 1) == []
        with pytest.raises(InvalidName):
            manager.list(statusfilter=["fine"])
        with pytest.raises(ValueError):
            manager.list(start=-1)

        page1, total1 = manager.list(start=0, limit=3)
        page2, total2 = manager.list(start=3, limit=3)
        page3, total3 = manager.list(start=6, limit=3)
        assert total1 == total2 == total3 == 8
        assert [r["upid"] for r in page1 + page2 + page3] == [r["upid"] for r in rows]
        assert len(page3) == 2
        assert manager.list(start=8) == ([], 8)
    finally:
        gate.set()
    assert manager.wait(running, WAIT)
    assert manager.list(running=True) == ([], 0)


def test_log_paging(manager: TaskManager) -> None:
    upid = run(manager, lambda ctx: [ctx.log(f"line {i}") for i in range(1, 120)])
    lines, total, active = manager.read_log(upid)
    assert total == 120 and not active                 # 119 lines + TASK OK
    assert [line["n"] for line in lines] == list(range(1, 51))
    assert lines[0]["t"].endswith(": line 1")
    # PBS skips lines numbered below `start`: start=50 begins with line 50
    lines, _, _ = manager.read_log(upid, start=50, limit=50)
    assert [line["n"] for line in lines] == list(range(50, 100))
    lines, _, _ = manager.read_log(upid, start=100, limit=0)
    assert [line["n"] for line in lines] == list(range(100, 121))
    assert lines[-1]["t"].endswith(": TASK OK")
    assert manager.read_log(upid, start=500)[0:2] == ([], 120)
    assert len(manager.read_log(upid, limit=0)[0]) == 120


# -- hostile input ---------------------------------------------------------------------------

HOSTILE = [
    "..",
    "../../etc/passwd",
    "/etc/passwd",
    "UPID:node:0000007B:000000C8:00000001:65000000:../../../x:wid:root@pam:",
    "UPID:node:0000007B:000000C8:00000001:65000000:gc:wid:root@pam/../..:",
    "UPID:node:0000007B:000000C8:00000001:65000000:gc:wid:root@pam:/../x",
    "UPID:node:0000007B:000000C8:00000001:65000000:gc\x00:wid:root@pam:",
    "UPID:no_de:0000007B:000000C8:00000001:65000000:gc:wid:root@pam:",
    "UPID:node:7B:000000C8:00000001:65000000:gc:wid:root@pam:",
    "UPID:node:0000007B:000000C8:00000001:65000000:gc:wid:root@pam",
    "UPID:node:0000007B:000000C8:00000001:65000000:gc:w\\xZZ:root@pam:",
    "UPID:node:0000007B:000000C8:00000001:65000000:" + "t" * 300 + ":wid:root@pam:",
    "",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_upids_are_rejected(manager: TaskManager, bad: str) -> None:
    for call in (manager.status, manager.read_log, manager.abort, manager.wait):
        with pytest.raises(InvalidName):
            call(bad)  # type: ignore[operator]


def test_non_string_upid_is_rejected(manager: TaskManager) -> None:
    with pytest.raises(InvalidName):
        manager.status(123)  # type: ignore[arg-type]


def test_odd_worker_ids_are_escaped_in_file_names(manager: TaskManager) -> None:
    upid = run(manager, lambda ctx: None, "test", "../../etc/pass wd")
    parsed = Upid.parse(upid)
    assert parsed.worker_id == "../../etc/pass wd" and "/" not in upid
    assert manager.status(upid)["id"] == "../../etc/pass wd"
    assert manager.list()[0][0]["worker_id"] == "../../etc/pass wd"


# -- many at once ----------------------------------------------------------------------------

def test_many_tasks_from_many_threads(tmp_path: Path) -> None:
    m = TaskManager(tmp_path, progress_interval=0.0, durable=False)
    upids: list[str] = []
    lock = threading.Lock()

    def work(ctx: TaskContext) -> None:
        for i in range(20):
            ctx.log(f"step {i}")
            ctx.progress(i + 1, 20, "steps")
        if ctx.parsed_upid.task_id % 5 == 0:
            ctx.warn("every fifth warns")

    def spawner(n: int) -> None:
        for _ in range(n):
            upid = m.spawn("test", "store1", AUTH, work)
            with lock:
                upids.append(upid)
            m.list(limit=5)                            # readers race the writers

    threads = [threading.Thread(target=spawner, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for u in upids:
        assert m.wait(u, WAIT)
    assert len(set(upids)) == 40
    rows, total = m.list(limit=0)
    assert total == 40 and {r["upid"] for r in rows} == set(upids)
    assert all(r["status"] in ("OK", "WARNINGS: 1") for r in rows)
    lines = archive_lines(m)
    assert len(lines) == 40 and len({line.split()[0] for line in lines}) == 40
    assert Path(m.paths.active).read_text() == ""
    for u in upids:
        texts = log_texts(m, u)
        assert texts[:2] == ["step 0", "progress: 5% (1 of 20 steps)"]
        assert sum(t.startswith("TASK ") for t in texts) == 1


# -- formats ---------------------------------------------------------------------------------

def test_state_text_forms() -> None:
    assert str(TaskState.from_text(5, "OK")) == "OK"
    assert TaskState.from_text(5, "WARNINGS: 3") == TaskState("warning", 5, count=3)
    assert TaskState.from_text(5, "ERROR: disk full") == TaskState("error", 5,
                                                                   message="disk full")
    assert TaskState.from_text(5, "some message").kind == "error"
    assert TaskState.from_text(5, "unknown").kind == "unknown"
    assert TaskState("error", 1, message="x").result_text() == "TASK ERROR: x"
    assert TaskState("warning", 1, count=2).result_text() == "TASK WARNINGS: 2"
    assert one_line("  a\n b\r\n") == "a b" and one_line("") == "unknown error"
    assert one_line("unknown") == "error: unknown"

    # a line as PBS writes it to the archive (upper-case hex end time, bare message)
    upid = "UPID:pbs:000004D2:0001E240:00000003:65A1B2C3:verify:store1:root@pam:"
    entry = parse_list_line(f"{upid} 65A1B2FF chunk 'abc' missing")
    assert entry.state == TaskState("error", 0x65A1B2FF, message="chunk 'abc' missing")
    assert entry.render() == f"{upid} 65A1B2FF chunk 'abc' missing\n"
    assert parse_list_line(upid).state is None
    with pytest.raises(ChunkyardError):
        parse_list_line(f"{upid} 65A1B2FF")

    now = int(time.time())
    stamp = log_time(now)
    assert parse_log_time(stamp) == now and stamp[-6] in "+-" and stamp[-3] == ":"
    assert parse_log_time("2025-09-22T12:31:04Z") == 1758544264
    assert status_from_last_line(f"{stamp}: TASK OK", 1).kind == "ok"
    assert status_from_last_line(f"{stamp}: working", 1) == TaskState("unknown", now)
    assert status_from_last_line("garbage", 7) == TaskState("unknown", 7)


def test_task_aborted_message() -> None:
    assert str(TaskAborted()) == "abort requested - aborting task"


def test_spawn_refused_while_the_list_is_locked(tmp_path: Path) -> None:
    m = TaskManager(tmp_path, lock_timeout=0.1)
    fd = os.open(m.paths.lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)              # "another process" holds the list lock
        with pytest.raises(TaskError, match="unable to lock the task list"):
            m.spawn("test", None, AUTH, lambda ctx: None)
    finally:
        os.close(fd)
    assert list(Path(m.paths.task_dir).rglob("UPID*")) == []   # no orphan log
    upid = run(m, lambda ctx: None)
    assert m.status(upid)["exitstatus"] == "OK"


def test_lock_sessions_name_the_task(manager: TaskManager, tmp_path: Path) -> None:
    locks = LockManager(str(tmp_path / "locks"))
    seen: list[TaskInfo] = []

    def gc(ctx: TaskContext) -> None:
        with locks.session("garbage collection", task_id=ctx.upid):
            seen.extend(read_tasks(locks.lock_dir, os.getpid()))

    upid = run(manager, gc, "garbage_collection", "store1")
    assert TaskInfo("garbage collection", upid) in seen
