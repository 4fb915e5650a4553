"""The rules endpoints apply: full or partial privileges plus ownership, the move rules of
pbs-move-series section 6, owner changes, and listings that reveal nothing unseen."""

from __future__ import annotations

import pytest

from chunkyard.errors import DatastoreError
from chunkyard.names import Authid, BackupNamespace
from chunkyard.server.auth.acl import AclEntry, AclTree
from chunkyard.server.auth.checks import (
    REQUIREMENTS,
    GroupAccess,
    check_backup_owner,
    check_change_owner,
    check_group_access,
    check_move_group,
    check_move_namespace,
    check_ns_privs_full,
    check_privs,
    datastore_visibility,
    filter_visible,
    is_backup_owner,
    listing_scope,
    namespace_group_access,
    visible_namespaces,
)
from chunkyard.server.auth.errors import PermissionDenied
from chunkyard.server.auth.privileges import Privilege

P = Privilege
ALICE = Authid.parse("alice@pbs")
ALICE_TOKEN = Authid.parse("alice@pbs!client")
ALICE_OTHER_TOKEN = Authid.parse("alice@pbs!other")
BOB = Authid.parse("bob@pbs")
BOB_TOKEN = Authid.parse("bob@pbs!client")
ROOT = Authid.parse("root@pam")
NS = BackupNamespace.parse


def tree(*grants: tuple[str, str, str] | tuple[str, str, str, bool]) -> AclTree:
    """(path, ugid, role[, propagate])"""
    return AclTree.from_entries(AclEntry(*g) for g in grants)


class Owner:
    """An owner lookup that records whether it was asked (it is I/O in a real server)."""

    def __init__(self, owner: Authid) -> None:
        self.owner = owner
        self.calls = 0

    def __call__(self) -> Authid:
        self.calls += 1
        return self.owner


# --- ownership -----------------------------------------------------------------------------

@pytest.mark.parametrize(("owner", "caller", "owns"), [
    (ALICE, ALICE, True),
    (ALICE_TOKEN, ALICE, True),          # a user owns its tokens' groups
    (ALICE_TOKEN, ALICE_TOKEN, True),
    (ALICE, ALICE_TOKEN, False),         # a token does not own its user's groups
    (ALICE_TOKEN, ALICE_OTHER_TOKEN, False),
    (BOB, ALICE, False),
    (BOB_TOKEN, ALICE, False),
    (ALICE, ROOT, False),                # ownership knows no superuser; privileges do
])
def test_backup_owner(owner: Authid, caller: Authid, owns: bool) -> None:
    assert is_backup_owner(owner, caller) is owns
    if owns:
        check_backup_owner(owner, caller)
    else:
        with pytest.raises(PermissionDenied, match="backup owner check failed"):
            check_backup_owner(owner, caller)


def test_check_ns_privs_full() -> None:
    acl = tree(("/datastore/s/a", "alice@pbs", "DatastoreBackup"),
               ("/datastore/s/b", "alice@pbs", "DatastoreReader"))
    full, partial = P.DATASTORE_AUDIT | P.DATASTORE_READ, P.DATASTORE_BACKUP
    assert check_ns_privs_full(acl, ALICE, "s", NS("b"), full, partial) is False
    assert check_ns_privs_full(acl, ALICE, "s", NS("a/x"), full, partial) is True
    with pytest.raises(PermissionDenied) as err:
        check_ns_privs_full(acl, ALICE, "s", NS(""), full, partial)
    assert str(err.value) == ("permission check failed - missing "
                              "Datastore.Audit|Datastore.Read|Datastore.Backup on /datastore/s")
    # a namespace that does not exist is refused exactly like one that does
    with pytest.raises(PermissionDenied, match="/datastore/s/nope"):
        check_ns_privs_full(acl, ALICE, "s", NS("nope"), full, partial)


