"""Per-store status, snapshot files and downloads, notes, protection, owner, deletion
(spec §11.3), below `/admin/datastore/{store}`.

Privileges are checked first (`auth.checks.REQUIREMENTS`: full privilege, or the partial one
plus ownership of the group), before anything is looked up, so a caller without access gets
403 whether or not the object exists. Changes go through the library's lock-taking
operations (`groups`, `snapshots`) and never wait for a lock (`wait=0`): a busy object is an
error, as in PBS.

Downloads are raw handlers: the result is a Starlette `Response` (octet-stream) instead of
PBS's JSON envelope. `download` streams the file as it is on disk; `download-decoded` streams
an index's chunks decoded one by one (the index checksum and size checked against the
manifest first) or a blob decoded, and refuses encrypted files. File names are archive names
(SAFE_ID ending in `.blob`, `.fidx`, `.didx`), never paths, so nothing outside the snapshot
directory can be named. Like PBS, downloads take no snapshot lock: the file is opened (an
index read whole) before the response starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from starlette.responses import Response, StreamingResponse

from chunkyard.datastore import groups as group_ops
from chunkyard.datastore import snapshots as snapshot_ops
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import MANIFEST_BLOB_NAME, file_key
from chunkyard.datastore.maintenance.gc import load_status
from chunkyard.errors import ChunkyardError, DatastoreError, FormatError
from chunkyard.formats.blob import blob_kind, decode_blob, decode_chunk
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import CryptMode
from chunkyard.names import (
    Authid,
    BackupDir,
    BackupGroup,
    BackupNamespace,
    validate_archive_name,
)
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH
from chunkyard.server.app import Call, Endpoint
from chunkyard.server.auth.acl import acl_path_for
from chunkyard.server.auth.checks import (
    REQUIREMENTS,
    GroupAccess,
    check_change_owner,
    check_group_access,
    check_ns_privs_full,
    check_privs,
    is_backup_owner,
    namespace_group_access,
)
from chunkyard.server.auth.privileges import Privilege
from chunkyard.server.endpoints.common import (
    BACKUP_ID,
    BACKUP_TIME,
    BACKUP_TYPE,
    NS,
    STORE,
    bool_param,
    group_of,
    ns_of,
)
from chunkyard.server.params import ApiError, Param

log = logging.getLogger("chunkyard.server")

PREFIX = "/admin/datastore/{store}"
OCTET_STREAM = "application/octet-stream"
READ_SIZE = 256 * 1024

GROUP = {"store": STORE, "ns": NS, "backup-type": BACKUP_TYPE, "backup-id": BACKUP_ID}
SNAPSHOT = {**GROUP, "backup-time": BACKUP_TIME}
FILE_NAME = Param(optional=False, max_length=255, check=validate_archive_name)


# -- helpers --------------------------------------------------------------------------------

def snapshot_of(params: dict[str, Any]) -> BackupDir:
    backup_time = params["backup-time"]
    assert isinstance(backup_time, int)
    return BackupDir(group_of(params), backup_time)


def _checked_group(call: Call, requirement: str, *, write: bool = False
                   ) -> tuple[Datastore, BackupNamespace, BackupGroup]:
    """The privilege check of `requirement` on the call's group, then its datastore."""
    store, ns, group = call.params["store"], ns_of(call.params), group_of(call.params)
    state = call.state
    check_group_access(call.acl, call.caller, store, ns, REQUIREMENTS[requirement],
                       lambda: state.datastore(store).get_owner(ns, group))
    return state.datastore(store, write=write), ns, group


def _checked_snapshot(call: Call, requirement: str, *, write: bool = False
                      ) -> tuple[Datastore, BackupNamespace, BackupDir]:
    ds, ns, _ = _checked_group(call, requirement, write=write)
    return ds, ns, snapshot_of(call.params)


# -- status ---------------------------------------------------------------------------------

