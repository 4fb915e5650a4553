"""Group operations under the lock protocol: delete, change owner, notes (spec §1.2, §1.7).

delete: NS S, GA X. change owner and notes: NS S, GW X, GA S (so they fail while a backup
writes the group, as PBS's group lock makes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockKey, LockSession, Mode
from chunkyard.datastore.namespaces import DeleteStats
from chunkyard.errors import DatastoreError
from chunkyard.names import Authid, BackupGroup, BackupNamespace


def destroy_group_locked(ds: Datastore, session: LockSession, ns: BackupNamespace,
                         group: BackupGroup) -> DeleteStats:
    """Remove every unprotected snapshot, then the group if nothing protected remains.

    The session holds GA(group) X or NS(ns) X, which excludes every other user of the
    group's snapshots, so their stale lock files can be unlinked afterwards (rule 4).
    """
    stats = DeleteStats()
    for info in ds.list_snapshots(ns, group):
        if info.protected:
            stats.protected_snapshots += 1
            continue
        ds.remove_snapshot_dir(ns, info.dir, force=True)
        session.unlink_lock_file(LockKey.manifest(ns, info.dir))
        session.unlink_lock_file(LockKey.snapshot(ns, info.dir))
        stats.removed_snapshots += 1
    if stats.protected_snapshots == 0:
        ds.remove_group_dir(ns, group)
        stats.removed_groups = 1
        session.unlink_group_lock_files(ns, group)
    return stats


def delete_group(ds: Datastore, ns: BackupNamespace, group: BackupGroup, *,
                 error_on_protected: bool = True, wait: float = 0.0) -> DeleteStats:
    with ds.locks.session(f"delete group {group}", wait=wait) as session:
        session.group(ns, group, Mode.EXCLUSIVE)
        ds.require_group(ns, group)
        stats = destroy_group_locked(ds, session, ns, group)
    if stats.protected_snapshots and error_on_protected:
        raise DatastoreError(
            f"group {group} still has {stats.protected_snapshots} protected snapshot(s); "
            f"removed {stats.removed_snapshots}")
    return stats


@contextmanager
def _as_group_writer(ds: Datastore, ns: BackupNamespace, group: BackupGroup, operation: str,
                     wait: float) -> Iterator[None]:
    """NS S, GW X, GA S on an existing group: what re-owning or annotating it needs."""
    with ds.locks.session(f"{operation} {group}", wait=wait) as session:
        session.group_writer(ns, group)
        session.group(ns, group, Mode.SHARED)
        ds.require_group(ns, group)
        yield


def change_owner(ds: Datastore, ns: BackupNamespace, group: BackupGroup, new_owner: Authid, *,
                 wait: float = 0.0) -> None:
    with _as_group_writer(ds, ns, group, "change owner of", wait):
        ds.set_owner(ns, group, new_owner)


def get_group_notes(ds: Datastore, ns: BackupNamespace, group: BackupGroup) -> str:
    ds.require_group(ns, group)
    return ds.get_group_notes(ns, group)


def set_group_notes(ds: Datastore, ns: BackupNamespace, group: BackupGroup, notes: str, *,
                    wait: float = 0.0) -> None:
    with _as_group_writer(ds, ns, group, "set notes of", wait):
        ds.set_group_notes(ns, group, notes)
