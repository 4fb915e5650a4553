"""ACL evaluation with PBS's semantics (pbs-config `acl.rs` and `cached_user_info.rs`).

The rules, per auth id (a user and each of its tokens are separate subjects):

* Walk the path from `/` to the object. At every node the subject's roles there *replace*
  what was collected so far, if it has any: the most specific node wins, there is no merging
  with ancestors. On an ancestor only roles with the propagate flag count; on the object
  itself every role counts.
* `NoAccess` on a node (with propagate, or on the object itself) wins over every other role of
  the same subject on that node and yields no privileges, so it cuts off what an ancestor
  granted. Without propagate it does not reach below its node.
* A path that leaves the tree keeps what the deepest existing node handed down.
* `root@pam` (the user, not its tokens) has every privilege everywhere.
* A token's privileges are the intersection of its own ACL result and its user's on the same
  path: a token never exceeds its user.
* Groups (`@name` entries) are accepted but grant nothing: PBS has no group membership (its
  `is_member` is hard-wired to false), so a user's roles never come from a group.

Users' `enable`/`expire` are not looked at here, as in PBS: inactive subjects are refused at
authentication, and privileges are only ever asked for authenticated callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chunkyard.errors import InvalidName
from chunkyard.names import Authid, BackupNamespace
from chunkyard.server.auth.errors import AuthError
from chunkyard.server.auth.privileges import (
    ALL_PRIVILEGES,
    NO_ACCESS,
    NO_PRIVILEGES,
    ROLES,
    Privilege,
)

ROOT_USERID = "root@pam"


class InvalidAcl(AuthError):
    """An ACL entry names an unknown role or a malformed user, token or group (a config error)."""

    http_status = 500


@dataclass(frozen=True, slots=True)
class AclEntry:
    """One role for one user, token or group (`@name`) on one path, as acl.cfg lists them.

    An acl.cfg line `acl:<propagate>:<path>:<ugid>,...:<role>,...` is one entry per
    (ugid, role) pair, in the order the line lists them; the order matters only for
    `NoAccess` (see `AclTree.add`).
    """

    path: str
    ugid: str
    role: str
    propagate: bool = True


class AclEntryLike(Protocol):
    """Any (path, ugid, role, propagate) record, e.g. `chunkyard.config.acl.AclEntry`, whose
    path is a tuple of components."""

    @property
    def path(self) -> str | Sequence[str]: ...

    @property
    def ugid(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def propagate(self) -> bool: ...


def split_acl_path(path: str | Sequence[str]) -> list[str]:
    """The components of an ACL path; empty components (`//`, a trailing `/`) are dropped."""
    parts = path.split("/") if isinstance(path, str) else path
    return [c for c in parts if c]


def acl_path_for(store: str, ns: BackupNamespace | None = None) -> str:
    """`/datastore/<store>/<ns components...>`: where privileges on a namespace are granted."""
    parts = ["datastore", store]
    if ns is not None:
        parts.extend(ns.components)
    return "/" + "/".join(parts)


def is_superuser(authid: Authid) -> bool:
    """Only the user root@pam itself; its tokens are limited by their ACLs like any other."""
    return authid.token is None and authid.userid == ROOT_USERID


def user_of(authid: Authid) -> Authid:
    """The user an auth id belongs to (itself for a user)."""
    return authid if authid.token is None else Authid(authid.user, authid.realm)


@dataclass
class _Node:
    # role -> propagate, in insertion order; NoAccess never shares a map with other roles
    users: dict[Authid, dict[str, bool]] = field(default_factory=dict)
    groups: dict[str, dict[str, bool]] = field(default_factory=dict)
    children: dict[str, _Node] = field(default_factory=dict)


def _insert(roles: dict[str, bool], role: str, propagate: bool) -> None:
    """PBS's insert: NoAccess clears the other roles; any other role clears NoAccess."""
    if role == NO_ACCESS:
        roles.clear()
    else:
        roles.pop(NO_ACCESS, None)
    roles[role] = propagate


def _extract(roles: dict[str, bool] | None, leaf: bool) -> dict[str, bool]:
    """The roles that apply at a node: all on the object itself, propagating ones above it."""
    found: dict[str, bool] = {}
    for role, propagate in (roles or {}).items():
        if propagate or leaf:
            if role == NO_ACCESS:
                return {NO_ACCESS: False}
            found[role] = propagate
    return found


