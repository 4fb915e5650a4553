"""`acl.cfg`: PBS's access control list and the namespace-move hook that rewrites it.

Format (PBS `pbs-config/src/acl.rs`), one entry per line, no comments:

    acl:<propagate 0|1>:<path>:<ugid>[,<ugid>...]:<role>[,<role>...]

A ugid is an auth id (`user@realm`, `user@realm!token`) or `@group`. Reading applies each
line in order with PBS's insert rule (NoAccess replaces a ugid's other roles on that path, any
other role removes NoAccess; a later line wins for the same role). Writing is PBS's exactly:
paths depth-first with children in byte order, per path the propagate-0 lines before the
propagate-1 lines, ugids with identical role sets joined, ugid lists and role lists sorted,
and `root@pam` left out (it is the superuser whatever the file says). A file PBS wrote reads
and writes back byte for byte.

Paths are validated on read and write (PBS checks them only in its API; see `acl_paths`),
roles against PBS's fixed list (`roles`, re-exported here).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chunkyard.config.acl_paths import (
    ROOT_USER,
    AclPath,
    check_path,
    check_role,
    check_ugid,
    datastore_path,
    format_path,
    split_path,
)
from chunkyard.config.errors import ConfigError
from chunkyard.config.roles import PRIVILEGES, ROLE_NO_ACCESS, ROLES, Role
from chunkyard.config.section import decode, text_lines
from chunkyard.config.types import ws_strip
from chunkyard.names import BackupNamespace

if TYPE_CHECKING:
    from chunkyard.config.store import ConfigDir
    from chunkyard.datastore.datastore import Datastore
    from chunkyard.datastore.moves.references import NamespaceReferenceHook

FILENAME = "acl.cfg"

__all__ = [
    "FILENAME", "PRIVILEGES", "ROLES", "ROLE_NO_ACCESS", "ROOT_USER", "AclConfig", "AclEntry",
    "AclPath", "Role", "check_path", "check_role", "check_ugid", "datastore_path",
    "format_path", "make_acl_reference_hook", "parse", "parse_text", "rewrite_acl_paths",
    "split_path", "store_name_by_path", "write", "write_text",
]


@dataclass(frozen=True, order=True)
class AclEntry:
    """One (path, ugid, role) grant; `propagate` lets it apply below `path` too."""

    path: AclPath
    ugid: str
    role: str
    propagate: bool

    def __str__(self) -> str:
        return f"acl:{int(self.propagate)}:{format_path(self.path)}:{self.ugid}:{self.role}"


Roles = dict[str, bool]  # role -> propagate


class AclConfig:
    """The ACL tree as `path -> ugid -> role -> propagate` (what PBS's `AclTree` holds)."""

    def __init__(self, entries: Iterable[AclEntry] = ()) -> None:
        self._nodes: dict[AclPath, dict[str, Roles]] = {}
        for e in entries:
            self.insert(e.path, e.ugid, e.role, e.propagate)

    def insert(self, path: AclPath | str, ugid: str, role: str, propagate: bool = True) -> None:
        """Grant `role`, with PBS's rule: NoAccess replaces the ugid's other roles here and
        any other role removes NoAccess."""
        key = self._path(path)
        ugid, role = check_ugid(ugid), check_role(role)
        roles = self._nodes.setdefault(key, {}).setdefault(ugid, {})
        if role == ROLE_NO_ACCESS:
            roles.clear()
        else:
            roles.pop(ROLE_NO_ACCESS, None)
        roles[role] = bool(propagate)

    def delete(self, path: AclPath | str, ugid: str, role: str) -> bool:
        """Remove one grant; True if it existed."""
        key = self._path(path)
        roles = self._nodes.get(key, {}).get(ugid)
        if roles is None or role not in roles:
            return False
        del roles[role]
        self._prune(key, ugid)
        return True

    def remove_ugid(self, ugid: str) -> int:
        """Remove every grant of `ugid` (a deleted user or token); returns how many."""
        count = 0
        for key in list(self._nodes):
            roles = self._nodes[key].get(ugid)
            if roles:
                count += len(roles)
                roles.clear()
                self._prune(key, ugid)
        return count

    def node(self, path: AclPath | str) -> dict[str, Roles]:
        """A copy of the grants on exactly `path`."""
        return copy.deepcopy(self._nodes.get(self._path(path), {}))

    def paths(self) -> list[AclPath]:
        return sorted(p for p, users in self._nodes.items() if any(users.values()))

    def entries(self) -> list[AclEntry]:
        """Every grant, by path (depth-first), ugid, role."""
        return sorted(AclEntry(p, u, r, prop) for p, users in self._nodes.items()
                      for u, roles in users.items() for r, prop in roles.items())

    def copy(self) -> AclConfig:
        new = AclConfig()
        new._nodes = copy.deepcopy(self._nodes)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AclConfig):
            return NotImplemented
        return self.entries() == other.entries()

    def __repr__(self) -> str:
        return f"AclConfig({self.entries()!r})"

    # internals

    def _merge_roles(self, path: AclPath, ugid: str, roles: Roles) -> tuple[Roles, Roles]:
        """Merge `roles` into the ugid's roles at `path`; returns (before, after)."""
        mine = self._nodes.setdefault(path, {}).setdefault(ugid, {})
        before = dict(mine)
        merged = dict(before)
        for role, propagate in roles.items():
            merged[role] = merged.get(role, False) or propagate
        if ROLE_NO_ACCESS in merged:  # an explicit deny on either side wins
            merged = {ROLE_NO_ACCESS: merged[ROLE_NO_ACCESS]}
        mine.clear()
        mine.update(merged)
        return before, merged

    def _prune(self, path: AclPath, ugid: str) -> None:
        users = self._nodes.get(path)
        if users is not None and not users.get(ugid, True):
            del users[ugid]
            if not users:
                del self._nodes[path]

    @staticmethod
    def _path(path: AclPath | str) -> AclPath:
        key = split_path(path) if isinstance(path, str) else tuple(path)
        check_path(key)
        return key


