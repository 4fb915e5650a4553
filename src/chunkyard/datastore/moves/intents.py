"""The persistent intent log: a move's plan, durable before its first change.

One JSON file per running move in `<base>/.move-intents/`, written with fsync before the
first step and removed (under the move's locks) after the last. Its mover holds an `flock`
on the file from writing it until removing it, so a file that can be flocked (and whose
plan's locks are free) belongs to a mover that died; `recovery` runs its plan again. The
flock matters at the end of a move, when the mover has already unlinked the stale lock files
of the old paths and a newcomer could lock fresh ones.

PBS ignores the directory: its listings accept only `ns`, `vm`, `ct` and `host` below the
base, and its GC looks only for `.fidx`/`.didx` files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import MOVE_INTENT_DIR as INTENT_DIR
from chunkyard.datastore.moves.plan import MovePlan
from chunkyard.errors import AlreadyExists, DatastoreError, FormatError, NotFound

SUFFIX = ".json"
MAX_INTENT_SIZE = 256 * 1024 * 1024


@dataclass
class Intent:
    """An intent file and the flock its holder keeps on it (`fd`, None once released)."""

    name: str
    fd: int | None


def write(ds: Datastore, plan: MovePlan) -> Intent:
    """Persist `plan` and hold its intent (the mover's flock)."""
    name = f"{time.time_ns()}-{os.getpid()}{SUFFIX}"
    data = json.dumps(plan.to_intent(), separators=(",", ":")).encode()
    for attempt in range(10):
        try:
            ds.backend.mkdir(INTENT_DIR, exist_ok=True)
            ds.backend.write_atomic(f"{INTENT_DIR}/{name}", data, fsync=True,
                                    tmp_name=_tmp_name(name))
            break
        except (NotFound, AlreadyExists):
            # another move's `remove` (or a recovery) took the empty directory meanwhile
            if attempt == 9:
                raise
    intent = _flock(ds, name, blocking=True)  # a recovery may hold it for a moment
    if intent is None:
        raise DatastoreError(f"the move intent {name} vanished right after it was written")
    return intent


def claim(ds: Datastore, name: str) -> Intent | None:
    """Hold an intent found on disk, or None if its mover (or another recovery) holds it or
    it is gone."""
    return _flock(ds, name, blocking=False)


def release(intent: Intent) -> None:
    """Drop the flock (idempotent); the file stays for recovery."""
    fd, intent.fd = intent.fd, None
    if fd is not None:
        os.close(fd)


def _flock(ds: Datastore, name: str, *, blocking: bool) -> Intent | None:
    path = ds.backend.local_path(f"{INTENT_DIR}/{name}")
    if path is None:
        raise DatastoreError("move intents need a datastore on a local filesystem")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DatastoreError(f"cannot open the move intent {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return Intent(name, fd)


def _tmp_name(name: str) -> str:
    """`.<name>.tmp`: hidden from `names`, and carrying the writer's pid (in `name`)."""
    return f".{name}.tmp"


def remove_dead_writers_temp_files(ds: Datastore) -> None:
    """Temp files of writers killed before their rename (their pid is gone), then the
    directory itself if nothing is left in it."""
    try:
        listing = ds.backend.list_dir(INTENT_DIR)
    except NotFound:
        return
    for e in listing:
        m = _TMP_RE.fullmatch(e.name)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(NotFound):
                ds.backend.remove(f"{INTENT_DIR}/{e.name}")
    with contextlib.suppress(NotFound):
        ds.backend.rmdir(INTENT_DIR)  # only if empty


_TMP_RE = re.compile(r"\.\d+-(\d+)\.json\.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def remove(ds: Datastore, intent: Intent) -> None:
    """Delete a finished move's intent (still holding it), then release it."""
    try:
        with contextlib.suppress(NotFound):
            ds.backend.remove(f"{INTENT_DIR}/{intent.name}")
        with contextlib.suppress(NotFound):
            ds.backend.rmdir(INTENT_DIR)  # only if empty; another move may have its own
    finally:
        release(intent)