def test_check_privs_all_or_any() -> None:
    acl = tree(("/datastore/s", "alice@pbs", "DatastoreAudit"))
    check_privs(acl, ALICE, "/datastore/s", P.DATASTORE_AUDIT)
    check_privs(acl, ALICE, "/datastore/s", P.DATASTORE_AUDIT | P.DATASTORE_MODIFY, partial=True)
    with pytest.raises(PermissionDenied,
                       match=r"missing permissions 'Datastore.Audit&Datastore.Modify' "
                             r"on '/datastore/s'"):
        check_privs(acl, ALICE, "/datastore/s", P.DATASTORE_AUDIT | P.DATASTORE_MODIFY)


GROUP_CASES = [
    # (role on the namespace, endpoint, group owner, caller, allowed, owner looked up)
    ("DatastoreAdmin", "delete-group", BOB, ALICE, True, False),
    ("DatastorePowerUser", "delete-group", ALICE, ALICE, True, True),
    ("DatastorePowerUser", "delete-group", ALICE_TOKEN, ALICE, True, True),
    ("DatastorePowerUser", "delete-group", BOB, ALICE, False, True),
    ("DatastoreBackup", "delete-group", ALICE, ALICE, False, False),  # no Prune
    ("DatastoreReader", "download", BOB, ALICE, True, False),
    ("DatastoreBackup", "download", ALICE, ALICE, True, True),
    ("DatastoreBackup", "download", BOB, ALICE, False, True),
    ("DatastoreAudit", "download", BOB, ALICE, False, False),
    ("DatastoreAudit", "get-notes", BOB, ALICE, True, False),
    ("DatastoreAudit", "set-notes", BOB, ALICE, False, False),
    ("DatastoreBackup", "set-protected", ALICE, ALICE, True, True),
    ("DatastoreReader", "verify", BOB, ALICE, True, False),
    ("DatastoreBackup", "verify", BOB, ALICE, False, True),
    ("DatastoreAdmin", "upload-backup-log", BOB, ALICE, False, True),  # owner only
    ("DatastoreAdmin", "upload-backup-log", ALICE, ALICE, True, True),
    ("DatastoreBackup", "backup", ALICE_TOKEN, ALICE, True, True),
    ("DatastoreReader", "reader", BOB, ALICE, True, False),
    ("NoAccess", "get-notes", ALICE, ALICE, False, False),
]


@pytest.mark.parametrize(("role", "endpoint", "owner", "caller", "allowed", "asked"),
                         GROUP_CASES)
def test_group_access_full_or_partial_plus_owner(role: str, endpoint: str, owner: Authid,
                                                 caller: Authid, allowed: bool,
                                                 asked: bool) -> None:
    acl = tree(("/datastore/s", "alice@pbs", role))
    lookup = Owner(owner)
    if allowed:
        check_group_access(acl, caller, "s", NS("a/b"), REQUIREMENTS[endpoint], lookup)
    else:
        with pytest.raises(PermissionDenied):
            check_group_access(acl, caller, "s", NS("a/b"), REQUIREMENTS[endpoint], lookup)
    assert lookup.calls == int(asked)


def test_token_with_partial_privileges_cannot_use_its_users_groups() -> None:
    acl = tree(("/datastore/s", "alice@pbs", "DatastoreAdmin"),
               ("/datastore/s", "alice@pbs!client", "DatastorePowerUser"))
    check_group_access(acl, ALICE_TOKEN, "s", NS(""), REQUIREMENTS["delete-group"],
                       Owner(ALICE_TOKEN))
    with pytest.raises(PermissionDenied, match="owner check"):
        check_group_access(acl, ALICE_TOKEN, "s", NS(""), REQUIREMENTS["delete-group"],
                           Owner(ALICE))


# --- move group (pbs-move-series section 6) ------------------------------------------------