# -- reading and writing -----------------------------------------------------------------

def parse_text(text: str, filename: str = FILENAME) -> AclConfig:
    """Parse acl.cfg; ConfigError naming the file and line on the first bad line."""
    config = AclConfig()
    for line_no, raw_line in enumerate(text_lines(text), start=1):
        line = ws_strip(raw_line)
        if not line:
            continue
        try:
            _parse_line(config, line)
        except ValueError as e:
            raise ConfigError(f"parsing '{filename}' failed: line {line_no} - {e}") from None
    return config


def _parse_line(config: AclConfig, line: str) -> None:
    items = line.split(":")
    if len(items) != 5:
        raise ValueError("wrong number of items.")
    if items[0] != "acl":
        raise ValueError("line does not start with 'acl'.")
    if items[1] not in ("0", "1"):
        raise ValueError("expected '0' or '1' for propagate flag.")
    path = split_path(items[2])
    check_path(path)
    ugids = [check_ugid(ws_strip(u)) for u in items[3].split(",")]
    roles = [check_role(ws_strip(r)) for r in items[4].split(",")]
    for ugid in ugids:
        for role in roles:
            config.insert(path, ugid, role, items[1] == "1")


def parse(raw: bytes, filename: str = FILENAME) -> AclConfig:
    return parse_text(decode(raw, filename), filename)


