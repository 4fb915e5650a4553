"""ACL paths and ugids: PBS's `check_acl_path` tree, SAFE_ID components, namespaces below
`/datastore/<store>`, and the auth ids or `@group`s an entry grants to."""

from __future__ import annotations

from chunkyard.config.roles import ROLES
from chunkyard.errors import InvalidName
from chunkyard.names import MAX_NAMESPACE_DEPTH, Authid, BackupNamespace
from chunkyard.names.patterns import SAFE_ID_RE

AclPath = tuple[str, ...]
ROOT_USER = "root@pam"

# The leaves below /system that PBS's `check_acl_path` knows (plus 3.2's notifications).
_SYSTEM_LEAVES = {"certificates", "disks", "log", "notifications", "status", "tasks", "time"}


def split_path(text: str) -> AclPath:
    """PBS's `split_acl_path`: components between `/`, empty ones ignored."""
    return tuple(c for c in text.split("/") if c)


def format_path(path: AclPath) -> str:
    return "/" + "/".join(path)


def check_path(path: AclPath) -> None:
    """ValueError unless `path` is one PBS's API accepts (`check_acl_path`), with SAFE_ID
    components and, below `/datastore/<store>`, a valid namespace."""
    for c in path:
        if not SAFE_ID_RE.match(c):
            raise ValueError(f"invalid acl path '{format_path(path)}': component {c!r} is not "
                             "a valid name")
    if _known_path(path):
        if path[:1] == ("datastore",) and len(path) > 2:
            try:
                BackupNamespace(path[2:])
            except InvalidName as e:
                raise ValueError(f"invalid acl path '{format_path(path)}': {e}") from None
        return
    raise ValueError(f"invalid acl path '{format_path(path)}'.")


def _known_path(p: AclPath) -> bool:
    n = len(p)
    if n == 0:
        return True
    top = p[0]
    if top == "access":
        return n == 1 or (n == 2 and p[1] in ("acl", "users", "domains")) or (
            p[1] == "openid" and n <= 3)
    if top == "datastore":
        return n <= 2 + MAX_NAMESPACE_DEPTH
    if top == "remote":  # /remote/{remote}/{store}[/{ns}...] (namespaces: push sync)
        return n <= 3 + MAX_NAMESPACE_DEPTH
    if top == "system":
        if n == 1 or (n == 2 and p[1] in _SYSTEM_LEAVES):
            return True
        if p[1] == "services":
            return n <= 3
        if p[1] == "network":
            return n == 2 or (n == 3 and p[2] == "dns") or (p[2] == "interfaces" and n <= 4)
        return False
    if top == "tape":
        return n == 1 or (p[1] in ("device", "pool", "job") and n <= 3)
    return False


def datastore_path(store: str, ns: BackupNamespace) -> AclPath:
    """The ACL path of namespace `ns` of datastore `store`."""
    return ("datastore", store, *ns.components)


def check_ugid(text: str) -> str:
    """The canonical ugid: an auth id, or `@group` (SAFE_ID); ValueError otherwise."""
    if text.startswith("@"):
        if not SAFE_ID_RE.match(text[1:]):
            raise ValueError(f"invalid group name {text!r}")
        return text
    if "," in text:  # the list separator: PBS would write it and then misread the line
        raise ValueError(f"auth id {text!r} contains ','")
    try:
        return str(Authid.parse(text))
    except InvalidName as e:
        raise ValueError(str(e)) from None


def check_role(name: str) -> str:
    if name not in ROLES:
        raise ValueError(f"unknown role '{name}'")
    return name