MOVE_GROUP_CASES = [
    # (role on source ns, role on target ns, group owner, allowed, owner looked up)
    ("DatastorePowerUser", "DatastoreBackup", ALICE, True, True),  # Prune + Backup as owner
    ("DatastorePowerUser", "DatastoreBackup", ALICE_TOKEN, True, True),
    ("DatastorePowerUser", "DatastoreBackup", BOB, False, True),  # same, not the owner
    ("DatastoreAdmin", "DatastoreAdmin", BOB, True, False),  # Modify on both: any owner
    ("DatastoreAdmin", "DatastoreBackup", ALICE, True, True),  # partial target -> owner
    ("DatastoreAdmin", "DatastoreBackup", BOB, False, True),
    ("DatastorePowerUser", "DatastoreAdmin", ALICE, True, True),  # partial source -> owner
    ("DatastorePowerUser", "DatastoreAdmin", BOB, False, True),
    ("DatastoreBackup", "DatastoreBackup", ALICE, False, False),  # no Prune on the source
    ("DatastorePowerUser", "DatastoreReader", ALICE, False, False),  # no Backup on target
    ("DatastoreReader", "DatastoreAdmin", ALICE, False, False),
    ("DatastorePowerUser", "NoAccess", ALICE, False, False),
    ("Admin", "Admin", BOB, True, False),
]


@pytest.mark.parametrize(("src_role", "dst_role", "owner", "allowed", "asked"),
                         MOVE_GROUP_CASES)
def test_move_group_privileges(src_role: str, dst_role: str, owner: Authid, allowed: bool,
                               asked: bool) -> None:
    acl = tree(("/datastore/s/src", "alice@pbs", src_role),
               ("/datastore/s/dst", "alice@pbs", dst_role))
    lookup = Owner(owner)
    if allowed:
        check_move_group(acl, ALICE, "s", NS("src"), NS("dst/x"), lookup)
    else:
        with pytest.raises(PermissionDenied):
            check_move_group(acl, ALICE, "s", NS("src"), NS("dst/x"), lookup)
    assert lookup.calls == int(asked)


def test_move_group_within_one_namespace_tree_and_by_root() -> None:
    acl = tree(("/datastore/s", "alice@pbs", "DatastorePowerUser"))
    check_move_group(acl, ALICE, "s", NS("a"), NS(""), Owner(ALICE))
    with pytest.raises(PermissionDenied):
        check_move_group(acl, ALICE, "s", NS("a"), NS(""), Owner(BOB))
    check_move_group(acl, ROOT, "s", NS("a"), NS(""), Owner(BOB))
    with pytest.raises(PermissionDenied, match="/datastore/other"):
        check_move_group(acl, ALICE, "other", NS("a"), NS(""), Owner(ALICE))


# --- move namespace ------------------------------------------------------------------------

def test_move_namespace_needs_modify_on_both_parents() -> None:
    acl = tree(("/datastore/s/p", "alice@pbs", "DatastoreAdmin", False),
               ("/datastore/s/q", "alice@pbs", "DatastoreAdmin", False),
               ("/datastore/s/r", "alice@pbs", "DatastorePowerUser"))
    check_move_namespace(acl, ALICE, "s", NS("p/a"), NS("q/b"))
    check_move_namespace(acl, ALICE, "s", NS("p/a"), NS("p/b"))  # a rename
    with pytest.raises(PermissionDenied, match="/datastore/s/r"):
        check_move_namespace(acl, ALICE, "s", NS("p/a"), NS("r/b"))  # no Modify on r
    with pytest.raises(PermissionDenied, match=r"/datastore/s$"):
        check_move_namespace(acl, ALICE, "s", NS("p"), NS("q/p"))  # source parent is root
    with pytest.raises(PermissionDenied, match="/datastore/s/p/a"):
        check_move_namespace(acl, ALICE, "s", NS("p/a/b"), NS("q/b"))  # not propagated
    check_move_namespace(acl, ROOT, "s", NS("x/y"), NS("z"))


@pytest.mark.parametrize(("source", "target"), [("", "q/b"), ("p/a", ""), ("", "")])
def test_move_namespace_rejects_the_root(source: str, target: str) -> None:
    with pytest.raises(DatastoreError, match="root namespace"):
        check_move_namespace(tree(), ROOT, "s", NS(source), NS(target))
    # PBS checks the source completely (root, then Modify on its parent) before the target:
    # a root source is refused before any privilege, a root target after the source's
    expected = DatastoreError if source == "" else PermissionDenied
    with pytest.raises(expected):
        check_move_namespace(tree(), BOB, "s", NS(source), NS(target))


