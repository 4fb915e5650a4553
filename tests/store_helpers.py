"""Helpers for tests of datastore operations: namespaces, backups, and lock holders that are
real child processes taking locks exactly as the operation they imitate."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.synchronize
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.datastore import namespaces, queries
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockKey, LockSession, Mode
from chunkyard.formats.crypt import CryptConfig
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace

ROOT = BackupNamespace.root()
OWNER = Authid.parse("root@pam")
T0 = 1_700_000_000
CTX = multiprocessing.get_context("fork")
S, X = Mode.SHARED, Mode.EXCLUSIVE


def ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def backup(ds: Datastore, src: Path, namespace: str, group: BackupGroup, when: int,
           crypt: CryptConfig | None = None) -> BackupDir:
    req = BackupRequest(namespace=ns(namespace), group=group, backup_time=when,
                        archives=[ArchiveSpec.parse(f"root.tar:{src}")], owner=OWNER,
                        crypt=crypt)
    return run_backup(ds, req).snapshot


def make_namespaces(ds: Datastore, *names: str) -> None:
    for name in names:
        namespaces.create_namespace(ds, ns(name))


def listed(ds: Datastore, parent: str = "", depth: int = 7) -> list[str]:
    return [row["ns"] for row in queries.namespace_list(ds, ns(parent), depth)]


def ns_dir(ds: Datastore, namespace: str) -> Path:
    return Path(ds.path, *ns(namespace).path_parts())


def lock_dir_of(ds: Datastore, namespace: str) -> Path:
    return Path(ds.locks.namespace_lock_dir(ns(namespace)))


def snapshot_lock_files(ds: Datastore, namespace: str, snap: BackupDir) -> list[Path]:
    return [Path(ds.locks.lock_file_path(key(ns(namespace), snap)))
            for key in (LockKey.snapshot, LockKey.manifest)]


# -- a lock holder in another process ----------------------------------------------------

Take = Callable[[LockSession], object]


def _hold(path: str, operation: str, take: Take, ready: multiprocessing.synchronize.Event,
          release: multiprocessing.synchronize.Event) -> None:
    store = Datastore.open(path)
    with store.locks.session(operation) as session:
        take(session)
        ready.set()
        release.wait(60)


@contextlib.contextmanager
def holding(ds: Datastore, operation: str, take: Take,
            release_after: float | None = None) -> Iterator[int]:
    """Run a child process that takes locks with `take` and keeps them until the block ends
    (or `release_after` seconds after it got them); yields the child's pid."""
    ready, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_hold, args=(ds.path, operation, take, ready, release),
                       daemon=True)
    proc.start()
    timer: threading.Timer | None = None
    try:
        deadline = time.monotonic() + 20
        while not ready.wait(0.02):
            assert proc.is_alive(), f"lock holder died (exit code {proc.exitcode})"
            assert time.monotonic() < deadline, "lock holder did not get its locks"
        if release_after is not None:
            timer = threading.Timer(release_after, release.set)
            timer.start()
        assert proc.pid is not None
        yield proc.pid
    finally:
        if timer is not None:
            timer.cancel()
        release.set()
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert proc.exitcode == 0


def reader_of(namespace: str, snap: BackupDir) -> Take:
    """A restore's locks: NS S, GA S, SN(s) S."""
    return lambda s: s.snapshot(ns(namespace), snap, S)


def backup_writer(namespace: str, group: BackupGroup, base: BackupDir | None, new: int) -> Take:
    """A running backup's locks: NS S, GW X, GA S, SN(base) S, SN(new) X."""
    def take(s: LockSession) -> None:
        s.group_writer(ns(namespace), group)
        s.group(ns(namespace), group, S)
        if base is not None:
            s.snapshot(ns(namespace), base, S)
        s.snapshot(ns(namespace), BackupDir(group, new), X)
    return take


def assert_names_holder(err: pytest.ExceptionInfo[LockBusy], pid: int, operation: str) -> None:
    message = str(err.value)
    assert f"pid {pid} " in message, message
    assert operation in message, message
    assert [h.pid for h in err.value.holders] == [pid]
