"""The privilege and ownership rules endpoints apply (PBS `src/backup/hierarchy.rs`, handlers).

Privileges are asked for on `/datastore/<store>/<ns...>`. Most calls accept either *full*
privileges (any one of a set) or *partial* ones plus ownership of the group: the caller owns a
group if it is the owner or the owner is one of its tokens. `REQUIREMENTS` lists each
endpoint's pair. Checks happen before anything is looked up, so a refusal never tells whether
the object exists; the owner is fetched only when the partial path needs it.

Listings never reveal more than the caller may see:

* namespaces: a namespace is listed only if the caller has any of `NS_PRIVS_OK` (Audit,
  Modify, Read, Backup) on that namespace itself (directly or propagated). An ancestor the
  caller has no privileges on is not listed, even if a listed descendant is below it; the
  descendant's own name shows the path. An empty result without any privilege on the parent
  is a 403, not an empty list, so the existence of the parent stays hidden;
* groups and snapshots: Audit on the namespace shows all, Backup alone only owned groups,
  neither is a 403. Groups whose owner cannot be read are left out, as in PBS;
* datastores: listed with details if the caller has Audit or Backup on the datastore,
  listed by name only if it has any of `NS_PRIVS_OK` somewhere below, otherwise not at all.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, TypeVar

from chunkyard.errors import DatastoreError
from chunkyard.names import Authid, BackupNamespace
from chunkyard.server.auth.acl import acl_path_for, user_of
from chunkyard.server.auth.errors import PermissionDenied
from chunkyard.server.auth.privileges import (
    NO_PRIVILEGES,
    NS_PRIVS_OK,
    Privilege,
    privilege_names,
)

P = Privilege
T = TypeVar("T")


class PrivilegeLookup(Protocol):
    """What the checks need from the ACL (implemented by `AclTree`)."""

    def privileges(self, authid: Authid, path: str) -> Privilege: ...

    def any_privileges_below(self, authid: Authid, path: str, privs: Privilege) -> bool: ...


@dataclass(frozen=True)
class Requirement:
    """Any of `full` allows the call; else any of `partial` allows it on owned groups only."""

    full: Privilege
    partial: Privilege = NO_PRIVILEGES


REQUIREMENTS: Mapping[str, Requirement] = MappingProxyType({
    # from the access checks of PBS's api2/admin/datastore.rs, backup/ and reader/
    "list-groups": Requirement(P.DATASTORE_AUDIT, P.DATASTORE_BACKUP),
    "list-snapshots": Requirement(P.DATASTORE_AUDIT, P.DATASTORE_BACKUP),
    "list-snapshot-files": Requirement(P.DATASTORE_AUDIT | P.DATASTORE_READ,
                                       P.DATASTORE_BACKUP),
    "delete-group": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_PRUNE),
    "delete-snapshot": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_PRUNE),
    "prune-group": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_PRUNE),
    "verify": Requirement(P.DATASTORE_VERIFY, P.DATASTORE_BACKUP),
    "download": Requirement(P.DATASTORE_READ, P.DATASTORE_BACKUP),
    "download-decoded": Requirement(P.DATASTORE_READ, P.DATASTORE_BACKUP),
    "catalog": Requirement(P.DATASTORE_READ, P.DATASTORE_BACKUP),
    "pxar-file-download": Requirement(P.DATASTORE_READ, P.DATASTORE_BACKUP),
    "upload-backup-log": Requirement(NO_PRIVILEGES, P.DATASTORE_BACKUP),
    "get-notes": Requirement(P.DATASTORE_AUDIT, P.DATASTORE_BACKUP),
    "set-notes": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_BACKUP),
    "get-group-notes": Requirement(P.DATASTORE_AUDIT, P.DATASTORE_BACKUP),
    "set-group-notes": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_BACKUP),
    "get-protected": Requirement(P.DATASTORE_AUDIT, P.DATASTORE_BACKUP),
    "set-protected": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_BACKUP),
    "change-owner": Requirement(P.DATASTORE_MODIFY, P.DATASTORE_BACKUP),
    # the reader protocol (restore), and the writer, which always checks ownership: for a
    # group that does not exist yet the owner lookup returns the caller, its future owner
    "reader": Requirement(P.DATASTORE_READ, P.DATASTORE_BACKUP),
    "backup": Requirement(NO_PRIVILEGES, P.DATASTORE_BACKUP),
})
"""Per-group/snapshot endpoints. Others use `check_privs`: Modify on `acl_path_for(store)` to
start GC; Audit for GC status and active operations; Modify|Prune (any, `partial=True`) on
`acl_path_for(store, ns)` for prune-datastore, which without Modify prunes only owned groups
(`namespace_group_access(override_owner=Modify, owner_and=Prune)`); Datastore.Allocate on
`/datastore` to create a datastore. Namespace create/delete: `check_ns_modification_privs`;
namespace listing: `visible_namespaces`."""


def _path_text(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def check_privs(lookup: PrivilegeLookup, authid: Authid, path: str, required: Privilege, *,
                partial: bool = False) -> None:
    """All of `required` on `path` (any one of them with `partial`), else PermissionDenied."""
    privs = lookup.privileges(authid, path)
    allowed = bool(privs & required) if partial else (privs & required) == required
    if not allowed:
        names = ("|" if partial else "&").join(privilege_names(required))
        raise PermissionDenied(f"missing permissions '{names}' on '{_path_text(path)}'")


def check_ns_privs_full(lookup: PrivilegeLookup, authid: Authid, store: str,
                        ns: BackupNamespace, full: Privilege, partial: Privilege) -> bool:
    """Any of `full` -> False; else any of `partial` -> True (ownership must be checked).

    Neither: PermissionDenied naming all of them, without saying whether `ns` exists.
    """
    path = acl_path_for(store, ns)
    privs = lookup.privileges(authid, path)
    if full and privs & full:
        return False
    if partial and privs & partial:
        return True
    names = "|".join(privilege_names(full | partial))
    raise PermissionDenied(f"permission check failed - missing {names} on {path}")


def check_ns_privs(lookup: PrivilegeLookup, authid: Authid, store: str, ns: BackupNamespace,
                   privs: Privilege) -> None:
    """Any one of `privs` on the namespace."""
    check_ns_privs_full(lookup, authid, store, ns, privs, NO_PRIVILEGES)


def is_backup_owner(owner: Authid, authid: Authid) -> bool:
    """The caller owns a group it owns itself, or one owned by one of its tokens.

    Not the other way round: a token does not own its user's groups.
    """
    return owner == authid or (owner.token is not None and user_of(owner) == authid)


def check_backup_owner(owner: Authid, authid: Authid) -> None:
    if not is_backup_owner(owner, authid):
        raise PermissionDenied(f"backup owner check failed ({authid} != {owner})")


def check_group_access(lookup: PrivilegeLookup, authid: Authid, store: str,
                       ns: BackupNamespace, requirement: Requirement,
                       owner: Callable[[], Authid]) -> None:
    """An endpoint's privilege check on a group or snapshot, asking for the owner only if
    the caller holds nothing but the partial privilege (PBS `check_privs_and_load_store`)."""
    if check_ns_privs_full(lookup, authid, store, ns, requirement.full, requirement.partial):
        check_backup_owner(owner(), authid)


def check_ns_modification_privs(lookup: PrivilegeLookup, authid: Authid, store: str,
                                ns: BackupNamespace) -> None:
    """Creating, deleting or moving `ns` needs Modify on its parent; never the root."""
    if ns.is_root:
        raise DatastoreError("the root namespace cannot be created, deleted or moved")
    check_ns_privs(lookup, authid, store, ns.parent, P.DATASTORE_MODIFY)


def check_move_group(lookup: PrivilegeLookup, authid: Authid, store: str,
                     source_ns: BackupNamespace, target_ns: BackupNamespace,
                     owner: Callable[[], Authid]) -> None:
    """pbs-move-series section 6: Modify, or Prune as owner, on the source namespace; Modify,
    or Backup as owner, on the target. Ownership is checked if either side was partial."""
    limited_source = check_ns_privs_full(lookup, authid, store, source_ns,
                                         P.DATASTORE_MODIFY, P.DATASTORE_PRUNE)
    limited_target = check_ns_privs_full(lookup, authid, store, target_ns,
                                         P.DATASTORE_MODIFY, P.DATASTORE_BACKUP)
    if limited_source or limited_target:
        check_backup_owner(owner(), authid)


def check_move_namespace(lookup: PrivilegeLookup, authid: Authid, store: str,
                         source_ns: BackupNamespace, target_ns: BackupNamespace) -> None:
    """Modify on the parents of both the source and the target; neither may be the root.

    The source is checked first, so a refused root source is reported before any privilege.
    """
    check_ns_modification_privs(lookup, authid, store, source_ns)
    check_ns_modification_privs(lookup, authid, store, target_ns)


def check_change_owner(lookup: PrivilegeLookup, authid: Authid, store: str,
                       ns: BackupNamespace, owner: Authid, new_owner: Authid) -> None:
    """Modify allows any new owner; Backup alone only moves a group between the caller and
    its own tokens (user to user is never allowed without Modify). Whether `new_owner` is
    an active user or token is the caller's check."""
    if not check_ns_privs_full(lookup, authid, store, ns, P.DATASTORE_MODIFY,
                               P.DATASTORE_BACKUP):
        return
    if owner.token is not None and new_owner.token is not None:
        allowed = user_of(owner) == user_of(new_owner) == authid
    elif owner.token is not None:
        allowed = user_of(owner) == authid and new_owner == authid
    elif new_owner.token is not None:
        allowed = owner == authid and user_of(new_owner) == authid
    else:
        allowed = False
    if not allowed:
        raise PermissionDenied(f"{authid} does not have permission to change the owner of "
                               f"this backup group to {new_owner}")