def test_move_namespace_by_token_is_limited_by_its_user() -> None:
    acl = tree(("/datastore/s", "alice@pbs!client", "DatastoreAdmin"),
               ("/datastore/s/p", "alice@pbs", "DatastoreAdmin"))
    check_move_namespace(acl, ALICE_TOKEN, "s", NS("p/a"), NS("p/b"))
    with pytest.raises(PermissionDenied):
        check_move_namespace(acl, ALICE_TOKEN, "s", NS("p"), NS("q"))


# --- change owner --------------------------------------------------------------------------

CHANGE_OWNER_CASES = [
    # (role, current owner, new owner, allowed)
    ("DatastoreAdmin", BOB, ALICE, True),
    ("DatastoreBackup", ALICE, ALICE_TOKEN, True),          # user -> own token
    ("DatastoreBackup", ALICE_TOKEN, ALICE, True),          # own token -> user
    ("DatastoreBackup", ALICE_TOKEN, ALICE_OTHER_TOKEN, True),  # between own tokens
    ("DatastoreBackup", ALICE, BOB, False),                 # user -> user
    ("DatastoreBackup", ALICE, BOB_TOKEN, False),
    ("DatastoreBackup", BOB_TOKEN, ALICE, False),
    ("DatastoreBackup", BOB, BOB_TOKEN, False),             # someone else's group
    ("DatastoreReader", ALICE, ALICE_TOKEN, False),
]


@pytest.mark.parametrize(("role", "owner", "new_owner", "allowed"), CHANGE_OWNER_CASES)
def test_change_owner(role: str, owner: Authid, new_owner: Authid, allowed: bool) -> None:
    acl = tree(("/datastore/s", "alice@pbs", role))
    if allowed:
        check_change_owner(acl, ALICE, "s", NS("a"), owner, new_owner)
    else:
        with pytest.raises(PermissionDenied):
            check_change_owner(acl, ALICE, "s", NS("a"), owner, new_owner)


# --- listings ------------------------------------------------------------------------------

GROUPS = [("vm/100", ALICE), ("vm/101", ALICE_TOKEN), ("vm/102", BOB), ("vm/103", None)]


def _owner(item: tuple[str, Authid | None]) -> Authid | None:
    return item[1]


@pytest.mark.parametrize(("role", "caller", "expected"), [
    ("DatastoreAudit", ALICE, ["vm/100", "vm/101", "vm/102"]),  # unreadable owner: hidden
    ("DatastoreAdmin", ALICE, ["vm/100", "vm/101", "vm/102"]),
    ("DatastoreBackup", ALICE, ["vm/100", "vm/101"]),
    ("DatastorePowerUser", BOB, ["vm/102"]),
    ("DatastoreBackup", ALICE_TOKEN, []),  # the token holds no ACL entry: refused below
])
def test_group_listing_filter(role: str, caller: Authid, expected: list[str]) -> None:
    acl = tree(("/datastore/s", "alice@pbs", role), ("/datastore/s", "bob@pbs", role),
               ("/datastore/s", "alice@pbs!client", "DatastoreBackup" if expected else "NoAccess"))
    if not expected:
        with pytest.raises(PermissionDenied):
            listing_scope(acl, caller, "s", NS("a"))
        return
    scope = listing_scope(acl, caller, "s", NS("a"))
    assert [g for g, _ in filter_visible(GROUPS, _owner, scope)] == expected


def test_group_listing_read_alone_is_not_enough() -> None:
    acl = tree(("/datastore/s", "alice@pbs", "DatastoreReader"),
               ("/datastore/t", "alice@pbs", "Audit"))
    assert listing_scope(acl, ALICE, "s", NS("")).list_all  # Reader includes Audit
    acl.add("/datastore/s/r", "alice@pbs", "NoAccess")
    with pytest.raises(PermissionDenied):
        listing_scope(acl, ALICE, "s", NS("r"))
    assert listing_scope(acl, ALICE, "t", NS(""), REQUIREMENTS["list-snapshot-files"]).list_all


ALL_NS = [NS(x) for x in ("", "a", "a/b", "a/b/c", "a/d", "e", "e/f")]


