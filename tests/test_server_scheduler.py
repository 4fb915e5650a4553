"""The GC schedule (`gc-schedule` of datastore.cfg): a real `chunkyard serve` runs GC when
its calendar event is due, shows `next-run`, keeps PBS's job state, and stops when the
schedule goes; and the scheduler's decisions at given times, in process, on real files."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkyard.config.calendar import CalendarEvent
from chunkyard.config.section import Section, SectionConfig
from chunkyard.names.upid import Upid
from chunkyard.server.jobs import GC_JOB, JobState, load_job_state, save_job_state
from chunkyard.server.scheduler import Scheduler
from chunkyard.server.state import ServerState
from tests.server_helpers import (
    API,
    Api,
    Server,
    data_of,
    error_of,
    login,
    prepare,
    start_server,
    stop,
    wait_task,
)

STORE = "/admin/datastore/store1"
CONFIG = "/config/datastore/store1"
EVERY_3S = "*:*:0/3"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    prepare(tmp_path / "data", tmp_path / "src")
    server = start_server(tmp_path / "data")
    try:
        yield server
    finally:
        assert stop(server) == 0, server.output()
        assert "Traceback" not in server.output()


def put(api: Api, path: str, data: dict[str, Any]) -> httpx.Response:
    return api.client.put(API + path, data=data, headers={"CSRFPreventionToken": api.csrf})


def gc_tasks(api: Api) -> list[dict[str, Any]]:
    tasks = data_of(api.get("/nodes/localhost/tasks", typefilter=GC_JOB, limit=500))
    return [t for t in tasks if t["worker_type"] == GC_JOB]


def wait_for(predicate: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_gc_runs_on_its_schedule_and_stops_without_it(srv: Server, tmp_path: Path) -> None:
    adm = login(srv.base)
    assert "next-run" not in data_of(adm.get(STORE + "/gc"))
    data_of(put(adm, CONFIG, {"gc-schedule": EVERY_3S,
                              "tuning": "gc-atime-safety-check=false"}))
    runs = wait_for(lambda: [t for t in gc_tasks(adm) if "endtime" in t][:2] if len(
        [t for t in gc_tasks(adm) if "endtime" in t]) >= 2 else None, 20)
    for task in runs:
        assert task["user"] == "root@pam" and task["status"] == "OK", task
        log = [line["t"] for line in data_of(adm.get(
            f"/nodes/localhost/tasks/{task['upid']}/log", limit=100))]
        wanted = f"task triggered by schedule '{EVERY_3S}'"
        assert any(line.endswith(wanted) for line in log), log
    starts = sorted(t["starttime"] for t in runs)
    assert starts[1] - starts[0] >= 3 and all(s % 3 == 0 for s in starts)

    status = data_of(adm.get(STORE + "/gc"))
    now = time.time()
    assert status["schedule"] == EVERY_3S and now - 4 <= status["next-run"] <= now + 4
    job = json.loads((tmp_path / "data" / "lib" / "jobstates" /
                      "garbage_collection-store1.json").read_text())
    assert set(job) <= {"started", "finished"}
    if "finished" in job:
        assert set(job["finished"]["state"]) <= {"ok", "warning"}

    data_of(put(adm, CONFIG, {"delete": "gc-schedule"}))
    time.sleep(1.5)  # a run that was starting finishes
    count = len(gc_tasks(adm))
    time.sleep(4)
    assert len(gc_tasks(adm)) == count
    after = data_of(adm.get(STORE + "/gc"))
    assert "schedule" not in after and "next-run" not in after


def test_the_legacy_prune_schedule_prunes_the_whole_store(srv: Server) -> None:
    """`prune-schedule` with `keep-*` in datastore.cfg (PBS turns these into a prune job):
    every group of every namespace is pruned on schedule, as root@pam."""
    adm = login(srv.base)
    before = data_of(adm.get(STORE + "/snapshots"))
    vm = [s for s in before if s["backup-type"] == "vm"]
    assert len(vm) == 2
    data_of(put(adm, CONFIG, {"prune-schedule": EVERY_3S, "keep-last": "1"}))

    def pruned() -> list[dict[str, Any]]:
        tasks = data_of(adm.get("/nodes/localhost/tasks", typefilter="prunejob"))
        return [t for t in tasks if "endtime" in t]

    (task, *_) = wait_for(pruned, 20)
    assert task["user"] == "root@pam" and task["status"] == "OK", task
    log = [line["t"] for line in data_of(adm.get(
        f"/nodes/localhost/tasks/{task['upid']}/log", limit=200))]
    assert any(line.endswith(f"task triggered by schedule '{EVERY_3S}'") for line in log)
    assert any("retention options: --keep-last 1" in line for line in log), log
    after = data_of(adm.get(STORE + "/snapshots"))
    assert [s["backup-time"] for s in after if s["backup-type"] == "vm"] == [
        max(s["backup-time"] for s in vm)]
    nested = data_of(adm.get(STORE + "/snapshots", ns="a"))
    assert len(nested) == 1  # the namespace's one snapshot is kept: keep-last 1
    data_of(put(adm, CONFIG, {"delete": "prune-schedule"}))


def test_an_invalid_schedule_is_refused(srv: Server) -> None:
    adm = login(srv.base)
    for bad in ("mon..funday", "25:00", "*:61", "x" * 300, "daily\nweekly"):
        error_of(put(adm, CONFIG, {"gc-schedule": bad}), 400)
    assert "schedule" not in data_of(adm.get(STORE + "/gc"))


def test_a_manual_gc_moves_the_next_scheduled_run(srv: Server) -> None:
    adm = login(srv.base)
    data_of(put(adm, CONFIG, {"gc-schedule": "hourly"}))
    upid = data_of(adm.post(STORE + "/gc"))
    assert wait_task(adm, upid)["exitstatus"] == "OK"
    status = data_of(adm.get(STORE + "/gc"))
    started = Upid.parse(upid).starttime
    assert status["next-run"] == CalendarEvent.parse("hourly").next_after(started)
    assert status["upid"] == upid and status["last-run-state"] == "OK"


# -- the scheduler's decisions, in process ---------------------------------------------------

def _with_schedule(state: ServerState, schedule: str) -> None:
    def edit(config: SectionConfig) -> None:
        section = config.lookup("datastore", "store1")
        config.put(Section("datastore", "store1", {
            **section.props, "gc-schedule": schedule,
            "tuning": {"gc-atime-safety-check": False}}))

    state.config.update_datastore(edit)


def test_scheduler_decisions(tmp_path: Path) -> None:
    state, _ = ServerState.open(tmp_path / "data", sparse=True)
    try:
        scheduler = Scheduler(state)
        now = int(time.time())
        assert scheduler.run_due(now) == []  # no schedule
        _with_schedule(state, "hourly")
        created = load_job_state(state, GC_JOB, "store1")  # the job starts existing now
        assert created.kind == "created" and abs(created.time - now) <= 2  # type: ignore[operator]
        next_hour = CalendarEvent.parse("hourly").next_after(created.last_run_time())
        assert next_hour is not None
        assert scheduler.run_due(next_hour - 1) == []  # not due yet
        (upid,) = scheduler.run_due(next_hour)
        assert scheduler.run_due(next_hour) == []  # running: not twice
        deadline = time.monotonic() + 20
        while state.tasks.running_upids() and time.monotonic() < deadline:
            time.sleep(0.05)
        job = load_job_state(state, GC_JOB, "store1")
        assert job.kind == "finished" and job.upid == upid and "ok" in (job.result or {})
        assert job.last_run_time() == Upid.parse(upid).starttime
        assert scheduler.run_due(next_hour - 1) == []  # the next run is still the next hour
        # an old last run: due at once
        save_job_state(state, GC_JOB, "store1", JobState("created", time=now - 7200))
        assert len(scheduler.run_due(now)) == 1
        _with_schedule(state, "2000-01-01")  # never again
        save_job_state(state, GC_JOB, "store1", JobState("created", time=now - 7200))
        deadline = time.monotonic() + 20
        while state.tasks.running_upids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.run_due(now) == []
    finally:
        state.shutdown(5)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"started": {"upid": "UPID:../x"}}',
                                 b'{"created": {"time": "soon"}}', b'{"a": 1, "b": 2}',
                                 b"\xff\xfe", b'{"finished": {"upid": 7}}'])
def test_an_unreadable_job_state_starts_the_job_anew(tmp_path: Path, raw: bytes) -> None:
    state, _ = ServerState.open(tmp_path / "data", sparse=True)
    try:
        path = tmp_path / "data" / "lib" / "jobstates" / "garbage_collection-store1.json"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)
        before = int(time.time())
        job = load_job_state(state, GC_JOB, "store1")
        assert job.kind == "created" and before <= job.last_run_time() <= time.time() + 1
        assert json.loads(path.read_text()) == {"created": {"time": job.time}}
    finally:
        state.shutdown(5)
