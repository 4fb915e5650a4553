"""Snapshot operations under the lock protocol: forget, protection, notes (spec §1.7, §5).

forget and protection: NS S, GA S, SN X (and MF X for forget, as PBS's destroy takes the
manifest lock). Notes: NS S, GA S, MF X (an update of the manifest's unprotected part).
"""

from __future__ import annotations

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import MANIFEST_WAIT, LockBusy, LockSession, Mode
from chunkyard.errors import DatastoreError
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace


def forget_snapshot(ds: Datastore, ns: BackupNamespace, snap: BackupDir, *,
                    wait: float = 0.0) -> None:
    """Delete a snapshot (refused while protected or in use); an emptied group goes too."""
    with ds.locks.session(f"forget {snap}", wait=wait) as session:
        destroy_snapshot_locked(ds, session, ns, snap)
    remove_group_if_empty(ds, ns, snap.group)


def destroy_snapshot_locked(ds: Datastore, session: LockSession, ns: BackupNamespace,
                            snap: BackupDir) -> None:
    """Remove an unprotected snapshot under SN X and MF X (as PBS's destroy), taken in
    `session` with its wait and released afterwards, so one session can remove many."""
    with session.snapshot(ns, snap, Mode.EXCLUSIVE):
        ds.require_snapshot(ns, snap)
        with session.manifest(ns, snap):
            if ds.is_protected(ns, snap):
                raise DatastoreError(f"snapshot {snap} is protected")
            ds.remove_snapshot_dir(ns, snap)  # releasing SN and MF removes their lock files


def remove_group_if_empty(ds: Datastore, ns: BackupNamespace, group: BackupGroup) -> None:
    """PBS (new locking) removes a group whose last snapshot went, if its lock is free."""
    try:
        with ds.locks.session(f"clean up {group}", wait=0.0) as session:
            session.group(ns, group, Mode.EXCLUSIVE)
            if ds.group_exists(ns, group) and not ds.list_snapshots(ns, group):
                ds.remove_group_dir(ns, group)
                session.unlink_group_lock_files(ns, group)
    except LockBusy:
        pass


def get_protected(ds: Datastore, ns: BackupNamespace, snap: BackupDir) -> bool:
    ds.require_snapshot(ns, snap)
    return ds.is_protected(ns, snap)


def set_protected(ds: Datastore, ns: BackupNamespace, snap: BackupDir, protected: bool, *,
                  wait: float = 0.0) -> None:
    with ds.locks.session(f"set protection of {snap}", wait=wait) as session:
        session.snapshot(ns, snap, Mode.EXCLUSIVE)
        ds.require_snapshot(ns, snap)
        ds.set_protected(ns, snap, protected)


def get_notes(ds: Datastore, ns: BackupNamespace, snap: BackupDir) -> str:
    ds.require_snapshot(ns, snap)
    notes = ds.load_manifest(ns, snap).unprotected.get("notes")
    return notes if isinstance(notes, str) else ""


def set_notes(ds: Datastore, ns: BackupNamespace, snap: BackupDir, notes: str, *,
              wait: float = 0.0) -> None:
    with ds.locks.session(f"set notes of {snap}", wait=wait) as session:
        session.manifest(ns, snap, wait=max(wait, MANIFEST_WAIT))
        ds.require_snapshot(ns, snap)
        manifest = ds.load_manifest(ns, snap)
        manifest.unprotected["notes"] = notes
        ds.write_manifest(ns, snap, manifest)
