"""`/admin/datastore`: the datastore list, groups, snapshots and namespaces (spec §11.3).

Privileges are checked before anything is looked up (`auth.checks`), so a caller without
access gets 403 whether or not the object exists; listings show only what the caller may see.
"""

from __future__ import annotations

from typing import Any, NoReturn

from chunkyard.datastore import queries
from chunkyard.datastore.namespaces import create_namespace, delete_namespace
from chunkyard.errors import InvalidName, NotFound
from chunkyard.names import Authid, BackupGroup, BackupNamespace, BackupType, validate_backup_id
from chunkyard.names.namespace import MAX_COMPONENT_CREATE_LENGTH, MAX_NAMESPACE_DEPTH
from chunkyard.server.app import Call, Endpoint
from chunkyard.server.auth import PermissionDenied
from chunkyard.server.auth.checks import (
    REQUIREMENTS,
    check_ns_modification_privs,
    datastore_visibility,
    has_namespace_access,
    listing_scope,
    visible_namespaces,
)
from chunkyard.server.endpoints.common import (
    MAX_DEPTH,
    NS,
    NS_REQUIRED,
    SAFE_ID_RE,
    STORE,
    bool_param,
    ns_of,
)
from chunkyard.server.params import Param

PREFIX = "/admin/datastore"


def _owner(row: dict[str, Any]) -> Authid | None:
    owner = row.get("owner")
    try:
        return Authid.parse(owner) if isinstance(owner, str) else None
    except InvalidName:
        return None


def list_datastores(call: Call) -> list[dict[str, Any]]:
    stores, _ = call.state.config.read_datastore()
    rows: list[dict[str, Any]] = []
    for section in stores.of_type("datastore"):
        seen = datastore_visibility(call.acl, call.caller, section.id)
        if not seen.listed:
            continue
        row: dict[str, Any] = {"store": section.id}
        if seen.details:
            comment = section.props.get("comment")
            if isinstance(comment, str) and comment:
                row["comment"] = comment
            mode = section.props.get("maintenance-mode")
            if isinstance(mode, str) and mode:
                row["maintenance"] = mode
        row["mount-status"] = "nonremovable"
        row["backend-type"] = "filesystem"
        rows.append(row)
    return rows


def list_groups(call: Call) -> list[dict[str, Any]]:
    store, ns = call.params["store"], ns_of(call.params)
    scope = listing_scope(call.acl, call.caller, store, ns, REQUIREMENTS["list-groups"])
    ds = call.state.datastore(store)
    return [row for row in queries.group_list(ds, ns) if scope.may_see(_owner(row))]


def list_snapshots(call: Call) -> list[dict[str, Any]]:
    params = call.params
    store, ns = params["store"], ns_of(params)
    scope = listing_scope(call.acl, call.caller, store, ns, REQUIREMENTS["list-snapshots"])
    ds = call.state.datastore(store)
    backup_type, backup_id = params["backup-type"], params["backup-id"]
    group = None
    if backup_type is not None and backup_id is not None:
        group = BackupGroup(backup_type, backup_id)
    rows = queries.snapshot_list(ds, ns, group)
    if group is None and (backup_type is not None or backup_id is not None):
        rows = [r for r in rows
                if (backup_type is None or r["backup-type"] == backup_type.value)
                and (backup_id is None or r["backup-id"] == backup_id)]
    # a group whose owner cannot be read has no "owner": shown to Audit only, as in PBS
    return [row for row in rows if scope.may_see(_owner(row))
            or (scope.list_all and "owner" not in row)]


def list_namespaces(call: Call) -> list[dict[str, Any]]:
    store = call.params["store"]
    parent = ns_of(call.params, "parent")
    max_depth = call.params["max-depth"]
    depth = MAX_NAMESPACE_DEPTH if max_depth is None else max_depth
    ds_access = has_namespace_access(call.acl, call.caller, store, parent)
    try:
        ds = call.state.datastore(store)
        found = [BackupNamespace.parse(row["ns"])
                 for row in queries.namespace_list(ds, parent, depth)]
    except NotFound:
        if not ds_access:  # do not confirm that the store or the parent is missing
            raise_denied()
        raise
    return [{"ns": str(ns)} for ns in
            visible_namespaces(call.acl, call.caller, store, parent, found)]


def raise_denied() -> NoReturn:
    raise PermissionDenied("permission check failed")


def _check_component(name: str) -> str:
    if not SAFE_ID_RE.fullmatch(name):
        raise InvalidName(f"namespace name {name!r} is invalid")
    return name


def create_ns(call: Call) -> str:
    store, parent = call.params["store"], ns_of(call.params, "parent")
    ns = parent.child(call.params["name"])
    check_ns_modification_privs(call.acl, call.caller, store, ns)
    ds = call.state.datastore(store, write=True)
    return str(create_namespace(ds, ns))


def delete_ns(call: Call) -> dict[str, int]:
    params = call.params
    store, ns = params["store"], ns_of(params)
    check_ns_modification_privs(call.acl, call.caller, store, ns)
    ds = call.state.datastore(store, write=True)
    stats = delete_namespace(ds, ns, delete_groups=params["delete-groups"],
                             error_on_protected=params["error-on-protected"])
    return stats.as_dict()


ENDPOINTS = [
    Endpoint("GET", PREFIX, list_datastores, {},
             description="Datastores the caller may see."),
    Endpoint("GET", PREFIX + "/{store}/groups", list_groups, {"store": STORE, "ns": NS},
             description="Backup groups of a namespace."),
    Endpoint("GET", PREFIX + "/{store}/snapshots", list_snapshots, {
        "store": STORE, "ns": NS,
        "backup-type": Param(check=BackupType.parse),
        "backup-id": Param(max_length=128, check=validate_backup_id),
    }, description="Snapshots of a namespace (optionally of one group, type or id)."),
    Endpoint("GET", PREFIX + "/{store}/namespace", list_namespaces, {
        "store": STORE, "parent": NS, "max-depth": MAX_DEPTH,
    }, description="The parent namespace and its descendants."),
    Endpoint("POST", PREFIX + "/{store}/namespace", create_ns, {
        "store": STORE, "parent": NS,
        "name": Param(optional=False, min_length=1, max_length=MAX_COMPONENT_CREATE_LENGTH,
                      check=_check_component),
    }, description="Create a namespace."),
    Endpoint("DELETE", PREFIX + "/{store}/namespace", delete_ns, {
        "store": STORE, "ns": NS_REQUIRED,
        "delete-groups": bool_param(False), "error-on-protected": bool_param(True),
    }, description="Delete a namespace (and with delete-groups its groups)."),
]
