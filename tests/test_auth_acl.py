"""ACL evaluation with PBS's semantics: every role on datastore and namespace paths, with and
without propagation, replacement by deeper entries, NoAccess, tokens, root@pam and groups."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.names import Authid, BackupNamespace
from chunkyard.server.auth.acl import AclEntry, AclTree, InvalidAcl, acl_path_for
from chunkyard.server.auth.privileges import (
    ALL_PRIVILEGES,
    NO_PRIVILEGES,
    NS_PRIVS_OK,
    PRIVILEGE_NAMES,
    ROLE_DESCRIPTIONS,
    ROLES,
    Privilege,
    parse_privilege,
    privilege_names,
)

P = Privilege
USER = Authid.parse("alice@pbs")
TOKEN = Authid.parse("alice@pbs!client")
OTHER = Authid.parse("bob@pbs")
ROOT = Authid.parse("root@pam")
ROOT_TOKEN = Authid.parse("root@pam!automation")


def acl(*lines: str) -> AclTree:
    """Entries in acl.cfg syntax: `acl:<propagate>:<path>:<ugid,...>:<role,...>`."""
    entries = []
    for line in lines:
        _, propagate, path, ugids, roles = line.split(":")
        for ugid in ugids.split(","):
            for role in roles.split(","):
                entries.append(AclEntry(path, ugid, role, propagate == "1"))
    return AclTree.from_entries(entries)


# --- the role table ------------------------------------------------------------------------

def test_role_table_matches_pbs() -> None:
    d = P.DATASTORE_AUDIT, P.DATASTORE_MODIFY, P.DATASTORE_READ, P.DATASTORE_VERIFY
    audit, modify, read, verify = d
    backup, prune = P.DATASTORE_BACKUP, P.DATASTORE_PRUNE
    assert ROLES["Admin"] == ALL_PRIVILEGES
    assert ROLES["NoAccess"] == NO_PRIVILEGES
    assert ROLES["Audit"] == P.SYS_AUDIT | audit
    assert ROLES["DatastoreAdmin"] == audit | modify | read | verify | backup | prune
    assert ROLES["DatastoreReader"] == audit | verify | read
    assert ROLES["DatastoreBackup"] == backup
    assert ROLES["DatastorePowerUser"] == backup | prune
    assert ROLES["DatastoreAudit"] == audit
    assert ROLES["RemoteAdmin"] == P.REMOTE_AUDIT | P.REMOTE_MODIFY | P.REMOTE_READ
    assert ROLES["RemoteSyncOperator"] == P.REMOTE_AUDIT | P.REMOTE_READ
    assert ROLES["TapeOperator"] == P.TAPE_AUDIT | P.TAPE_READ | P.TAPE_WRITE
    assert ROLES["TapeReader"] == P.TAPE_AUDIT | P.TAPE_READ
    assert set(ROLES) == set(ROLE_DESCRIPTIONS)
    assert (audit | modify | read | backup) == NS_PRIVS_OK
    # Datastore.Allocate is only in Admin (creating datastores is not a datastore role)
    assert [r for r, p in ROLES.items() if p & P.DATASTORE_ALLOCATE] == ["Admin"]


def test_privilege_names_round_trip_in_pbs_order() -> None:
    for priv, name in PRIVILEGE_NAMES.items():
        assert parse_privilege(name) == priv
    assert privilege_names(P.DATASTORE_PRUNE | P.DATASTORE_AUDIT) == [
        "Datastore.Audit", "Datastore.Prune"]
    assert len(privilege_names(ALL_PRIVILEGES)) == len(PRIVILEGE_NAMES)
    with pytest.raises(KeyError, match="unknown privilege"):
        parse_privilege("Datastore.Everything")


# --- the matrix ----------------------------------------------------------------------------

S, A, AB, B, T = ("/datastore/s", "/datastore/s/a", "/datastore/s/a/b", "/datastore/s/b",
                  "/datastore/t")
# (ACL lines with {role} and the user alice@pbs, {path: "role" | "admin" | "audit" | None})
MATRIX: list[tuple[list[str], dict[str, str | None]]] = [
    # propagating on the datastore: the datastore and every namespace below it
    (["acl:1:/datastore/s:alice@pbs:{role}"],
     {"/": None, "/datastore": None, S: "role", A: "role", AB: "role", T: None}),
    # not propagating: the datastore itself only, no namespace
    (["acl:0:/datastore/s:alice@pbs:{role}"],
     {"/": None, S: "role", A: None, AB: None, T: None}),
    # on a namespace: it and (propagated) its children, not its parent or siblings
    (["acl:1:/datastore/s/a:alice@pbs:{role}"],
     {S: None, A: "role", AB: "role", B: None}),
    (["acl:0:/datastore/s/a:alice@pbs:{role}"],
     {S: None, A: "role", AB: None}),
    # on / with propagation: everywhere
    (["acl:1:/:alice@pbs:{role}"], {"/": "role", "/datastore": "role", S: "role", AB: "role"}),
    # a deeper entry replaces (never merges with) the inherited roles
    (["acl:1:/datastore/s:alice@pbs:DatastoreAdmin", "acl:1:/datastore/s/a:alice@pbs:{role}"],
     {S: "admin", A: "role", AB: "role", B: "admin"}),
    # a non-propagating deeper entry replaces only on its own node
    (["acl:1:/datastore:alice@pbs:{role}", "acl:0:/datastore/s:alice@pbs:DatastoreAudit"],
     {"/datastore": "role", S: "audit", A: "role", T: "role"}),
    # propagating NoAccess cuts off the subtree
    (["acl:1:/datastore:alice@pbs:{role}", "acl:1:/datastore/s/a:alice@pbs:NoAccess"],
     {S: "role", A: None, AB: None, B: "role"}),
    # non-propagating NoAccess only blocks its own node
    (["acl:1:/datastore:alice@pbs:{role}", "acl:0:/datastore/s/a:alice@pbs:NoAccess"],
     {S: "role", A: None, AB: "role"}),
    # a path below the tree's leaves keeps what was propagated to the deepest node
    (["acl:1:/datastore/s/a/b:alice@pbs:{role}"], {AB: "role", AB + "/c/d/e": "role"}),
    # another user's entries never count
    (["acl:1:/:bob@pbs:{role}"], {"/": None, S: None, AB: None}),
]


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("case", range(len(MATRIX)))
def test_privilege_matrix(role: str, case: int) -> None:
    lines, expected = MATRIX[case]
    tree = acl(*(line.format(role=role) for line in lines))
    names = {"role": ROLES[role], "admin": ROLES["DatastoreAdmin"],
             "audit": ROLES["DatastoreAudit"], None: NO_PRIVILEGES}
    for path, which in expected.items():
        assert tree.privileges(USER, path) == names[which], (lines, path)
        # a token with no ACL entries of its own gets nothing, whatever its user has
        assert tree.privileges(TOKEN, path) == NO_PRIVILEGES


def test_roles_and_propagation_details() -> None:
    tree = acl("acl:1:/datastore:alice@pbs:DatastoreReader",
               "acl:0:/datastore:alice@pbs:DatastoreBackup")
    assert tree.roles(USER, "/datastore") == {"DatastoreReader": True, "DatastoreBackup": False}
    assert tree.roles(USER, "/datastore/s") == {"DatastoreReader": True}
    privs, propagated = tree.privileges_details(USER, "/datastore")
    assert privs == ROLES["DatastoreReader"] | P.DATASTORE_BACKUP
    assert propagated == ROLES["DatastoreReader"]


def test_no_access_insertion_order_as_in_pbs() -> None:
    # NoAccess clears the roles before it; a later role clears NoAccess
    assert acl("acl:1:/x:alice@pbs:Admin,NoAccess").privileges(USER, "/x") == NO_PRIVILEGES
    assert acl("acl:1:/x:alice@pbs:NoAccess,Audit").privileges(USER, "/x") == ROLES["Audit"]
    tree = acl("acl:1:/:alice@pbs:Admin", "acl:1:/x:alice@pbs:Audit", "acl:1:/x:alice@pbs:NoAccess")
    assert tree.roles(USER, "/x/y") == {"NoAccess": False}


def test_path_spelling_is_normalised_like_split_acl_path() -> None:
    tree = acl("acl:1://datastore//s/:alice@pbs:DatastoreAudit")
    assert tree.privileges(USER, "/datastore/s/") == ROLES["DatastoreAudit"]
    assert tree.privileges(USER, "datastore/s/a") == ROLES["DatastoreAudit"]


@dataclass(frozen=True, order=True)
class TupleEntry:
    """The shape of chunkyard.config.acl.AclEntry: the path as a tuple of components."""

    path: tuple[str, ...]
    ugid: str
    role: str
    propagate: bool


def test_entries_with_tuple_paths() -> None:
    tree = AclTree.from_entries([TupleEntry(("datastore", "s"), "alice@pbs", "DatastoreAudit",
                                            True),
                                 TupleEntry((), "alice@pbs!client", "Admin", True)])
    assert tree.privileges(USER, AB) == ROLES["DatastoreAudit"]
    assert tree.privileges(TOKEN, AB) == ROLES["DatastoreAudit"]
    assert tree.privileges(TOKEN, "/") == NO_PRIVILEGES


def test_acl_path_for() -> None:
    assert acl_path_for("store1") == "/datastore/store1"
    assert acl_path_for("store1", BackupNamespace.root()) == "/datastore/store1"
    assert acl_path_for("store1", BackupNamespace.parse("a/b/c")) == "/datastore/store1/a/b/c"


# --- tokens, root, groups ------------------------------------------------------------------

TOKEN_CASES = [
    # (user role on /datastore/s, token role on /datastore/s, expected token privileges)
    ("DatastoreAdmin", "DatastoreBackup", ROLES["DatastoreBackup"]),
    ("DatastoreBackup", "DatastoreAdmin", ROLES["DatastoreBackup"]),
    ("DatastoreReader", "DatastorePowerUser", NO_PRIVILEGES),
    ("DatastorePowerUser", "DatastoreAdmin", ROLES["DatastorePowerUser"]),
    ("Admin", "Admin", ALL_PRIVILEGES),
    ("NoAccess", "Admin", NO_PRIVILEGES),
    ("Admin", "NoAccess", NO_PRIVILEGES),
    ("Audit", "DatastoreReader", P.DATASTORE_AUDIT),
]


@pytest.mark.parametrize(("user_role", "token_role", "expected"), TOKEN_CASES)
def test_token_privileges_are_the_intersection(user_role: str, token_role: str,
                                               expected: Privilege) -> None:
    tree = acl(f"acl:1:/datastore/s:alice@pbs:{user_role}",
               f"acl:1:/datastore/s:alice@pbs!client:{token_role}")
    for path in (S, AB):
        assert tree.privileges(TOKEN, path) == expected
        assert tree.privileges(USER, path) == ROLES[user_role]
    # the propagated part is intersected too
    assert tree.privileges_details(TOKEN, S)[1] == expected


def test_token_intersection_is_per_path() -> None:
    tree = acl("acl:1:/datastore/s:alice@pbs:DatastoreAdmin",
               "acl:1:/datastore:alice@pbs!client:DatastoreBackup")
    assert tree.privileges(TOKEN, S) == P.DATASTORE_BACKUP
    assert tree.privileges(TOKEN, T) == NO_PRIVILEGES  # the user has nothing on t
    assert tree.privileges(Authid.parse("alice@pbs!other"), S) == NO_PRIVILEGES


def test_root_at_pam_has_everything_its_tokens_do_not() -> None:
    tree = acl("acl:1:/:root@pam:NoAccess", "acl:1:/datastore:root@pam!automation:DatastoreAudit")
    for path in ("/", S, AB, "/system/anything"):
        assert tree.privileges(ROOT, path) == ALL_PRIVILEGES
    assert tree.privileges(ROOT_TOKEN, S) == P.DATASTORE_AUDIT
    assert tree.privileges(ROOT_TOKEN, "/") == NO_PRIVILEGES
    assert tree.privileges(Authid.parse("root@pbs"), S) == NO_PRIVILEGES  # another realm


def test_group_entries_are_accepted_but_grant_nothing() -> None:
    tree = acl("acl:1:/:@admins:Admin", "acl:1:/datastore:alice@pbs:DatastoreAudit")
    assert tree.privileges(USER, "/") == NO_PRIVILEGES
    assert tree.privileges(USER, S) == P.DATASTORE_AUDIT
    assert not tree.any_privileges_below(OTHER, "/", ALL_PRIVILEGES)


def test_invalid_entries() -> None:
    with pytest.raises(InvalidAcl, match="unknown role 'SuperUser'"):
        acl("acl:1:/:alice@pbs:SuperUser")
    with pytest.raises(InvalidAcl, match="auth id"):
        acl("acl:1:/:alice:Admin")


def test_any_privileges_below() -> None:
    tree = acl("acl:0:/datastore/s/a/b:alice@pbs:DatastoreBackup",
               "acl:1:/datastore/t:alice@pbs:DatastoreAudit",
               "acl:1:/datastore/s/a:alice@pbs!client:DatastoreAdmin")
    assert tree.any_privileges_below(USER, "/datastore/s", NS_PRIVS_OK)
    assert tree.any_privileges_below(USER, "/datastore", P.DATASTORE_BACKUP)
    assert not tree.any_privileges_below(USER, "/datastore/s", P.DATASTORE_AUDIT)
    assert not tree.any_privileges_below(USER, "/datastore/u", NS_PRIVS_OK)
    assert not tree.any_privileges_below(USER, "/datastore/s/a/b/c", NS_PRIVS_OK)
    assert tree.any_privileges_below(USER, "/datastore/t/x", P.DATASTORE_AUDIT)  # propagated
    # the token's Admin propagates from s/a; its user has Backup on s/a/b only: the token
    # has Backup there (PBS's any_privs_below misses it: it visits only the token's paths)
    assert tree.privileges(TOKEN, AB) == P.DATASTORE_BACKUP
    assert tree.any_privileges_below(TOKEN, "/datastore/s", P.DATASTORE_BACKUP)
    assert not tree.any_privileges_below(TOKEN, "/datastore/s", P.DATASTORE_MODIFY)
    assert not tree.any_privileges_below(TOKEN, "/datastore/t", NS_PRIVS_OK)
    assert tree.any_privileges_below(ROOT, "/datastore/nowhere", NS_PRIVS_OK)


def test_any_privileges_below_sees_through_a_non_propagating_anchor() -> None:
    # PBS's any_privs_below answers False here although /datastore/s/a inherits Admin
    tree = acl("acl:1:/:alice@pbs:Admin", "acl:0:/datastore/s:alice@pbs:NoAccess")
    assert tree.privileges(USER, S) == NO_PRIVILEGES
    assert tree.privileges(USER, A) == ALL_PRIVILEGES
    assert tree.privileges_details(USER, S) == (NO_PRIVILEGES, NO_PRIVILEGES)  # as in PBS
    assert tree.any_privileges_below(USER, S, NS_PRIVS_OK)
    tree = acl("acl:1:/:alice@pbs:Admin", "acl:1:/datastore/s:alice@pbs:NoAccess")
    assert not tree.any_privileges_below(USER, S, NS_PRIVS_OK)
    # a token's privileges also appear where only its user has an entry
    tree = acl("acl:1:/:alice@pbs!client:Admin", "acl:0:/datastore/s/a:alice@pbs:DatastoreAudit")
    assert tree.privileges(TOKEN, A) == P.DATASTORE_AUDIT
    assert tree.any_privileges_below(TOKEN, "/datastore", NS_PRIVS_OK)


# --- properties ----------------------------------------------------------------------------

paths = st.lists(st.sampled_from(["datastore", "s", "t", "a", "b"]), max_size=4).map(
    lambda parts: "/" + "/".join(parts))
subjects = st.sampled_from(["alice@pbs", "alice@pbs!client", "root@pam!automation", "@g"])
entry = st.builds(AclEntry, paths, subjects, st.sampled_from(sorted(ROLES)), st.booleans())


@settings(max_examples=150, deadline=None)
@given(st.lists(entry, max_size=8), paths)
def test_a_token_never_exceeds_its_user(entries: list[AclEntry], path: str) -> None:
    tree = AclTree.from_entries(entries)
    user_privs, user_propagated = tree.privileges_details(USER, path)
    token_privs, token_propagated = tree.privileges_details(TOKEN, path)
    assert token_privs & ~user_privs == NO_PRIVILEGES
    assert token_propagated & ~user_propagated == NO_PRIVILEGES
    assert token_propagated & ~token_privs == NO_PRIVILEGES
    assert tree.privileges(ROOT, path) == ALL_PRIVILEGES


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, max_size=8), paths, st.sampled_from([USER, TOKEN]))
def test_any_privileges_below_matches_brute_force(entries: list[AclEntry], path: str,
                                                  who: Authid) -> None:
    tree = AclTree.from_entries(entries)
    prefix = path.rstrip("/") + "/"
    below = {prefix + "fresh"} | {e.path.rstrip("/") for e in entries
                                  if e.path.rstrip("/").startswith(prefix)}
    expected = any(tree.privileges(who, p) & NS_PRIVS_OK for p in below)
    assert tree.any_privileges_below(who, path, NS_PRIVS_OK) == expected
