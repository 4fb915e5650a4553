"""Namespace, group and snapshot lifecycle operations (spec §1.2, §1.7, §11.3) and their locks
("Who takes what" in shared/design/locking.md), through the Python API.

The concurrency tests hold locks in a real child process (fork), exactly as the operation they
imitate takes them, and check what a competing operation in this process may and may not do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from chunkyard.datastore import groups, namespaces, queries, snapshots
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockKey
from chunkyard.errors import (
    AlreadyExists,
    ChunkyardError,
    DatastoreError,
    InvalidName,
    NotFound,
)
from chunkyard.formats.keyfile import create_key_file
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace
from tests.store_helpers import (
    OWNER,
    ROOT,
    T0,
    X,
    assert_names_holder,
    backup,
    backup_writer,
    holding,
    listed,
    lock_dir_of,
    make_namespaces,
    ns,
    ns_dir,
    reader_of,
    snapshot_lock_files,
)

HOST_X = BackupGroup.parse("host/x")
VM_1 = BackupGroup.parse("vm/1")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "file.txt").write_text("lifecycle\n")
    return d


# -- namespace create ----------------------------------------------------------------------

def test_create_namespace_needs_its_parent(ds: Datastore) -> None:
    with pytest.raises(NotFound, match="parent"):
        namespaces.create_namespace(ds, ns("a/b"))
    assert not ns_dir(ds, "a").exists()
    assert namespaces.create_namespace(ds, ns("a")) == ns("a")
    assert namespaces.create_namespace(ds, ns("a/b")) == ns("a/b")
    assert ns_dir(ds, "a/b").is_dir()
    assert listed(ds) == ["", "a", "a/b"]


def test_create_existing_namespace_is_refused(ds: Datastore) -> None:
    make_namespaces(ds, "a", "a/b")
    (ns_dir(ds, "a/b") / "marker").write_text("keep")
    with pytest.raises(AlreadyExists, match="a/b"):
        namespaces.create_namespace(ds, ns("a/b"))
    assert (ns_dir(ds, "a/b") / "marker").read_text() == "keep"


def test_create_root_is_refused(ds: Datastore) -> None:
    with pytest.raises(ChunkyardError) as err:
        namespaces.create_namespace(ds, ROOT)
    assert not isinstance(err.value, NotFound | AlreadyExists)
    assert "root" in str(err.value)


def test_create_name_longer_than_32_is_refused(ds: Datastore) -> None:
    with pytest.raises(InvalidName, match="32"):
        namespaces.create_namespace(ds, ns("n" * 33))
    assert not ns_dir(ds, "n" * 33).exists()
    assert not (Path(ds.path) / "ns").exists() or not any((Path(ds.path) / "ns").iterdir())
    namespaces.create_namespace(ds, ns("n" * 32))  # the limit itself is fine
    make_namespaces(ds, "p")
    with pytest.raises(InvalidName):  # the limit applies to the new component, at any depth
        namespaces.create_namespace(ds, ns("p/" + "q" * 33))
    assert listed(ds) == ["", "n" * 32, "p"]


def test_depth_eight_is_refused(ds: Datastore) -> None:
    seven = "/".join("abcdefg")
    make_namespaces(ds, *("/".join("abcdefg"[:i]) for i in range(1, 8)))
    assert ns_dir(ds, seven).is_dir()
    with pytest.raises(InvalidName, match="deep"):
        ns(seven + "/h")
    with pytest.raises(InvalidName):
        ns(seven).child("h")
    assert listed(ds)[-1] == seven


def test_create_refuses_depth_eight_even_from_an_unparsed_namespace(ds: Datastore) -> None:
    """PBS builds the new namespace from parent + name inside create, which enforces the
    depth; a BackupNamespace made with the raw constructor must not get past create either
    (the directory would exist but never be listed)."""
    make_namespaces(ds, *("/".join("abcdefg"[:i]) for i in range(1, 8)))
    with pytest.raises(InvalidName):
        namespaces.create_namespace(ds, BackupNamespace(tuple("abcdefgh")))
    assert not (ns_dir(ds, "a/b/c/d/e/f/g") / "ns" / "h").exists()


def test_namespace_list_is_parent_first_then_depth_first(ds: Datastore) -> None:
    make_namespaces(ds, "b", "a", "a/y", "a/x", "a/x/deep", "b/z")
    assert listed(ds) == ["", "a", "a/x", "a/x/deep", "a/y", "b", "b/z"]
    assert listed(ds, depth=0) == [""]
    assert listed(ds, depth=1) == ["", "a", "b"]
    assert listed(ds, depth=2) == ["", "a", "a/x", "a/y", "b", "b/z"]
    assert listed(ds, "a") == ["a", "a/x", "a/x/deep", "a/y"]
    assert listed(ds, "a", 1) == ["a", "a/x", "a/y"]
    assert listed(ds, "a/x/deep") == ["a/x/deep"]
    assert all(set(row) == {"ns"} for row in queries.namespace_list(ds, ROOT, 7))
    with pytest.raises(NotFound):
        queries.namespace_list(ds, ns("nope"), 7)
    with pytest.raises(InvalidName):
        queries.namespace_list(ds, ROOT, 8)


# -- namespace delete ----------------------------------------------------------------------

def test_delete_root_is_refused(ds: Datastore, src: Path) -> None:
    backup(ds, src, "", HOST_X, T0)
    for delete_groups in (False, True):
        with pytest.raises(DatastoreError, match="root"):
            namespaces.delete_namespace(ds, ROOT, delete_groups=delete_groups,
                                        error_on_protected=False)
    assert ds.list_groups(ROOT) == [HOST_X]


def test_delete_missing_namespace(ds: Datastore) -> None:
    with pytest.raises(NotFound, match="nope"):
        namespaces.delete_namespace(ds, ns("nope"))


def test_delete_empty_subtree_removes_everything(ds: Datastore) -> None:
    make_namespaces(ds, "a", "a/b", "a/b/c", "a/d", "keep")
    stats = namespaces.delete_namespace(ds, ns("a"))
    assert stats.as_dict() == {"removed-groups": 0, "protected-snapshots": 0,
                               "removed-snapshots": 0}
    assert listed(ds) == ["", "keep"]
    assert not ns_dir(ds, "a").exists()


def test_delete_without_delete_groups_keeps_groups(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "a/b", "a/b/c", "a/d", "a/d/e")
    snap = backup(ds, src, "a/b/c", HOST_X, T0)
    with pytest.raises(DatastoreError, match="a/b/c"):
        namespaces.delete_namespace(ds, ns("a"))
    # Empty namespaces went (deepest first); the one holding a group and its ancestors stay.
    assert listed(ds) == ["", "a", "a/b", "a/b/c"]
    assert ds.snapshot_exists(ns("a/b/c"), snap)
    # error_on_protected=False: the same, without an error, and nothing counted as removed.
    make_namespaces(ds, "a/f")
    stats = namespaces.delete_namespace(ds, ns("a"), error_on_protected=False)
    assert stats.as_dict() == {"removed-groups": 0, "protected-snapshots": 0,
                               "removed-snapshots": 0}
    assert listed(ds) == ["", "a", "a/b", "a/b/c"]
    assert ds.list_snapshots(ns("a/b/c"), HOST_X)[0].dir == snap
    # A namespace with groups of its own, no children.
    with pytest.raises(DatastoreError):
        namespaces.delete_namespace(ds, ns("a/b/c"))
    assert ds.snapshot_exists(ns("a/b/c"), snap)


def _tree_with_protected(ds: Datastore, src: Path, top: str) -> BackupDir:
    """top/{b/{c}, d}: host/x (2 snapshots, the older protected) in top/b, vm/1 in top/b/c,
    host/x (1 snapshot) in top/d, host/x (1) in top. Returns the protected snapshot."""
    make_namespaces(ds, top, f"{top}/b", f"{top}/b/c", f"{top}/d")
    protected = backup(ds, src, f"{top}/b", HOST_X, T0)
    backup(ds, src, f"{top}/b", HOST_X, T0 + 1)
    backup(ds, src, f"{top}/b/c", VM_1, T0)
    backup(ds, src, f"{top}/d", HOST_X, T0)
    backup(ds, src, top, HOST_X, T0)
    snapshots.set_protected(ds, ns(f"{top}/b"), protected, True)
    return protected


def _assert_only_protected_left(ds: Datastore, top: str, protected: BackupDir) -> None:
    assert listed(ds, top) == [top, f"{top}/b"]
    assert ds.list_groups(ns(top)) == []
    assert ds.list_groups(ns(f"{top}/b")) == [HOST_X]
    assert [i.dir for i in ds.list_snapshots(ns(f"{top}/b"), HOST_X)] == [protected]
    assert ds.is_protected(ns(f"{top}/b"), protected)
    assert ds.get_owner(ns(f"{top}/b"), HOST_X) == OWNER  # the group keeps its owner


def test_delete_groups_keeps_protected_snapshots_and_counts(ds: Datastore, src: Path) -> None:
    protected = _tree_with_protected(ds, src, "p")
    stats = namespaces.delete_namespace(ds, ns("p"), delete_groups=True,
                                        error_on_protected=False)
    assert stats.as_dict() == {"removed-groups": 3, "protected-snapshots": 1,
                               "removed-snapshots": 4}
    _assert_only_protected_left(ds, "p", protected)


def test_delete_groups_error_on_protected_raises_after_removing_the_rest(
        ds: Datastore, src: Path) -> None:
    protected = _tree_with_protected(ds, src, "q")
    with pytest.raises(DatastoreError, match="protected"):
        namespaces.delete_namespace(ds, ns("q"), delete_groups=True)
    _assert_only_protected_left(ds, "q", protected)
    # Once unprotected, the rest goes.
    snapshots.set_protected(ds, ns("q/b"), protected, False)
    stats = namespaces.delete_namespace(ds, ns("q"), delete_groups=True)
    assert stats.as_dict() == {"removed-groups": 1, "protected-snapshots": 0,
                               "removed-snapshots": 1}
    assert listed(ds) == [""]


def test_deleted_namespaces_leave_no_lock_files(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "a/b", "a/c", "keep")
    backup(ds, src, "a/b", HOST_X, T0)
    backup(ds, src, "keep", HOST_X, T0)
    for name in ("a", "a/b", "keep"):
        assert lock_dir_of(ds, name).is_dir(), name
    # group and snapshot lock files go with their last holder; one left by a process killed
    # with -9 stays until its namespace (or group) goes:
    leftover = ds.locks.lock_file_path(LockKey.group_access(ns("a/b"), HOST_X))
    open(leftover, "a").close()
    namespaces.delete_namespace(ds, ns("a"), delete_groups=True)
    for name in ("a", "a/b", "a/c"):
        assert not lock_dir_of(ds, name).exists(), name
    assert lock_dir_of(ds, "keep").is_dir()
    # A namespace of the same name made again starts clean and works.
    make_namespaces(ds, "a", "a/b")
    backup(ds, src, "a/b", HOST_X, T0 + 5)
    assert [i.dir.time for i in ds.list_snapshots(ns("a/b"), HOST_X)] == [T0 + 5]


# -- groups ----------------------------------------------------------------------------------

def test_delete_group_keeps_protected_snapshots(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a")
    old = backup(ds, src, "a", HOST_X, T0)
    backup(ds, src, "a", HOST_X, T0 + 1)
    backup(ds, src, "a", HOST_X, T0 + 2)
    snapshots.set_protected(ds, ns("a"), old, True)
    groups.set_group_notes(ds, ns("a"), HOST_X, "notes stay")
    with pytest.raises(DatastoreError, match="protected"):
        groups.delete_group(ds, ns("a"), HOST_X)
    assert [i.dir for i in ds.list_snapshots(ns("a"), HOST_X)] == [old]
    assert groups.get_group_notes(ds, ns("a"), HOST_X) == "notes stay"
    assert ds.get_owner(ns("a"), HOST_X) == OWNER
    stats = groups.delete_group(ds, ns("a"), HOST_X, error_on_protected=False)
    assert stats.as_dict() == {"removed-groups": 0, "protected-snapshots": 1,
                               "removed-snapshots": 0}
    snapshots.set_protected(ds, ns("a"), old, False)
    stats = groups.delete_group(ds, ns("a"), HOST_X)
    assert stats.as_dict() == {"removed-groups": 1, "protected-snapshots": 0,
                               "removed-snapshots": 1}
    assert not ds.group_exists(ns("a"), HOST_X)
    assert not (ns_dir(ds, "a") / "host" / "x").exists()
    assert queries.group_list(ds, ns("a")) == []
    assert not (lock_dir_of(ds, "a") / os.path.basename(
        ds.locks.lock_file_path(LockKey.group_access(ns("a"), HOST_X)))).exists()
    with pytest.raises(NotFound):
        groups.delete_group(ds, ns("a"), HOST_X)
    with pytest.raises(NotFound):
        groups.delete_group(ds, ns("nope"), HOST_X)


def test_removed_snapshots_leave_no_lock_files_when_their_group_stays(
        ds: Datastore, src: Path) -> None:
    """Spec §1.7: destroying a snapshot removes its two lock files, also inside a group
    delete that has to keep the group for a protected snapshot."""
    old = backup(ds, src, "", HOST_X, T0)
    new = backup(ds, src, "", HOST_X, T0 + 1)
    snapshots.set_protected(ds, ROOT, old, True)
    groups.delete_group(ds, ROOT, HOST_X, error_on_protected=False)
    assert not ds.snapshot_exists(ROOT, new)
    assert [p for p in snapshot_lock_files(ds, "", new) if p.exists()] == []


def test_change_owner(ds: Datastore, src: Path) -> None:
    backup(ds, src, "", HOST_X, T0)
    owner_file = Path(ds.path, "host", "x", "owner")
    assert owner_file.read_bytes() == b"root@pam\n"
    token = Authid.parse("backup@pbs!nightly")
    groups.change_owner(ds, ROOT, HOST_X, token)
    assert owner_file.read_bytes() == b"backup@pbs!nightly\n"
    assert queries.group_list(ds, ROOT)[0]["owner"] == "backup@pbs!nightly"
    assert {r["owner"] for r in queries.snapshot_list(ds, ROOT)} == {"backup@pbs!nightly"}
    # The old owner may no longer back up into the group.
    with pytest.raises(DatastoreError, match="owner"):
        backup(ds, src, "", HOST_X, T0 + 1)
    for bad in ("root", "root@", "@pam", "a b@pam", "root@pam!", "root@pam!to ken"):
        with pytest.raises(InvalidName):
            Authid.parse(bad)
    with pytest.raises(InvalidName):
        groups.change_owner(ds, ROOT, HOST_X, "root@pam")  # type: ignore[arg-type]
    assert owner_file.read_bytes() == b"backup@pbs!nightly\n"
    with pytest.raises(NotFound):
        groups.change_owner(ds, ROOT, VM_1, token)
    assert not Path(ds.path, "vm").exists()


def test_group_notes(ds: Datastore, src: Path) -> None:
    backup(ds, src, "", HOST_X, T0)
    notes_file = Path(ds.path, "host", "x", "notes")
    assert groups.get_group_notes(ds, ROOT, HOST_X) == ""
    assert "comment" not in queries.group_list(ds, ROOT)[0]
    groups.set_group_notes(ds, ROOT, HOST_X, "first line\nsecond line\n")
    assert notes_file.read_bytes() == b"first line\nsecond line\n"
    assert groups.get_group_notes(ds, ROOT, HOST_X) == "first line\nsecond line\n"
    assert queries.group_list(ds, ROOT)[0]["comment"] == "first line"
    groups.set_group_notes(ds, ROOT, HOST_X, "no newline – ünïcode")
    assert notes_file.read_bytes() == "no newline – ünïcode".encode()
    assert queries.group_list(ds, ROOT)[0]["comment"] == "no newline – ünïcode"
    with pytest.raises(NotFound):
        groups.set_group_notes(ds, ROOT, VM_1, "x")
    with pytest.raises(NotFound):
        groups.get_group_notes(ds, ROOT, VM_1)


# -- snapshots ---------------------------------------------------------------------------------

def test_forget_snapshot(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a")
    first = backup(ds, src, "a", HOST_X, T0)
    second = backup(ds, src, "a", HOST_X, T0 + 1)
    snapshots.set_protected(ds, ns("a"), first, True)
    with pytest.raises(DatastoreError, match="protected"):
        snapshots.forget_snapshot(ds, ns("a"), first)
    assert ds.snapshot_exists(ns("a"), first)
    snapshots.forget_snapshot(ds, ns("a"), second)
    assert not ds.snapshot_exists(ns("a"), second)
    assert [p for p in snapshot_lock_files(ds, "a", second) if p.exists()] == []
    assert ds.group_exists(ns("a"), HOST_X)  # it still has a snapshot
    with pytest.raises(NotFound):
        snapshots.forget_snapshot(ds, ns("a"), second)
    snapshots.set_protected(ds, ns("a"), first, False)
    snapshots.forget_snapshot(ds, ns("a"), first)
    # The emptied group goes too (PBS >= 3.3.5), with its owner file and group lock file.
    assert not (ns_dir(ds, "a") / "host" / "x").exists()
    assert queries.group_list(ds, ns("a")) == []
    ga = Path(ds.locks.lock_file_path(LockKey.group_access(ns("a"), HOST_X)))
    assert not ga.exists()
    # A new backup of the same group starts a fresh group.
    again = backup(ds, src, "a", HOST_X, T0 - 10)
    assert [i.dir for i in ds.list_snapshots(ns("a"), HOST_X)] == [again]
    with pytest.raises(NotFound):
        snapshots.forget_snapshot(ds, ns("nope"), again)


def test_protected_show_and_update(ds: Datastore, src: Path) -> None:
    snap = backup(ds, src, "", HOST_X, T0)
    marker = Path(ds.path, "host", "x", snap.time_string, ".protected")
    assert snapshots.get_protected(ds, ROOT, snap) is False
    snapshots.set_protected(ds, ROOT, snap, True)
    snapshots.set_protected(ds, ROOT, snap, True)  # idempotent
    assert marker.is_file() and marker.stat().st_size == 0
    assert snapshots.get_protected(ds, ROOT, snap) is True
    assert queries.snapshot_list(ds, ROOT)[0]["protected"] is True
    assert ".protected" not in [f["filename"] for f in queries.snapshot_list(ds, ROOT)[0]["files"]]
    snapshots.set_protected(ds, ROOT, snap, False)
    assert not marker.exists()
    assert snapshots.get_protected(ds, ROOT, snap) is False
    missing = BackupDir(HOST_X, T0 + 1)
    with pytest.raises(NotFound):
        snapshots.set_protected(ds, ROOT, missing, True)
    with pytest.raises(NotFound):
        snapshots.get_protected(ds, ROOT, missing)
    assert not Path(ds.path, "host", "x", missing.time_string).exists()


def test_snapshot_notes_live_in_the_manifest(ds: Datastore, src: Path) -> None:
    snap = backup(ds, src, "", HOST_X, T0)
    before = ds.load_manifest(ROOT, snap)
    assert snapshots.get_notes(ds, ROOT, snap) == ""
    snapshots.set_notes(ds, ROOT, snap, "first\nsecond")
    assert snapshots.get_notes(ds, ROOT, snap) == "first\nsecond"
    after = ds.load_manifest(ROOT, snap)
    assert after.unprotected["notes"] == "first\nsecond"
    assert after.files == before.files
    assert {k: v for k, v in after.unprotected.items() if k != "notes"} == before.unprotected
    assert not Path(ds.path, "host", "x", snap.time_string, "notes").exists()
    row = queries.snapshot_list(ds, ROOT)[0]
    assert row["comment"] == "first"
    snapshots.set_notes(ds, ROOT, snap, "")
    assert snapshots.get_notes(ds, ROOT, snap) == ""
    assert "comment" not in queries.snapshot_list(ds, ROOT)[0]
    with pytest.raises(NotFound):
        snapshots.set_notes(ds, ROOT, BackupDir(HOST_X, T0 + 1), "x")


def test_notes_update_keeps_an_encrypted_manifest_verifiable(ds: Datastore, src: Path,
                                                             tmp_path: Path) -> None:
    crypt = create_key_file(str(tmp_path / "key.json"), None, kdf="none")
    snap = backup(ds, src, "", HOST_X, T0, crypt=crypt)
    signature = ds.load_manifest(ROOT, snap).signature
    assert signature is not None
    snapshots.set_notes(ds, ROOT, snap, "signed manifests keep their notes outside")
    manifest = ds.load_manifest(ROOT, snap)
    assert manifest.signature == signature
    manifest.verify_signature(crypt)
    assert manifest.unprotected["notes"] == "signed manifests keep their notes outside"
    assert manifest.unprotected["key-fingerprint"] == crypt.fingerprint_str()


# -- concurrency: real processes holding the locks of "Who takes what" -------------------------

@pytest.fixture
def busy_tree(ds: Datastore, src: Path) -> BackupDir:
    """a/b/c holds host/x with two snapshots (the newer is returned); a/z is an empty
    sibling, unrelated to anything held in a/b/c."""
    make_namespaces(ds, "a", "a/b", "a/b/c", "a/z")
    backup(ds, src, "a/b/c", HOST_X, T0)
    return backup(ds, src, "a/b/c", HOST_X, T0 + 1)


@pytest.mark.parametrize("victim", ["a", "a/b", "a/b/c"])
def test_reader_blocks_delete_of_its_namespace_and_ancestors(
        ds: Datastore, busy_tree: BackupDir, victim: str) -> None:
    op = f"restore {busy_tree}"
    with holding(ds, op, reader_of("a/b/c", busy_tree)) as pid:
        with pytest.raises(LockBusy) as err:
            namespaces.delete_namespace(ds, ns(victim), delete_groups=True)
        assert_names_holder(err, pid, op)
        assert "a/b/c" in str(err.value)
        # Nothing was removed: the walk takes every lock before it changes anything.
        assert listed(ds) == ["", "a", "a/b", "a/b/c", "a/z"]
        assert len(ds.list_snapshots(ns("a/b/c"), HOST_X)) == 2
        # Unrelated structure changes go on.
        namespaces.delete_namespace(ds, ns("a/z"))
        namespaces.create_namespace(ds, ns("a/b/c/new"))
        namespaces.delete_namespace(ds, ns("a/b/c/new"))
    stats = namespaces.delete_namespace(ds, ns(victim), delete_groups=True)
    assert stats.removed_snapshots == 2
    assert not ns_dir(ds, "a/b/c").exists()


def test_reader_blocks_forget_group_delete_and_protection(ds: Datastore,
                                                          busy_tree: BackupDir) -> None:
    c = ns("a/b/c")
    older = BackupDir(HOST_X, T0)
    op = f"restore {busy_tree}"
    with holding(ds, op, reader_of("a/b/c", busy_tree)) as pid:
        with pytest.raises(LockBusy) as err:
            snapshots.forget_snapshot(ds, c, busy_tree)
        assert_names_holder(err, pid, op)
        with pytest.raises(LockBusy) as err:
            groups.delete_group(ds, c, HOST_X)
        assert_names_holder(err, pid, op)
        with pytest.raises(LockBusy) as err:
            snapshots.set_protected(ds, c, busy_tree, True)
        assert_names_holder(err, pid, op)
        assert ds.snapshot_exists(c, busy_tree) and not ds.is_protected(c, busy_tree)
        # What a reader does not exclude: notes (MF), owner and group notes (GW), and
        # forgetting another snapshot of the group.
        snapshots.set_notes(ds, c, busy_tree, "noted while read")
        assert snapshots.get_notes(ds, c, busy_tree) == "noted while read"
        groups.set_group_notes(ds, c, HOST_X, "group noted")
        groups.change_owner(ds, c, HOST_X, Authid.parse("other@pbs"))
        snapshots.forget_snapshot(ds, c, older)
        assert not ds.snapshot_exists(c, older)
    snapshots.forget_snapshot(ds, c, busy_tree)
    assert not ds.group_exists(c, HOST_X)


def test_notes_update_needs_only_the_manifest_lock(ds: Datastore,
                                                   busy_tree: BackupDir) -> None:
    """Design table: a manifest update (notes) takes MF(s) X with its containers NS S and
    GA S, not SN(s); snapshots.py says so too ("Notes: NS S, GA S, MF X"). So a process
    holding SN(s) X (protecting it, or a prune that has not reached it yet) must not make a
    notes update fail at once."""
    c = ns("a/b/c")
    with holding(ds, "set protection", lambda s: s.snapshot(c, busy_tree, X)):
        snapshots.set_notes(ds, c, busy_tree, "notes")
    assert snapshots.get_notes(ds, c, busy_tree) == "notes"


def test_running_backup_blocks_owner_group_notes_and_delete(ds: Datastore,
                                                            busy_tree: BackupDir) -> None:
    c = ns("a/b/c")
    op = "backup host/x"
    with holding(ds, op, backup_writer("a/b/c", HOST_X, busy_tree, T0 + 100)) as pid:
        with pytest.raises(LockBusy) as err:
            groups.change_owner(ds, c, HOST_X, Authid.parse("other@pbs"))
        assert_names_holder(err, pid, op)
        assert "writer" in str(err.value)
        with pytest.raises(LockBusy):
            groups.set_group_notes(ds, c, HOST_X, "x")
        with pytest.raises(LockBusy):
            groups.delete_group(ds, c, HOST_X)
        with pytest.raises(LockBusy):  # the base of the incremental backup is in use
            snapshots.forget_snapshot(ds, c, busy_tree)
        with pytest.raises(LockBusy):
            namespaces.delete_namespace(ds, ns("a"), delete_groups=True)
        assert ds.get_owner(c, HOST_X) == OWNER
        assert groups.get_group_notes(ds, c, HOST_X) == ""
        # An older snapshot is nobody's business but its own.
        snapshots.forget_snapshot(ds, c, BackupDir(HOST_X, T0))
    groups.change_owner(ds, c, HOST_X, Authid.parse("other@pbs"))
    assert ds.get_owner(c, HOST_X) == Authid.parse("other@pbs")


def test_namespace_being_deleted_blocks_create_below_it(ds: Datastore) -> None:
    make_namespaces(ds, "a")
    with holding(ds, "delete namespace a", lambda s: s.namespace(ns("a"), X)) as pid:
        with pytest.raises(LockBusy) as err:
            namespaces.create_namespace(ds, ns("a/new"))
        assert_names_holder(err, pid, "delete namespace a")
        assert not ns_dir(ds, "a/new").exists()
        namespaces.create_namespace(ds, ns("b"))
    namespaces.create_namespace(ds, ns("a/new"))


def test_wait_lets_an_operation_succeed_when_the_holder_releases(
        ds: Datastore, busy_tree: BackupDir) -> None:
    c = ns("a/b/c")
    op = f"restore {busy_tree}"
    with holding(ds, op, reader_of("a/b/c", busy_tree)) as pid:
        started = time.monotonic()
        with pytest.raises(LockBusy) as err:
            snapshots.forget_snapshot(ds, c, busy_tree, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert "after waiting" in str(err.value)
        assert_names_holder(err, pid, op)
    with holding(ds, op, reader_of("a/b/c", busy_tree), release_after=0.3):
        started = time.monotonic()
        snapshots.forget_snapshot(ds, c, busy_tree, wait=15)
        assert time.monotonic() - started >= 0.25
    assert not ds.snapshot_exists(c, busy_tree)
    with holding(ds, "restore", reader_of("a/b/c", BackupDir(HOST_X, T0)), release_after=0.3):
        stats = namespaces.delete_namespace(ds, ns("a"), delete_groups=True, wait=15)
    assert stats.as_dict() == {"removed-groups": 1, "protected-snapshots": 0,
                               "removed-snapshots": 1}
    assert listed(ds) == [""]
