"""The job scheduler: runs each datastore's `gc-schedule` and legacy `prune-schedule` (PBS's
proxy task scheduler).

Every `TICK` seconds it reads datastore.cfg; for each store and schedule it computes the
schedule's first event after the job's last run time (`jobs.JobState`) and, once that is
due, starts the job as `root@pam` (as PBS does) unless a task of that job is still running
in this server. A store that cannot run it (maintenance mode, missing directory) or a
schedule that does not parse is skipped and logged once per distinct reason, then retried
every tick.

PBS checks once a minute; this checks every second, so an event with seconds
(`*:*:0/30`) fires on time. Events are computed in the server's local time zone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from chunkyard.config.calendar import CalendarEvent
from chunkyard.errors import ChunkyardError
from chunkyard.server.jobs import (
    GC_JOB,
    PRUNE_JOB,
    load_job_state,
    start_gc_job,
    start_legacy_prune_job,
)
from chunkyard.server.state import ServerState

log = logging.getLogger("chunkyard.server")

TICK = 1.0
SCHEDULER_AUTHID = "root@pam"
JobStarter = Callable[[ServerState, str, str, str], str]  # (state, store, authid, schedule)
# datastore.cfg property -> (job type, what it is, how to start it)
SCHEDULES: dict[str, tuple[str, str, JobStarter]] = {
    "gc-schedule": (GC_JOB, "garbage collection", start_gc_job),
    "prune-schedule": (PRUNE_JOB, "prune", start_legacy_prune_job),
}


def next_run(state: ServerState, job_type: str, store: str, schedule: str) -> int | None:
    """When the store's job runs next (unix seconds), None if the schedule never fires;
    ValueError if it does not parse."""
    event = CalendarEvent.parse(schedule)
    return event.next_after(load_job_state(state, job_type, store).last_run_time())


class Scheduler:
    """A daemon thread; `stop()` ends it (the server calls it before stopping tasks)."""

    def __init__(self, state: ServerState, tick: float = TICK) -> None:
        self.state = state
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._reported: dict[tuple[str, str], str] = {}  # (job, store) -> the last reason

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self.run_due(int(time.time()))
            except Exception:  # never let one bad tick end scheduling
                log.exception("scheduler tick failed")

    def run_due(self, now: int) -> list[str]:
        """Start every job due at `now`; their UPIDs."""
        stores, _ = self.state.config.read_datastore()
        started = []
        for section in stores.of_type("datastore"):
            for prop, (job_type, what, start) in SCHEDULES.items():
                schedule = section.props.get(prop)
                if not isinstance(schedule, str) or not schedule:
                    self._reported.pop((job_type, section.id), None)
                    continue
                upid = self._run_if_due(job_type, what, start, section.id, schedule, now)
                if upid is not None:
                    started.append(upid)
        return started

    def _run_if_due(self, job_type: str, what: str, start: JobStarter, store: str,
                    schedule: str, now: int) -> str | None:
        key = (job_type, store)
        try:
            due = next_run(self.state, job_type, store, schedule)
        except ValueError as e:
            self._report(key, f"invalid {what} schedule '{schedule}' of datastore {store}: "
                              f"{e}")
            return None
        if due is None or due > now or self._running(job_type, store):
            return None
        try:
            upid = start(self.state, store, SCHEDULER_AUTHID, schedule)
        except ChunkyardError as e:
            self._report(key, f"scheduled {what} of datastore {store} skipped: {e}")
            return None
        self._reported.pop(key, None)
        log.info("scheduled %s of datastore %s started: %s", what, store, upid)
        return upid

    def _running(self, job_type: str, store: str) -> bool:
        return any(t.worker_type == job_type and t.worker_id == store
                   for t in self.state.tasks.running_upids())

    def _report(self, key: tuple[str, str], reason: str) -> None:
        if self._reported.get(key) != reason:
            self._reported[key] = reason
            log.warning("%s", reason)


__all__ = ["SCHEDULER_AUTHID", "SCHEDULES", "TICK", "Scheduler", "next_run"]