@pytest.mark.parametrize(("grants", "parent", "expected"), [
    # propagated from the datastore: everything
    ([("/datastore/s", "DatastoreAudit", True)], "", ["", "a", "a/b", "a/b/c", "a/d", "e", "e/f"]),
    # only on a/b: a/b and below, not the root or a (the path shows in a/b's own name)
    ([("/datastore/s/a/b", "DatastoreBackup", True)], "", ["a/b", "a/b/c"]),
    # not propagated: only that namespace
    ([("/datastore/s/a", "DatastoreReader", False)], "", ["a"]),
    # a NoAccess hole
    ([("/datastore/s", "DatastoreAdmin", True), ("/datastore/s/a/b", "NoAccess", True)], "",
     ["", "a", "a/d", "e", "e/f"]),
    # Verify or Prune alone do not make a namespace visible
    ([("/datastore/s/e", "DatastorePowerUser", True)], "", ["e", "e/f"]),
])
def test_namespace_listing(grants: list[tuple[str, str, bool]], parent: str,
                           expected: list[str]) -> None:
    acl = tree(*((path, "alice@pbs", role, prop) for path, role, prop in grants))
    below = [ns for ns in ALL_NS if NS(parent).contains(ns)]
    assert [str(ns) for ns in visible_namespaces(acl, ALICE, "s", NS(parent), below)] == expected


def test_namespace_listing_hides_the_parent() -> None:
    acl = tree(("/datastore/s/a/b", "alice@pbs", "DatastoreAudit"),
               ("/datastore/s/x", "alice@pbs", "DatastoreAdmin", False))
    # nothing visible and no access to the parent: refused, not an empty list
    with pytest.raises(PermissionDenied):
        visible_namespaces(acl, ALICE, "s", NS("e"), [NS("e"), NS("e/f")])
    with pytest.raises(PermissionDenied):  # a parent that does not exist: the same answer
        visible_namespaces(acl, ALICE, "s", NS("nope"), [])
    # with access to the parent an empty listing is fine
    assert visible_namespaces(acl, ALICE, "s", NS("x"), []) == []
    assert visible_namespaces(acl, ALICE, "s", NS("x"), [NS("x"), NS("x/y")]) == [NS("x")]


def test_datastore_visibility() -> None:
    acl = tree(("/datastore/full", "alice@pbs", "DatastoreBackup"),
               ("/datastore/deep/a/b", "alice@pbs", "DatastoreReader", False),
               ("/datastore/verify", "alice@pbs", "DatastoreAudit", False),
               ("/datastore/verify/x", "alice@pbs", "NoAccess"),
               ("/datastore/prune/a", "alice@pbs", "DatastorePowerUser"))
    seen = {store: datastore_visibility(acl, ALICE, store)
            for store in ("full", "deep", "verify", "prune", "none")}
    assert (seen["full"].listed, seen["full"].details) == (True, True)
    assert (seen["deep"].listed, seen["deep"].details) == (True, False)
    assert (seen["verify"].listed, seen["verify"].details) == (True, True)
    assert (seen["prune"].listed, seen["prune"].details) == (True, False)  # Backup below
    assert not seen["none"].listed
    assert datastore_visibility(acl, ROOT, "none").details


def test_namespace_group_access_for_recursive_walks() -> None:
    acl = tree(("/datastore/s", "alice@pbs", "DatastoreBackup"),
               ("/datastore/s/r", "alice@pbs", "DatastoreReader"),
               ("/datastore/s/n", "alice@pbs", "NoAccess"))
    assert namespace_group_access(acl, ALICE, "s", NS("")) is GroupAccess.OWNED
    assert namespace_group_access(acl, ALICE, "s", NS("r/x")) is GroupAccess.ALL
    assert namespace_group_access(acl, ALICE, "s", NS("n")) is GroupAccess.NONE
    assert namespace_group_access(acl, ALICE, "s", NS(""),
                                  owner_and=P.DATASTORE_PRUNE) is GroupAccess.NONE
    assert namespace_group_access(acl, ROOT, "s", NS("n")) is GroupAccess.ALL