# --- listings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingScope:
    """What a caller may see of one namespace's groups: all of them, or only owned ones."""

    authid: Authid
    list_all: bool

    def may_see(self, owner: Authid | None) -> bool:
        """A group whose owner could not be read (None) is never shown."""
        return owner is not None and (self.list_all or is_backup_owner(owner, self.authid))


def listing_scope(lookup: PrivilegeLookup, authid: Authid, store: str, ns: BackupNamespace,
                  requirement: Requirement = REQUIREMENTS["list-groups"]) -> ListingScope:
    """For group and snapshot listings; PermissionDenied if the caller may see nothing."""
    limited = check_ns_privs_full(lookup, authid, store, ns, requirement.full,
                                  requirement.partial)
    return ListingScope(authid, list_all=not limited)


def filter_visible(items: Iterable[T], owner_of: Callable[[T], Authid | None],
                   scope: ListingScope) -> list[T]:
    """The items (groups, snapshots) whose group the scope may see, in their order."""
    return [item for item in items if scope.may_see(owner_of(item))]


def has_namespace_access(lookup: PrivilegeLookup, authid: Authid, store: str,
                         ns: BackupNamespace) -> bool:
    return bool(lookup.privileges(authid, acl_path_for(store, ns)) & NS_PRIVS_OK)


