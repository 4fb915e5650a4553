"""`/access/acl` and `/access/permissions` (PBS `api2/access/acl.rs`, `api2/access/mod.rs`).

* GET /access/acl: every entry for a caller with Sys.Audit on `/access/acl`; anyone else sees
  only the entries of its own user's API tokens (an API token without Sys.Audit: none).
* PUT /access/acl: with Permissions.Modify on `/access/acl` anything; without it a user may
  grant and revoke roles of its own API tokens only (a token's privileges never exceed its
  user's, so this grants nothing new), as PBS. Groups are refused as in PBS ("currently not
  supported"). Setting a role needs an existing user or token and a path PBS's
  `check_acl_path` knows; deleting accepts a vanished user or token.
* GET /access/permissions: the effective privileges `{path: {privilege: propagates}}` of the
  caller (or, with Sys.Audit on `/access`, of anyone; a user may also ask for its tokens),
  on `path` or on every path of the ACL tree plus PBS's defaults; paths without any
  privilege are left out.
"""

from __future__ import annotations

import contextlib
from typing import Any

from chunkyard.config.acl import AclConfig, check_path, format_path, split_path
from chunkyard.config.roles import ROLES
from chunkyard.names import Authid
from chunkyard.names.patterns import SAFE_ID_RE
from chunkyard.server.app import Call, Endpoint, Result
from chunkyard.server.auth import PermissionDenied, Privilege
from chunkyard.server.auth.acl import user_of
from chunkyard.server.auth.privileges import PRIVILEGE_NAMES
from chunkyard.server.endpoints.common import bool_param
from chunkyard.server.endpoints.users import DIGEST, parse_authid
from chunkyard.server.params import ApiError, Param

ACL_ACL_PATH = "/access/acl"
DEFAULT_PERMISSION_PATHS = ("/", "/access", "/datastore", "/remote", "/system")


def parse_acl_path(text: str) -> str:
    """An ACL path's syntax: `/` or `/`-separated SAFE_ID components (no `//`, no `..`)."""
    if text != "/" and not (text.startswith("/") and all(
            SAFE_ID_RE.fullmatch(c) for c in text[1:].split("/"))):
        raise ValueError(f"invalid acl path '{text}'")
    return text


def parse_role(text: str) -> str:
    if text not in ROLES:
        raise ValueError(f"unknown role '{text}'")
    return text


ACL_PATH = Param(max_length=512, check=parse_acl_path)
AUTH_ID = Param(max_length=64, check=parse_authid)


def _entry(path: tuple[str, ...], ugid: str, role: str, propagate: bool) -> dict[str, Any]:
    group = ugid.startswith("@")
    return {"path": format_path(path), "ugid": ugid[1:] if group else ugid,
            "ugid_type": "group" if group else "user", "roleid": role,
            "propagate": propagate}


def read_acl(call: Call) -> Result:
    caller = call.caller
    audit = bool(call.acl.privileges(caller, ACL_ACL_PATH) & Privilege.SYS_AUDIT)
    acl, digest = call.state.config.read_acl()
    path, exact = call.params["path"], call.params["exact"]
    wanted = split_path(path) if path is not None else ()
    rows: list[dict[str, Any]] = []
    for entry in acl.entries():
        if entry.path[:len(wanted)] != wanted or (exact and entry.path != wanted):
            continue
        if not audit:
            if caller.token is not None or entry.ugid.startswith("@"):
                continue
            owner = Authid.parse(entry.ugid)
            if owner.token is None or owner.userid != caller.userid:
                continue
        rows.append(_entry(entry.path, entry.ugid, entry.role, entry.propagate))
    return Result(rows, {"digest": digest})


