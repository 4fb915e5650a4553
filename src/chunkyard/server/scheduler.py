"""The job scheduler: runs each datastore's `gc-schedule` (PBS's proxy task scheduler).

Every `TICK` seconds it reads datastore.cfg; for each store with a `gc-schedule` it computes
the schedule's first event after the job's last run time (`jobs.JobState`) and, once that
is due, starts the store's GC job as `root@pam` (as PBS does) unless a GC task of this
server is still running on it. A store that cannot run GC (maintenance mode, missing
directory) or a schedule that does not parse is skipped and logged once per distinct
reason, then retried every tick.

PBS checks once a minute; this checks every second, so an event with seconds
(`*:*:0/30`) fires on time. Events are computed in the server's local time zone.
"""

from __future__ import annotations

import logging
import threading
import time

from chunkyard.config.calendar import CalendarEvent
from chunkyard.errors import ChunkyardError
from chunkyard.server.jobs import GC_JOB, load_job_state, start_gc_job
from chunkyard.server.state import ServerState

log = logging.getLogger("chunkyard.server")

TICK = 1.0
SCHEDULER_AUTHID = "root@pam"


def next_gc_run(state: ServerState, store: str, schedule: str) -> int | None:
    """When the store's GC job runs next (unix seconds), None if the schedule never fires;
    ValueError if it does not parse."""
    event = CalendarEvent.parse(schedule)
    return event.next_after(load_job_state(state, GC_JOB, store).last_run_time())


class Scheduler:
    """A daemon thread; `stop()` ends it (the server calls it before stopping tasks)."""

    def __init__(self, state: ServerState, tick: float = TICK) -> None:
        self.state = state
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._reported: dict[str, str] = {}  # store -> the last reason logged

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
        """Start every GC job due at `now`; their UPIDs."""
        stores, _ = self.state.config.read_datastore()
        started = []
        for section in stores.of_type("datastore"):
            schedule = section.props.get("gc-schedule")
            if not isinstance(schedule, str) or not schedule:
                self._reported.pop(section.id, None)
                continue
            upid = self._run_gc_if_due(section.id, schedule, now)
            if upid is not None:
                started.append(upid)
        return started

    def _run_gc_if_due(self, store: str, schedule: str, now: int) -> str | None:
        try:
            due = next_gc_run(self.state, store, schedule)
        except ValueError as e:
            self._report(store, f"invalid gc-schedule '{schedule}' of datastore {store}: {e}")
            return None
        if due is None or due > now or self._gc_running(store):
            return None
        try:
            upid = start_gc_job(self.state, store, SCHEDULER_AUTHID, schedule=schedule)
        except ChunkyardError as e:
            self._report(store, f"scheduled garbage collection of datastore {store} "
                                f"skipped: {e}")
            return None
        self._reported.pop(store, None)
        log.info("scheduled garbage collection of datastore %s started: %s", store, upid)
        return upid

    def _gc_running(self, store: str) -> bool:
        return any(t.worker_type == GC_JOB and t.worker_id == store
                   for t in self.state.tasks.running_upids())

    def _report(self, store: str, reason: str) -> None:
        if self._reported.get(store) != reason:
            self._reported[store] = reason
            log.warning("%s", reason)


__all__ = ["SCHEDULER_AUTHID", "TICK", "Scheduler", "next_gc_run"]
