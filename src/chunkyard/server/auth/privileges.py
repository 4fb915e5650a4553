"""PBS's privileges and built-in roles, as data (pbs-api-types `acl.rs`).

Only names reach disk (acl.cfg stores role names), so the bit values are ours; they follow
PBS's declaration order so that error messages list privileges in PBS's order. The roles
themselves are `chunkyard.config.roles` (acl.cfg names them); this module maps them to bits.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from functools import reduce
from operator import or_
from types import MappingProxyType

from chunkyard.config.roles import ROLE_NO_ACCESS
from chunkyard.config.roles import ROLES as CONFIG_ROLES


class Privilege(enum.IntFlag):
    """One bit per PBS privilege; a set of privileges is their union."""

    SYS_AUDIT = 1 << 0
    SYS_MODIFY = 1 << 1
    SYS_POWER_MANAGEMENT = 1 << 2
    DATASTORE_AUDIT = 1 << 3
    DATASTORE_ALLOCATE = 1 << 4
    DATASTORE_MODIFY = 1 << 5
    DATASTORE_READ = 1 << 6
    DATASTORE_VERIFY = 1 << 7
    DATASTORE_BACKUP = 1 << 8
    DATASTORE_PRUNE = 1 << 9
    PERMISSIONS_MODIFY = 1 << 10
    REMOTE_AUDIT = 1 << 11
    REMOTE_MODIFY = 1 << 12
    REMOTE_READ = 1 << 13
    # push sync (PBS 3.3+): the names are PBS's, the position after Remote.Read a guess
    REMOTE_DATASTORE_BACKUP = 1 << 14
    REMOTE_DATASTORE_MODIFY = 1 << 15
    REMOTE_DATASTORE_PRUNE = 1 << 16
    SYS_CONSOLE = 1 << 17
    TAPE_AUDIT = 1 << 18
    TAPE_MODIFY = 1 << 19
    TAPE_WRITE = 1 << 20
    TAPE_READ = 1 << 21
    REALM_ALLOCATE = 1 << 22


P = Privilege
NO_PRIVILEGES = Privilege(0)
ALL_PRIVILEGES: Privilege = reduce(or_, Privilege, NO_PRIVILEGES)

PRIVILEGE_NAMES: Mapping[Privilege, str] = MappingProxyType({
    P.SYS_AUDIT: "Sys.Audit",
    P.SYS_MODIFY: "Sys.Modify",
    P.SYS_POWER_MANAGEMENT: "Sys.PowerManagement",
    P.DATASTORE_AUDIT: "Datastore.Audit",
    P.DATASTORE_ALLOCATE: "Datastore.Allocate",
    P.DATASTORE_MODIFY: "Datastore.Modify",
    P.DATASTORE_READ: "Datastore.Read",
    P.DATASTORE_VERIFY: "Datastore.Verify",
    P.DATASTORE_BACKUP: "Datastore.Backup",
    P.DATASTORE_PRUNE: "Datastore.Prune",
    P.PERMISSIONS_MODIFY: "Permissions.Modify",
    P.REMOTE_AUDIT: "Remote.Audit",
    P.REMOTE_MODIFY: "Remote.Modify",
    P.REMOTE_READ: "Remote.Read",
    P.REMOTE_DATASTORE_BACKUP: "Remote.DatastoreBackup",
    P.REMOTE_DATASTORE_MODIFY: "Remote.DatastoreModify",
    P.REMOTE_DATASTORE_PRUNE: "Remote.DatastorePrune",
    P.SYS_CONSOLE: "Sys.Console",
    P.TAPE_AUDIT: "Tape.Audit",
    P.TAPE_MODIFY: "Tape.Modify",
    P.TAPE_WRITE: "Tape.Write",
    P.TAPE_READ: "Tape.Read",
    P.REALM_ALLOCATE: "Realm.Allocate",
})
_BY_NAME = {name: priv for priv, name in PRIVILEGE_NAMES.items()}

NO_ACCESS = ROLE_NO_ACCESS
"""The role that removes every privilege on its path (and, propagated, below it)."""

# The role table lives in `chunkyard.config.roles` (acl.cfg names roles); here as bits.
ROLES: Mapping[str, Privilege] = MappingProxyType({
    name: reduce(or_, (_BY_NAME[p] for p in role.privileges), NO_PRIVILEGES)
    for name, role in CONFIG_ROLES.items()})
ROLE_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({
    name: role.description for name, role in CONFIG_ROLES.items()})

NS_PRIVS_OK = (P.DATASTORE_MODIFY | P.DATASTORE_READ | P.DATASTORE_BACKUP
               | P.DATASTORE_AUDIT)
"""Any of these on a namespace makes it visible in listings (PBS `NS_PRIVS_OK`)."""


def privilege_names(privs: Privilege) -> list[str]:
    """The PBS names of the privileges in `privs`, in PBS's order (for messages and the API)."""
    return [name for priv, name in PRIVILEGE_NAMES.items() if priv & privs]


def parse_privilege(name: str) -> Privilege:
    """The privilege called `name` ('Datastore.Audit'); KeyError names an unknown one."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown privilege {name!r}") from None


def is_role(name: str) -> bool:
    """True if `name` is one of PBS's built-in roles (acl.cfg may name no others)."""
    return name in ROLES
