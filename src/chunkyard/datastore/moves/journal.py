"""The move journal: what GC's mark phase must not miss while moves rename directories.

GC walks the tree without namespace locks, so a directory renamed during the walk could be
seen at neither place. Before renaming, a mover appends the destination (a datastore key: a
namespace, group or snapshot directory) here under JR; at the end of its mark phase GC calls
`drain`, which marks every index under each journaled path and empties the journal only if
all of them were marked. Invariant: if a destination exists, its journal entry exists.

The journal lives next to the lock files, on tmpfs: a reboot aborts any GC, and the next one
starts with a fresh walk, so nothing here needs to outlive the machine (PBS 4.1.9's reasoning,
spec pbs-move-series §7.1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from chunkyard.datastore.backend import validate_key
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockSession
from chunkyard.errors import ChunkyardError, InvalidName

JOURNAL_DATA_FILE = "move-journal"


def journal_path(ds: Datastore) -> str:
    return os.path.join(ds.locks.lock_dir, JOURNAL_DATA_FILE)


def append(ds: Datastore, session: LockSession, keys: Iterable[str]) -> None:
    """Append destination keys under JR (the session's other locks rank below it)."""
    lines = "".join(validate_key(k, allow_root=True) + "\n" for k in keys)
    if not lines:
        return
    with session.journal():
        os.makedirs(ds.locks.lock_dir, exist_ok=True)
        fd = os.open(journal_path(ds), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            os.write(fd, lines.encode())
        finally:
            os.close(fd)


def entries(ds: Datastore) -> list[str]:
    """The journaled keys, oldest first (read without JR: for inspection and tests)."""
    try:
        with open(journal_path(ds), encoding="utf-8", errors="surrogateescape") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


@dataclass
class DrainResult:
    """What `drain` did: `truncated` is False when any index failed to mark."""

    paths: int = 0
    indexes: int = 0
    ghosts: int = 0      # journaled paths that do not exist (a move that never renamed)
    invalid: int = 0     # lines that are not datastore keys (skipped, dropped)
    failures: list[str] = field(default_factory=list)
    truncated: bool = False


def drain(ds: Datastore, session: LockSession, mark: Callable[[str], None]) -> DrainResult:
    """GC's last act of phase 1: `mark(index_key)` for every index under each journaled path.

    Held under JR, so no mover appends meanwhile. A path that does not exist is a ghost (its
    move failed or was cut short before the rename) and is skipped. The journal is emptied
    only if every `mark` succeeded; otherwise it stays for the next GC.
    """
    result = DrainResult()
    with session.journal():
        keys = list(dict.fromkeys(entries(ds)))
        for key in keys:
            try:
                validate_key(key, allow_root=True)
            except InvalidName:
                result.invalid += 1
                continue
            result.paths += 1
            found = ds.find_index_files(key)
            if found is None:
                result.ghosts += 1
                continue
            for index_key in found:
                try:
                    mark(index_key)
                    result.indexes += 1
                except (ChunkyardError, OSError) as e:
                    result.failures.append(f"{index_key}: {e}")
        if not result.failures:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(journal_path(ds), 0)
            result.truncated = True
    return result
