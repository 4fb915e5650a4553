"""Complete moves that were cut short (kill -9, power loss): roll forward, never back.

Called by `Datastore.open` when the intent directory exists. For each intent, its locks are
taken without waiting: a live mover still holds them (it releases them only after removing
its intent), so a busy lock means "in progress, not ours" and the intent is left alone. Once
the locks are ours and the intent is still there, its mover is dead; its plan runs again,
each step skipping what is already done.
"""

from __future__ import annotations

import logging

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy
from chunkyard.datastore.moves import intents
from chunkyard.datastore.moves.executor import execute
from chunkyard.errors import ChunkyardError

log = logging.getLogger("chunkyard.moves")


def complete_interrupted_moves(ds: Datastore) -> list[str]:
    """Finish every abandoned move; returns a description of each one completed.

    Failures are logged as warnings and leave the intent for the next open: the datastore
    stays usable, and each snapshot is in exactly one place whatever step the move reached.
    """
    completed: list[str] = []
    for name in intents.names(ds):
        try:
            plan = intents.load(ds, name)
        except ChunkyardError as e:
            log.warning("cannot complete an interrupted move: %s", e)
            continue
        try:
            with ds.locks.session(f"complete interrupted move of {plan.describe()}",
                                  wait=0.0) as session:
                session.lock_all(plan.locks)
                if not intents.exists(ds, name):
                    continue  # its mover finished between our listing and our locking
                execute(ds, session, plan, intent=name)
        except LockBusy:
            continue  # its mover is alive, or someone works where it moved: next open
        except ChunkyardError as e:
            log.warning("cannot complete the interrupted move of %s: %s", plan.describe(), e)
            continue
        log.warning("completed the interrupted move of %s", plan.describe())
        completed.append(plan.describe())
    return completed