def _check_update_privs(call: Call, authid: Authid | None, group: str | None) -> None:
    """PBS `update_acl`'s rule for callers without Permissions.Modify on /access/acl."""
    caller = call.caller
    if call.acl.privileges(caller, ACL_ACL_PATH) & Privilege.PERMISSIONS_MODIFY:
        return
    if group is not None:
        raise PermissionDenied("Unprivileged users are not allowed to create group ACL item.")
    if authid is None:
        raise PermissionDenied("Unprivileged user needs to provide auth_id to update ACL "
                               "item.")
    if caller.token is not None:
        raise PermissionDenied("Unprivileged API tokens can't set ACL items.")
    if authid.token is None:
        raise PermissionDenied("Unprivileged users can only set ACL items for API tokens.")
    if authid.userid != caller.userid:
        raise PermissionDenied("Unprivileged users can only set ACL items for their own API "
                               "tokens.")


def update_acl(call: Call) -> None:
    params = call.params
    authid: Authid | None = params["auth-id"]
    group: str | None = params["group"]
    _check_update_privs(call, authid, group)
    if group is not None:
        raise ApiError("parameter 'group' - groups are currently not supported.")
    if authid is None:
        raise ApiError("missing 'userid' or 'group' parameter.")
    delete, role, text = params["delete"], params["role"], params["path"]
    path = split_path(text)
    if not delete:
        try:
            check_path(path)
        except ValueError as e:
            raise ApiError(str(e)) from None
    cfg = call.state.config
    ugid = str(authid)

    def edit(acl: AclConfig) -> None:
        if delete:
            # an invalid path holds no entries (PBS allows the call)
            with contextlib.suppress(ValueError):
                acl.delete(path, ugid, role)
            return
        users, _ = cfg.read_user()
        section = users.get(ugid)
        if section is None or section.type != ("token" if authid.token else "user"):
            raise ApiError(f"no such {'API token' if authid.token else 'user'}.")
        try:
            acl.insert(path, ugid, role, params["propagate"])
        except ValueError as e:
            raise ApiError(str(e)) from None

    cfg.update_acl(edit, params["digest"])


def list_permissions(call: Call) -> dict[str, dict[str, bool]]:
    caller = call.caller
    target: Authid | None = call.params["auth-id"]
    if target is None or target == caller:
        subject = caller
    elif (call.acl.privileges(caller, "/access") & Privilege.SYS_AUDIT
          or (target.token is not None and caller.token is None
              and user_of(target) == caller)):
        subject = target
    else:
        raise PermissionDenied(f"not allowed to list permissions of {target}")
    path: str | None = call.params["path"]
    if path is not None:
        paths = {path}
    else:
        acl, _ = call.state.config.read_acl()
        paths = set(DEFAULT_PERMISSION_PATHS)
        for node in acl.paths():
            for depth in range(1, len(node) + 1):
                paths.add(format_path(node[:depth]))
    result: dict[str, dict[str, bool]] = {}
    for item in sorted(paths):
        privs, propagated = call.acl.privileges_details(subject, item)
        if not privs:
            continue  # do not leak paths without privileges
        result[item] = {name: bool(priv & propagated)
                        for priv, name in PRIVILEGE_NAMES.items() if priv & privs}
    return result


ENDPOINTS = [
    Endpoint("GET", "/access/acl", read_acl, {
        "path": ACL_PATH, "exact": bool_param(False),
    }, description="ACL entries (all with Sys.Audit on /access/acl, else the caller's "
                   "tokens')."),
    Endpoint("PUT", "/access/acl", update_acl, {
        "path": Param(optional=False, max_length=512, check=parse_acl_path),
        "role": Param(optional=False, check=parse_role),
        "propagate": bool_param(True),
        "auth-id": AUTH_ID,
        "group": Param(max_length=32, pattern=SAFE_ID_RE),
        "delete": bool_param(False),
        "digest": DIGEST,
    }, description="Grant or (with delete) revoke a role."),
    Endpoint("GET", "/access/permissions", list_permissions, {
        "auth-id": AUTH_ID, "path": ACL_PATH,
    }, description="Effective privileges per path."),
]

__all__ = ["ENDPOINTS", "parse_acl_path", "parse_role"]
