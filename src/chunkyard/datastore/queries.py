"""Read-only listings in the shape of PBS's API (spec §11.3): groups, snapshots, namespaces.

Listing takes no locks, as in PBS: it reads a directory tree that may change underneath, and
entries that vanish mid-listing are skipped rather than reported as errors.
"""

from __future__ import annotations

from typing import Any

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import MANIFEST_BLOB_NAME
from chunkyard.errors import ChunkyardError, NotFound
from chunkyard.names import BackupGroup, BackupNamespace


def group_list(ds: Datastore, ns: BackupNamespace) -> list[dict[str, Any]]:
    ds.require_namespace(ns)
    rows: list[dict[str, Any]] = []
    for group in ds.list_groups(ns):
        try:
            snapshots = ds.list_snapshots(ns, group)
            owner = str(ds.get_owner(ns, group))
        except ChunkyardError:
            continue
        finished = [s for s in snapshots if s.finished]
        row: dict[str, Any] = {
            "backup-type": group.type.value, "backup-id": group.id,
            "last-backup": finished[-1].dir.time if finished else None,
            "backup-count": len(finished),
            "files": list(finished[-1].files) if finished else [],
            "owner": owner,
        }
        notes = ds.get_group_notes(ns, group)
        if notes:
            row["comment"] = notes.splitlines()[0]
        rows.append(row)
    return rows


def snapshot_list(ds: Datastore, ns: BackupNamespace,
                  group: BackupGroup | None = None) -> list[dict[str, Any]]:
    ds.require_namespace(ns)
    if group is not None:
        ds.require_group(ns, group)
    groups = [group] if group is not None else ds.list_groups(ns)
    rows: list[dict[str, Any]] = []
    for g in groups:
        try:
            owner = str(ds.get_owner(ns, g))
        except ChunkyardError:
            owner = None
        try:
            snapshots = ds.list_snapshots(ns, g)
        except NotFound:  # deleted since list_groups: skipped, as the listing promises
            continue
        for info in snapshots:
            row: dict[str, Any] = {
                "backup-type": g.type.value, "backup-id": g.id,
                "backup-time": info.dir.time, "protected": info.protected,
            }
            if owner is not None:
                row["owner"] = owner
            if info.finished:
                try:
                    _describe_finished(ds, ns, info.dir, info.files, row)
                except ChunkyardError:
                    row["files"] = [{"filename": f} for f in info.files]
            else:
                row["files"] = [{"filename": f} for f in info.files]
            rows.append(row)
    return rows


def _describe_finished(ds: Datastore, ns: BackupNamespace, snap: Any, on_disk: list[str],
                       row: dict[str, Any]) -> None:
    raw = ds.load_manifest_raw(ns, snap)
    manifest = ds.load_manifest(ns, snap)
    files: list[dict[str, Any]] = [
        {"filename": f.filename, "crypt-mode": f.crypt_mode, "size": f.size}
             for f in manifest.files]
    files.append({"filename": MANIFEST_BLOB_NAME,
                  "crypt-mode": "sign-only" if manifest.signature else "none",
                  "size": len(raw)})
    listed = {f["filename"] for f in files}
    files += [{"filename": name} for name in on_disk if name not in listed]
    row["files"] = files
    row["size"] = sum(int(f.get("size") or 0) for f in files)
    notes = manifest.unprotected.get("notes")
    if isinstance(notes, str) and notes:
        row["comment"] = notes.splitlines()[0]
    verify = manifest.unprotected.get("verify_state")
    if isinstance(verify, dict):
        row["verification"] = verify
    fingerprint = manifest.unprotected.get("key-fingerprint")
    if isinstance(fingerprint, str):
        row["fingerprint"] = fingerprint


def namespace_list(ds: Datastore, parent: BackupNamespace, max_depth: int) -> list[dict[str, Any]]:
    ds.require_namespace(parent)
    return [{"ns": str(ns)} for ns in ds.iter_namespaces(parent, max_depth)]