def visible_namespaces(lookup: PrivilegeLookup, authid: Authid, store: str,
                       parent: BackupNamespace,
                       namespaces: Iterable[BackupNamespace]) -> list[BackupNamespace]:
    """Filter a namespace listing below `parent` (which the listing includes first).

    PermissionDenied if nothing is visible and the caller has no access to `parent`: an
    empty list would confirm that `parent` exists. An endpoint whose `parent` does not exist
    must likewise answer 403 instead of 404 unless `has_namespace_access` on `parent`.
    """
    visible = [ns for ns in namespaces if has_namespace_access(lookup, authid, store, ns)]
    if not visible and not has_namespace_access(lookup, authid, store, parent):
        raise PermissionDenied("permission check failed")
    return visible


def can_access_any_namespace(lookup: PrivilegeLookup, authid: Authid, store: str,
                             namespaces: Iterable[BackupNamespace]) -> bool:
    """True if any of the datastore's namespaces is visible (walks the given namespaces)."""
    return any(has_namespace_access(lookup, authid, store, ns) for ns in namespaces)


@dataclass(frozen=True)
class DatastoreVisibility:
    """How a datastore appears in the datastore list."""

    listed: bool
    details: bool  # comment, usage: only with Audit or Backup on the datastore itself


def datastore_visibility(lookup: PrivilegeLookup, authid: Authid,
                         store: str) -> DatastoreVisibility:
    """PBS `get_datastore_list`: by ACL alone, without reading the datastore."""
    path = acl_path_for(store)
    if lookup.privileges(authid, path) & (P.DATASTORE_AUDIT | P.DATASTORE_BACKUP):
        return DatastoreVisibility(listed=True, details=True)
    listed = lookup.any_privileges_below(authid, path, NS_PRIVS_OK)
    return DatastoreVisibility(listed=listed, details=False)


class GroupAccess(enum.Enum):
    """Which groups of one namespace a recursive walk (status counts, verify-all) may use."""

    NONE = "none"
    OWNED = "owned"
    ALL = "all"


def namespace_group_access(lookup: PrivilegeLookup, authid: Authid, store: str,
                           ns: BackupNamespace, *,
                           override_owner: Privilege = P.DATASTORE_AUDIT | P.DATASTORE_READ,
                           owner_and: Privilege = NO_PRIVILEGES) -> GroupAccess:
    """PBS `ListAccessibleBackupGroups`: skip namespaces without any of `NS_PRIVS_OK`; any of
    `override_owner` shows all groups; else all of `owner_and` (if given) plus ownership."""
    privs = lookup.privileges(authid, acl_path_for(store, ns))
    if not privs & NS_PRIVS_OK:
        return GroupAccess.NONE
    if privs & override_owner:
        return GroupAccess.ALL
    if (privs & owner_and) != owner_and:
        return GroupAccess.NONE
    return GroupAccess.OWNED
