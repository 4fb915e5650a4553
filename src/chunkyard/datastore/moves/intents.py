"""The persistent intent log: a move's plan, durable before its first change.

One JSON file per running move in `<base>/.move-intents/`, written with fsync before the
first step and removed (under the move's locks) after the last. A file found there whose
locks are free belongs to a mover that died; `recovery` runs its plan again.

PBS ignores the directory: its listings accept only `ns`, `vm`, `ct` and `host` below the
base, and its GC looks only for `.fidx`/`.didx` files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import MOVE_INTENT_DIR as INTENT_DIR
from chunkyard.datastore.moves.plan import MovePlan
from chunkyard.errors import FormatError, NotFound

SUFFIX = ".json"
MAX_INTENT_SIZE = 256 * 1024 * 1024


def write(ds: Datastore, plan: MovePlan) -> str:
    """Persist `plan`; returns the intent's name."""
    name = f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
    data = json.dumps(plan.to_intent(), separators=(",", ":")).encode()
    for attempt in range(3):
        ds.backend.mkdir(INTENT_DIR, exist_ok=True)
        try:
            ds.backend.write_atomic(f"{INTENT_DIR}/{name}", data, fsync=True)
            return name
        except NotFound:  # another move's `remove` took the empty directory meanwhile
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def names(ds: Datastore) -> list[str]:
    """Intent files present, oldest first."""
    try:
        listing = ds.backend.list_dir(INTENT_DIR)
    except NotFound:
        return []
    return sorted(e.name for e in listing
                  if e.name.endswith(SUFFIX) and not e.name.startswith("."))


def exists(ds: Datastore, name: str) -> bool:
    return ds.backend.exists(f"{INTENT_DIR}/{name}")


def load(ds: Datastore, name: str) -> MovePlan:
    """Read and validate an intent; FormatError names the file if it is unusable."""
    key = f"{INTENT_DIR}/{name}"
    raw = ds.backend.read(key)
    if len(raw) > MAX_INTENT_SIZE:
        raise FormatError(f"move intent {key} is too large ({len(raw)} bytes)")
    try:
        return MovePlan.from_intent(json.loads(raw))
    except (ValueError, FormatError) as e:
        raise FormatError(f"move intent {key}: {e}") from None


def remove(ds: Datastore, name: str) -> None:
    with contextlib.suppress(NotFound):
        ds.backend.remove(f"{INTENT_DIR}/{name}")
    with contextlib.suppress(NotFound):
        ds.backend.rmdir(INTENT_DIR)  # only if empty; another move may have its own file