def _disk_usage(path: str) -> dict[str, int]:
    """PBS's `disk_usage`: statfs of the base, in bytes."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return {"total": total, "used": total - st.f_bfree * st.f_frsize,
            "avail": st.f_bavail * st.f_frsize}


def _counts(call: Call, ds: Datastore, store: str, list_all: bool) -> dict[str, Any]:
    """Groups and snapshots per type over the whole store, of the groups the caller may see
    (PBS `get_snapshots_count`: all with Audit, else owned ones)."""
    counts: dict[str, dict[str, int]] = {}
    for ns in ds.iter_namespaces(BackupNamespace.root(), MAX_NAMESPACE_DEPTH):
        access = namespace_group_access(call.acl, call.caller, store, ns)
        if access is GroupAccess.NONE:
            continue
        try:
            found = ds.list_groups(ns)
        except ChunkyardError:  # removed meanwhile
            continue
        for group in found:
            try:
                if (not list_all or access is GroupAccess.OWNED) and \
                        not is_backup_owner(ds.get_owner(ns, group), call.caller):
                    continue
                snapshots = len(ds.list_snapshots(ns, group))
            except ChunkyardError:
                continue
            row = counts.setdefault(group.type.value, {"groups": 0, "snapshots": 0})
            row["groups"] += 1
            row["snapshots"] += snapshots
    return counts


def datastore_status(call: Call) -> dict[str, Any]:
    store = call.params["store"]
    path = acl_path_for(store)
    check_privs(call.acl, call.caller, path,
                Privilege.DATASTORE_AUDIT | Privilege.DATASTORE_BACKUP, partial=True)
    audit = bool(call.acl.privileges(call.caller, path) & Privilege.DATASTORE_AUDIT)
    ds = call.state.datastore(store)
    result: dict[str, Any] = _disk_usage(ds.path)
    if call.params["verbose"]:
        result["counts"] = _counts(call, ds, store, list_all=audit)
        if audit:
            result["gc-status"] = {k: v for k, v in load_status(ds).to_json().items()
                                   if v is not None}
    result["backend-type"] = "filesystem"
    return result


# -- files and downloads --------------------------------------------------------------------

def list_files(call: Call) -> list[dict[str, Any]]:
    """PBS `list_snapshot_files`: the manifest's files, the manifest itself, then other
    archive files on disk (without size); an error if there is no manifest."""
    ds, ns, snap = _checked_snapshot(call, "list-snapshot-files")
    ds.require_snapshot(ns, snap)
    raw = ds.load_manifest_raw(ns, snap)
    manifest = ds.load_manifest(ns, snap)
    files: list[dict[str, Any]] = [
        {"filename": f.filename, "crypt-mode": str(f.crypt_mode), "size": f.size}
        for f in manifest.files]
    files.append({"filename": MANIFEST_BLOB_NAME,
                  "crypt-mode": "sign-only" if manifest.signature else "none",
                  "size": len(raw)})
    listed = {f["filename"] for f in files}
    on_disk = ds.snapshot_info(ns, snap).files
    files += [{"filename": name} for name in on_disk if name not in listed]
    return files


def _stream_file(f: BinaryIO) -> Iterator[bytes]:
    try:
        while piece := f.read(READ_SIZE):
            yield piece
    finally:
        f.close()


def download(call: Call) -> Response:
    """The raw file, byte for byte as on disk."""
    ds, ns, snap = _checked_snapshot(call, "download")
    name = call.params["file-name"]
    ds.require_snapshot(ns, snap)
    f = ds.backend.open_read(file_key(ns, snap, name))  # NotFound: 404
    try:
        size = os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise
    return StreamingResponse(_stream_file(f), media_type=OCTET_STREAM,
                             headers={"content-length": str(size)})


def _stream_chunks(ds: Datastore, index: FixedIndex | DynamicIndex, what: str
                   ) -> Iterator[bytes]:
    """The decoded chunks; a chunk that fails to load or decode ends the response early
    (the status is sent already), so the client sees fewer bytes than Content-Length."""
    store = ds.chunk_store
    for i, digest in enumerate(index.iter_digests()):
        start, end = index.chunk_range(i)
        try:
            data = decode_chunk(store.load(digest), digest, expected_size=end - start)
        except (ChunkyardError, OSError) as e:
            log.error("download-decoded of %s stopped at chunk %s: %s", what, digest.hex(), e)
            return
        yield data


def download_decoded(call: Call) -> Response:
    """An index's content reassembled from its chunks, or a blob's decoded content."""
    ds, ns, snap = _checked_snapshot(call, "download-decoded")
    name: str = call.params["file-name"]
    ds.require_snapshot(ns, snap)
    manifest = ds.load_manifest(ns, snap)
    info = next((f for f in manifest.files if f.filename == name), None)
    if info is not None and info.crypt_mode == CryptMode.ENCRYPT:
        raise ApiError(f"cannot decode '{name}' - is encrypted")
    if name.endswith(".blob"):
        raw = ds.read_file(ns, snap, name)
        if blob_kind(raw).encrypted:
            raise ApiError(f"cannot decode '{name}' - is encrypted")
        data = decode_blob(raw)
        return Response(data, media_type=OCTET_STREAM)
    index = ds.load_index(ns, snap, name)
    if info is None:
        raise FormatError(f"manifest does not contain file '{name}'")
    if index.size != info.size:
        raise FormatError(f"wrong size for file '{name}' ({info.size} != {index.size})")
    if index.csum() != info.csum:
        raise FormatError(f"wrong checksum for file '{name}'")
    return StreamingResponse(_stream_chunks(ds, index, f"{name} of {snap}"),
                             media_type=OCTET_STREAM,
                             headers={"content-length": str(index.size)})


# -- notes, protection, owner ---------------------------------------------------------------

def get_notes(call: Call) -> str:
    ds, ns, snap = _checked_snapshot(call, "get-notes")
    return snapshot_ops.get_notes(ds, ns, snap)


def set_notes(call: Call) -> None:
    ds, ns, snap = _checked_snapshot(call, "set-notes", write=True)
    snapshot_ops.set_notes(ds, ns, snap, call.params["notes"], wait=0.0)


def get_group_notes(call: Call) -> str:
    ds, ns, group = _checked_group(call, "get-group-notes")
    return group_ops.get_group_notes(ds, ns, group)


def set_group_notes(call: Call) -> None:
    ds, ns, group = _checked_group(call, "set-group-notes", write=True)
    group_ops.set_group_notes(ds, ns, group, call.params["notes"], wait=0.0)


def get_protected(call: Call) -> bool:
    ds, ns, snap = _checked_snapshot(call, "get-protected")
    return snapshot_ops.get_protected(ds, ns, snap)


def set_protected(call: Call) -> None:
    ds, ns, snap = _checked_snapshot(call, "set-protected", write=True)
    snapshot_ops.set_protected(ds, ns, snap, call.params["protected"], wait=0.0)


def change_owner(call: Call) -> None:
    """Modify: any active new owner; Backup alone: between the caller and its own tokens."""
    params = call.params
    store, ns, group = params["store"], ns_of(params), group_of(params)
    new_owner: Authid = params["new-owner"]
    req = REQUIREMENTS["change-owner"]
    # refused before the group is looked up, so its existence stays hidden
    check_ns_privs_full(call.acl, call.caller, store, ns, req.full, req.partial)
    ds = call.state.datastore(store, write=True)
    owner = ds.get_owner(ns, group)
    check_change_owner(call.acl, call.caller, store, ns, owner, new_owner)
    if not call.state.accounts.is_active(new_owner, int(time.time())):
        what = "user" if new_owner.token is None else "API token"
        raise DatastoreError(f"{what} '{new_owner}' is inactive or non-existent")
    group_ops.change_owner(ds, ns, group, new_owner, wait=0.0)


# -- deletion -------------------------------------------------------------------------------

def delete_group(call: Call) -> dict[str, int]:
    ds, ns, group = _checked_group(call, "delete-group", write=True)
    stats = group_ops.delete_group(ds, ns, group,
                                   error_on_protected=call.params["error-on-protected"],
                                   wait=0.0)
    return stats.as_dict()


def delete_snapshot(call: Call) -> None:
    ds, ns, snap = _checked_snapshot(call, "delete-snapshot", write=True)
    snapshot_ops.forget_snapshot(ds, ns, snap, wait=0.0)


ENDPOINTS = [
    Endpoint("GET", PREFIX + "/status", datastore_status,
             {"store": STORE, "verbose": bool_param(False)},
             description="Disk usage of the datastore; counts and GC status with verbose."),
    Endpoint("GET", PREFIX + "/files", list_files, SNAPSHOT,
             description="The files of a finished snapshot."),
    Endpoint("GET", PREFIX + "/download", download, {**SNAPSHOT, "file-name": FILE_NAME},
             description="A snapshot file's raw bytes (application/octet-stream)."),
    Endpoint("GET", PREFIX + "/download-decoded", download_decoded,
             {**SNAPSHOT, "file-name": FILE_NAME},
             description="A blob decoded or an index's content (not for encrypted files)."),
    Endpoint("GET", PREFIX + "/notes", get_notes, SNAPSHOT,
             description="A snapshot's notes."),
    Endpoint("PUT", PREFIX + "/notes", set_notes,
             {**SNAPSHOT, "notes": Param(optional=False)},
             description="Set a snapshot's notes."),
    Endpoint("GET", PREFIX + "/group-notes", get_group_notes, GROUP,
             description="A group's notes."),
    Endpoint("PUT", PREFIX + "/group-notes", set_group_notes,
             {**GROUP, "notes": Param(optional=False)},
             description="Set a group's notes."),
    Endpoint("GET", PREFIX + "/protected", get_protected, SNAPSHOT,
             description="Whether a snapshot is protected."),
    Endpoint("PUT", PREFIX + "/protected", set_protected,
             {**SNAPSHOT, "protected": Param("boolean", optional=False)},
             description="Protect or unprotect a snapshot."),
    Endpoint("POST", PREFIX + "/change-owner", change_owner,
             {**GROUP, "new-owner": Param(optional=False, max_length=64,
                                          check=Authid.parse)},
             description="Change a group's owner."),
    Endpoint("DELETE", PREFIX + "/groups", delete_group,
             {**GROUP, "error-on-protected": bool_param(True)},
             description="Delete a group (its unprotected snapshots)."),
    Endpoint("DELETE", PREFIX + "/snapshots", delete_snapshot, SNAPSHOT,
             description="Delete a snapshot."),
]

__all__ = ["ENDPOINTS", "snapshot_of"]