def write_text(config: AclConfig) -> str:
    """acl.cfg as PBS writes it (see the module docstring)."""
    out: list[str] = []
    for path in config.paths():
        node = config.node(path)
        shown = format_path(path)
        for propagate in (False, True):
            by_role: dict[str, set[str]] = {}
            for ugid, roles in node.items():
                if ugid == ROOT_USER:
                    continue
                for role, prop in roles.items():
                    if prop == propagate:
                        by_role.setdefault(role, set()).add(ugid)
            by_uglist: dict[str, set[str]] = {}
            for role, ugids in by_role.items():
                by_uglist.setdefault(",".join(sorted(ugids)), set()).add(role)
            for uglist in sorted(by_uglist):
                roles_set = by_uglist[uglist]
                role_list = (ROLE_NO_ACCESS if ROLE_NO_ACCESS in roles_set
                             else ",".join(sorted(roles_set)))
                out.append(f"acl:{int(propagate)}:{shown}:{uglist}:{role_list}\n")
    return "".join(out)


def write(config: AclConfig) -> bytes:
    return write_text(config).encode("utf-8")


# -- the namespace-move hook -----------------------------------------------------------------

Moved = list[tuple[BackupNamespace, BackupNamespace]]


def rewrite_acl_paths(acl_config: AclConfig, store_name: str, moved: Moved
                      ) -> tuple[AclConfig, list[str]]:
    """Give grants on a moved namespace's path the new path.

    `moved` lists every namespace that moved, descendants included, so only exact path
    matches move (a grant on a descendant that stayed, with `max_depth`, stays). All moves
    apply at once. A ugid that already has grants at the new path gets the union; where one
    side has NoAccess the result is NoAccess (an explicit deny is never lost); a role on both
    sides propagates if either did. Returns the new configuration and one log line per moved
    path and per merge; the input is not changed.
    """
    mapping = {datastore_path(store_name, old): datastore_path(store_name, new)
               for old, new in moved if old != new}
    result = AclConfig()
    log: list[str] = []
    for path in acl_config.paths():
        if path not in mapping:
            result._nodes[path] = acl_config.node(path)
    for path in acl_config.paths():
        target = mapping.get(path)
        if target is None:
            continue
        log.append(f"acl {format_path(path)} -> {format_path(target)}")
        for ugid, roles in sorted(acl_config.node(path).items()):
            before, after = result._merge_roles(target, ugid, roles)
            if before:
                log.append(f"acl {format_path(target)}: merged {ugid}'s roles "
                           f"{_roles_text(roles)} from {format_path(path)} into "
                           f"{_roles_text(before)}, now {_roles_text(after)}")
    return result, log


def _roles_text(roles: Mapping[str, bool]) -> str:
    return ",".join(f"{r}{'' if p else '(no propagate)'}" for r, p in sorted(roles.items()))


def make_acl_reference_hook(config_dir: ConfigDir,
                            store_name_of: Callable[[Datastore], str | None]
                            ) -> NamespaceReferenceHook:
    """A namespace-move reference hook that rewrites acl.cfg under its lock.

    `store_name_of` maps the moved datastore to its name in datastore.cfg (None: not a
    configured store, nothing to rewrite). Idempotent: a second run finds nothing at the old
    paths, and an unchanged file is not rewritten."""

    def acl_reference_hook(ds: Datastore, moved: Moved) -> list[str]:
        store = store_name_of(ds)
        if store is None or not moved:
            return []
        log: list[str] = []

        def apply(config: AclConfig) -> AclConfig:
            new, lines = rewrite_acl_paths(config, store, moved)
            log[:] = lines
            return new

        config_dir.update_acl(apply)
        return log

    return acl_reference_hook


def store_name_by_path(config_dir: ConfigDir) -> Callable[[Datastore], str | None]:
    """A `store_name_of` for the hook: the datastore.cfg entry whose path is the datastore's
    (compared after resolving symlinks), read afresh at each call."""

    def name_of(ds: Datastore) -> str | None:
        wanted = os.path.realpath(ds.path)
        stores, _ = config_dir.read_datastore()
        for entry in stores.of_type("datastore"):
            path = entry.props.get("path")
            if isinstance(path, str) and os.path.realpath(path) == wanted:
                return entry.id
        return None

    return name_of
