"""Complete moves that were cut short (kill -9, power loss): roll forward, never back.

Called by `Datastore.open` when the intent directory exists. An intent whose flock is held
belongs to a live mover and is left alone. A claimed intent's plan locks are then taken
without waiting (busy: someone works where the move goes; the next open tries again). Once
both are ours and the intent is still there, its mover is dead; its plan runs again, each
step skipping what is already done.
"""

from __future__ import annotations

import logging

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy
from chunkyard.datastore.moves import intents
from chunkyard.datastore.moves.executor import execute
from chunkyard.errors import ChunkyardError, NotFound

log = logging.getLogger("chunkyard.moves")


def complete_interrupted_moves(ds: Datastore) -> list[str]:
    """Finish every abandoned move; returns a description of each one completed.

    Failures are logged as warnings and leave the intent for the next open: the datastore
    stays usable, and each snapshot is in exactly one place whatever step the move reached.
    """
    completed: list[str] = []
    for name in intents.names(ds):
        intent = intents.claim(ds, name)
        if intent is None:
            continue  # its mover is alive (or it finished meanwhile)
        try:
            done = _complete(ds, intent)
        finally:
            intents.release(intent)
        if done is not None:
            completed.append(done)
    intents.remove_dead_writers_temp_files(ds)
    return completed


def _complete(ds: Datastore, intent: intents.Intent) -> str | None:
    try:
        plan = intents.load(ds, intent.name)
    except NotFound:
        return None  # finished between our listing and our claim
    except ChunkyardError as e:
        log.warning("cannot complete an interrupted move: %s", e)
        return None
    try:
        with ds.locks.session(f"complete interrupted move of {plan.describe()}",
                              wait=0.0) as session:
            session.lock_all(plan.locks)
            if not intents.exists(ds, intent.name):
                return None
            execute(ds, session, plan, intent=intent)
    except LockBusy:
        return None  # someone works where the move goes: the next open completes it
    except ChunkyardError as e:
        log.warning("cannot complete the interrupted move of %s: %s", plan.describe(), e)
        return None
    log.warning("completed the interrupted move of %s", plan.describe())
    return plan.describe()