class AclTree:
    """The ACL of a server: add entries, then ask for a subject's privileges on a path."""

    def __init__(self) -> None:
        self._root = _Node()

    @classmethod
    def from_entries(cls, entries: Iterable[AclEntryLike]) -> AclTree:
        tree = cls()
        for entry in entries:
            tree.add(entry.path, entry.ugid, entry.role, entry.propagate)
        return tree

    def add(self, path: str | Sequence[str], ugid: str, role: str,
            propagate: bool = True) -> None:
        """Grant `role` to a user, token or `@group` on `path` (later entries win, as in PBS)."""
        if role not in ROLES:
            raise InvalidAcl(f"unknown role {role!r} in ACL for {ugid!r} on {path!r}")
        node = self._root
        for component in split_acl_path(path):
            node = node.children.setdefault(component, _Node())
        if ugid.startswith("@"):
            _insert(node.groups.setdefault(ugid[1:], {}), role, propagate)
            return
        try:
            authid = Authid.parse(ugid)
        except InvalidName as err:
            raise InvalidAcl(f"ACL on {path!r}: {err}") from None
        _insert(node.users.setdefault(authid, {}), role, propagate)

    def roles(self, authid: Authid, path: str) -> dict[str, bool]:
        """The roles (with their propagate flag) that decide `authid`'s privileges on `path`."""
        return self._roles(authid, split_acl_path(path), leaf=True)

    def _roles(self, authid: Authid, components: list[str], leaf: bool) -> dict[str, bool]:
        """With `leaf` False: what a child of `path` without entries of its own inherits."""
        node = self._root
        found = _extract(node.users.get(authid), leaf=leaf and not components)
        for i, component in enumerate(components):
            child = node.children.get(component)
            if child is None:
                return found
            node = child
            here = _extract(node.users.get(authid), leaf=leaf and i == len(components) - 1)
            if here:
                found = here
        return found

    def _details(self, authid: Authid, components: list[str],
                 leaf: bool) -> tuple[Privilege, Privilege]:
        if is_superuser(authid):
            return ALL_PRIVILEGES, ALL_PRIVILEGES
        privs = propagated = NO_PRIVILEGES
        for role, propagate in self._roles(authid, components, leaf).items():
            role_privs = ROLES[role]
            privs |= role_privs
            if propagate:
                propagated |= role_privs
        if authid.token is not None:
            user_privs, user_propagated = self._details(user_of(authid), components, leaf)
            privs &= user_privs
            propagated &= user_propagated
        return privs, propagated

    def privileges_details(self, authid: Authid, path: str) -> tuple[Privilege, Privilege]:
        """(privileges on `path`, those of them granted by roles with the propagate flag).

        The second part is what PBS marks with (*) in `user permissions`.
        """
        return self._details(authid, split_acl_path(path), leaf=True)

    def privileges(self, authid: Authid, path: str) -> Privilege:
        """What `authid` may do on `path` (a user, a token, or root@pam)."""
        return self.privileges_details(authid, path)[0]

    def any_privileges_below(self, authid: Authid, path: str, privs: Privilege) -> bool:
        """True if `authid` has any of `privs` on some path strictly below `path`.

        As PBS `any_privs_below`: what every child inherits from `path` counts for all of
        them; otherwise every deeper node where the subject has roles is evaluated on its
        own. Two gaps of PBS's version are closed (found by comparing with brute force):
        the inherited part is what a child really inherits (PBS takes the propagating roles
        on `path` itself, so a non-propagating entry there, NoAccess with propagate=0 say,
        hid privileges its children still inherit from further up); and for a token the
        paths where its user has entries are visited too, since the intersection can change
        there as well.
        """
        components = split_acl_path(path)
        if self._details(authid, components, leaf=False)[0] & privs:
            return True
        node: _Node | None = self._root
        for component in components:
            node = node.children.get(component) if node is not None else None
        if node is None:
            return False
        return any(self.privileges(authid, sub) & privs
                   for sub in self._child_paths(node, "/" + "/".join(components), authid))

    def _child_paths(self, node: _Node, path: str, authid: Authid) -> Iterable[str]:
        """The paths strictly below `node` where `authid` (or, for a token, its user) has
        roles: only there can privileges differ from what is inherited."""
        subjects = {authid, user_of(authid)}
        for name, child in node.children.items():
            child_path = f"{path.rstrip('/')}/{name}"
            if any(_extract(child.users.get(s), leaf=True) for s in subjects):
                yield child_path
            yield from self._child_paths(child, child_path, authid)
