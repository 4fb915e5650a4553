"""The session API and the order checker: one test per row of "Who takes what" in the locking
design (no violation, and the locks held are exactly the documented ones in that order), and
the violations the checker must catch. Contention here uses a second session in another
thread: flock locks on separate open files conflict inside one process too."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from chunkyard.datastore.locking import (
    LockBusy,
    LockKey,
    LockManager,
    LockOrderViolation,
    LockSession,
    Mode,
    order_checking,
    order_checking_enabled,
    set_order_checking,
)
from chunkyard.errors import DatastoreError
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from tests.helpers import in_thread

S, X = Mode.SHARED, Mode.EXCLUSIVE
ROOT = BackupNamespace()
N = BackupNamespace.parse("a/b")
M = BackupNamespace.parse("a/c")
G = BackupGroup.parse("host/web")
G2 = BackupGroup.parse("vm/100")
BASE = BackupDir(G, 1_700_000_000)
NEW = BackupDir(G, 1_700_003_600)
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _checker_on() -> Iterator[None]:
    with order_checking(True):
        yield


@pytest.fixture
def manager(tmp_path: Path) -> LockManager:
    (tmp_path / "store").mkdir()
    return LockManager(str(tmp_path / "locks"), str(tmp_path / "store" / ".lock"))


def ns_(k: BackupNamespace) -> LockKey:
    return LockKey.namespace(k)




def can_take(manager: LockManager, take: Callable[[LockSession], object]) -> bool:
    def attempt() -> bool:
        with manager.session() as s:
            try:
                take(s)
                return True
            except LockBusy:
                return False
    return in_thread(attempt)


# -- one test per row of "Who takes what" ------------------------------------------------

def test_row_backup(manager: LockManager) -> None:
    with manager.session("backup host/web") as s:
        s.group_writer(N, G)
        s.snapshot(N, BASE, S)
        s.snapshot(N, NEW, X)
        cs = s.chunk_store(S)
        # finish, as PBS's: the chunk-store lock goes before the manifest update
        with pytest.raises(LockOrderViolation):
            s.manifest(N, NEW)
        cs.release()
        s.manifest(N, NEW)
        assert s.held() == [
            (ns_(N), S), (LockKey.group_writer(N, G), X), (LockKey.group_access(N, G), S),
            (LockKey.snapshot(N, BASE), S), (LockKey.snapshot(N, NEW), X),
            (LockKey.manifest(N, NEW), X),
        ]


def test_row_pull_sync_is_a_backup(manager: LockManager) -> None:
    with manager.session("sync") as s:
        s.group_writer(ROOT, G)
        s.snapshot(ROOT, NEW, X)
        s.chunk_store(S).release()
        s.manifest(ROOT, NEW)
        assert [k.kind.name for k, _ in s.held()] == ["NS", "GW", "GA", "SN", "MF"]


def test_row_restore(manager: LockManager) -> None:
    with manager.session("restore") as s:
        s.snapshot(N, BASE, S)
        assert s.held() == [(ns_(N), S), (LockKey.group_access(N, G), S),
                            (LockKey.snapshot(N, BASE), S)]


def test_row_verify(manager: LockManager) -> None:
    with manager.session("verify") as s:
        s.snapshot(N, BASE, S)
        s.manifest(N, BASE)
        assert [(k.kind.name, m) for k, m in s.held()] == [
            ("NS", S), ("GA", S), ("SN", S), ("MF", X)]


def test_row_prune_skips_busy_snapshots(manager: LockManager) -> None:
    snaps = [BackupDir(G, 1_700_000_000 + i) for i in range(4)]
    busy_reader = manager.session("restore")
    in_thread(lambda: busy_reader.snapshot(N, snaps[2], S))
    removed, skipped = [], []
    with manager.session("prune") as s:
        s.group(N, G, S)
        for snap in snaps:
            try:
                g = s.snapshot(N, snap, X)
            except LockBusy as e:
                assert "operation 'restore'" in str(e)
                skipped.append(snap)
                continue
            removed.append(snap)
            g.release()
        assert s.held() == [(ns_(N), S), (LockKey.group_access(N, G), S)]
    busy_reader.close()
    assert skipped == [snaps[2]] and len(removed) == 3


def test_row_delete_snapshot_and_set_protected(manager: LockManager) -> None:
    with manager.session("delete snapshot") as s:
        s.snapshot(N, BASE, X)
        s.manifest(N, BASE)
        assert s.may_unlink(LockKey.manifest(N, BASE))
        s.unlink_lock_file(LockKey.manifest(N, BASE))
        s.unlink_lock_file(LockKey.snapshot(N, BASE))
        assert [(k.kind.name, m) for k, m in s.held()] == [
            ("NS", S), ("GA", S), ("SN", X), ("MF", X)]
    names = os.listdir(manager.namespace_lock_dir(N))
    assert not [n for n in names if n.startswith(("sn-", "mf-"))]


def test_row_change_owner_and_group_notes(manager: LockManager) -> None:
    with manager.session("change owner") as s:
        s.group_writer(N, G)
        s.group(N, G, S)
        assert [(k.kind.name, m) for k, m in s.held()] == [("NS", S), ("GW", X), ("GA", S)]


def test_row_delete_group(manager: LockManager) -> None:
    for key in (LockKey.snapshot(N, BASE), LockKey.manifest(N, BASE)):
        path = manager.lock_file_path(key)  # as a reader killed with -9 leaves them
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()
    with manager.session("delete group") as s:
        s.group(N, G, X)
        assert s.held() == [(ns_(N), S), (LockKey.group_access(N, G), X)]
        assert s.unlink_group_lock_files(N, G) == 3  # ga, sn, mf; gw needs GW or NS X
    assert os.listdir(manager.namespace_lock_dir(N)) == ["ns"]


def test_row_create_namespace(manager: LockManager) -> None:
    with manager.session("create namespace") as s:
        s.namespace_create(N)
        assert s.held() == [(ns_(N.parent), S), (ns_(N), X)]
    with manager.session("create namespace") as s:
        s.namespace(N.parent, S)  # spelled out, the same order
        s.namespace(N, X)


def tree(*paths: str) -> Callable[[BackupNamespace], list[BackupNamespace]]:
    nss = [BackupNamespace.parse(p) for p in paths]
    return lambda n: [c for c in nss if c.depth == n.depth + 1 and n.is_ancestor_of(c)]


def test_row_delete_namespace(manager: LockManager) -> None:
    children = tree("a", "a/b", "a/b/x", "a/c", "a/0", "a/b/x/y", "q")
    seen: list[BackupNamespace] = []
    with manager.session("delete namespace") as s:
        def list_children(n: BackupNamespace) -> list[BackupNamespace]:
            assert s.holds(ns_(n), X), "children listed before the parent's X lock"
            seen.append(n)
            return children(n)
        guard = s.namespace_subtree_exclusive(BackupNamespace.parse("a"), list_children)
        expected = ["a", "a/0", "a/b", "a/b/x", "a/b/x/y", "a/c"]
        assert [str(n) for n in guard.namespaces] == expected
        assert [str(k.ns) for k, _ in s.held()] == expected
        assert seen == guard.namespaces
        for n in guard.namespaces:
            s.unlink_namespace_lock_files(n)
    assert os.listdir(os.path.join(manager.lock_dir, "ns")) == []


@pytest.mark.parametrize(("src", "dst"), [(N, M), (M, N)])
def test_row_move_group(manager: LockManager, src: BackupNamespace,
                        dst: BackupNamespace) -> None:
    first, second = sorted([src, dst])
    expected = [(ns_(first), S), (ns_(second), S),
                (LockKey.group_access(first, G), X), (LockKey.group_access(second, G), X)]
    with manager.session("move group") as s:
        s.namespace(first, S)
        s.namespace(second, S)
        s.group(first, G, X)
        s.group(second, G, X)
        assert s.held() == expected
        s.unlink_group_lock_files(src, G)
    with manager.session("move group") as s:
        guard = s.lock_all(reversed(expected))  # lock_all sorts a planned set
        assert s.held() == expected
        guard.release()
        assert s.held() == []
    with manager.session("move group, unsorted") as s, pytest.raises(LockOrderViolation):
        s.group(second, G, X)
        s.group(first, G, X)


@pytest.mark.parametrize(("src", "dst"), [("a", "b/t"), ("b", "a/t"), ("x/a", "x/b"),
                                          ("x/b", "x/a"), ("x/a", "t")])
def test_row_move_namespace(manager: LockManager, src: str, dst: str) -> None:
    n, t = BackupNamespace.parse(src), BackupNamespace.parse(dst)
    subtree = [n, n.child("k"), n.child("k").child("l")]
    expected = sorted([(ns_(n), X), (ns_(n.child("k")), X), (ns_(n.child("k").child("l")), X),
                       (ns_(t.parent), S), (ns_(t), X)], key=lambda km: km[0].rank)
    with manager.session("move namespace") as s:
        s.lock_all([(ns_(t), X), (ns_(t.parent), S), *[(ns_(m), X) for m in subtree],
                    (ns_(n), S)])  # duplicates: the strongest mode wins
        assert s.held() == expected
        for m in subtree:
            s.unlink_namespace_lock_files(m)
    # Spelled out by hand in the documented order, the checker agrees.
    with manager.session("move namespace") as s:
        for key, mode in expected:
            s.namespace(key.ns, mode)


def test_row_garbage_collection(manager: LockManager) -> None:
    with manager.session("garbage collection") as s:
        s.chunk_store(X)
        s.journal()
        assert s.held() == [(LockKey.chunk_store(), X), (LockKey.journal(), X)]


# -- violations -------------------------------------------------------------------------

def test_snapshot_then_namespace_of_another_namespace(manager: LockManager) -> None:
    with manager.session() as s:
        s.snapshot(N, BASE, S)
        with pytest.raises(LockOrderViolation, match="namespace 'a/c'"):
            s.namespace(M, S)
        # A refused acquisition changes nothing.
        assert len(s.held()) == 3


def test_chunk_store_then_manifest(manager: LockManager) -> None:
    with manager.session() as s:
        s.chunk_store(S)
        with pytest.raises(LockOrderViolation, match="chunk store"):
            s.manifest(N, BASE)
        assert s.held() == [(LockKey.chunk_store(), S)]


def test_manifest_after_chunk_store_needs_the_snapshot_exclusively(
        manager: LockManager) -> None:
    with manager.session() as s:
        s.snapshot(N, NEW, S)
        s.chunk_store(S)
        with pytest.raises(LockOrderViolation):
            s.manifest(N, NEW)
    with manager.session() as s:
        s.snapshot(N, NEW, X)
        s.chunk_store(S)
        with pytest.raises(LockOrderViolation):
            s.manifest(N, BASE)  # another snapshot than the one being created


@pytest.mark.parametrize("case", ["group after snapshot", "journal then cs",
                                  "gw after ga", "older snapshot", "parent after child"])
def test_other_out_of_order_acquisitions(manager: LockManager, case: str) -> None:
    with manager.session() as s, pytest.raises(LockOrderViolation):
        if case == "group after snapshot":
            s.snapshot(N, BASE, S)
            s.group(N, G2, S)
        elif case == "journal then cs":
            s.journal()
            s.chunk_store(X)
        elif case == "gw after ga":
            s.group(N, G, S)
            s.group_writer(N, G)
        elif case == "older snapshot":
            s.snapshot(N, NEW, X)
            s.snapshot(N, BASE, S)
        else:
            s.namespace(N, S)
            s.namespace(N.parent, S)


def test_upgrade_is_refused_even_without_the_checker(manager: LockManager) -> None:
    with order_checking(False), manager.session() as s:
        s.snapshot(N, BASE, S)
        with pytest.raises(LockOrderViolation, match="upgrade"):
            s.group(N, G, X)
        with pytest.raises(LockOrderViolation, match="upgrade"):
            s.namespace_subtree_exclusive(N, lambda n: [])


def test_checker_off_allows_out_of_order(manager: LockManager) -> None:
    assert order_checking_enabled()
    previous = set_order_checking(False)
    try:
        assert previous is True
        with manager.session() as s:
            s.chunk_store(S)
            s.manifest(N, BASE)
    finally:
        set_order_checking(previous)


def test_two_sessions_of_one_thread_are_checked_together(manager: LockManager) -> None:
    with manager.session("outer") as a, manager.session("inner") as b:
        a.snapshot(N, BASE, S)
        with pytest.raises(LockOrderViolation, match="another session of this thread"):
            b.namespace(M, S)
        b.chunk_store(S)  # ranks above everything `a` holds: fine
    with manager.session("first") as a:
        a.namespace(N, S)
    with manager.session("second") as b:  # sequential sessions are independent
        b.namespace(ROOT, S)


# -- reuse, reference counts, release ----------------------------------------------------

def test_containers_are_reused_and_reference_counted(manager: LockManager) -> None:
    with manager.session() as s:
        ns_guard = s.namespace(N, X)
        snap_guard = s.snapshot(N, BASE, S)  # NS(N) X covers the implicit S
        assert s.held()[0] == (ns_(N), X)
        twice = s.snapshot(N, BASE, S)
        assert len(s.held()) == 3
        ns_guard.release()  # still needed by the snapshot guards
        assert s.holds(ns_(N), X)
        assert not can_take(manager, lambda t: t.namespace(N, S))
        snap_guard.release()
        assert s.holds(LockKey.snapshot(N, BASE))
        twice.release()
        assert s.held() == []
        assert can_take(manager, lambda t: t.namespace_subtree_exclusive(N, lambda n: []))


def test_guard_release_keeps_containers_of_other_guards(manager: LockManager) -> None:
    with manager.session() as s:
        g = s.group(N, G, S)
        snap = s.snapshot(N, BASE, X)
        g.release()
        assert s.holds(LockKey.group_access(N, G))
        snap.release()
        assert s.held() == []
        with s.snapshot(N, NEW, X) as guard:
            assert guard.key == LockKey.snapshot(N, NEW) and not guard.released
        assert guard.released and s.held() == []


def test_session_close_releases_everything(manager: LockManager) -> None:
    s = manager.session("x")
    s.group_writer(N, G)
    s.snapshot(N, NEW, X)
    s.chunk_store(S)
    assert not can_take(manager, lambda t: t.group_writer(N, G))
    s.close()
    assert s.closed and s.held() == []
    assert can_take(manager, lambda t: (t.group_writer(N, G), t.snapshot(N, NEW, X),
                                        t.chunk_store(X)))
    with pytest.raises(DatastoreError, match="closed"):
        s.namespace(N, S)


def test_busy_rolls_back_the_containers_of_the_call(manager: LockManager) -> None:
    holder = manager.session("holder")
    in_thread(lambda: holder.snapshot(N, BASE, X))
    try:
        with manager.session() as s:
            with pytest.raises(LockBusy):
                s.snapshot(N, BASE, S)
            assert s.held() == []
            with pytest.raises(LockBusy):
                s.namespace_subtree_exclusive(ROOT, tree("a", "a/b"))
            assert s.held() == []
    finally:
        holder.close()


def test_subtree_rejects_a_listing_that_is_not_of_children(manager: LockManager) -> None:
    with manager.session() as s:
        with pytest.raises(DatastoreError, match="not a direct child"):
            s.namespace_subtree_exclusive(ROOT, lambda n: [N] if n.is_root else [])
        assert s.held() == []


def test_unlink_needs_exclusive_ownership(manager: LockManager) -> None:
    with manager.session() as s:
        s.snapshot(N, BASE, S)
        for key in (LockKey.snapshot(N, BASE), LockKey.group_access(N, G), ns_(N),
                    LockKey.chunk_store(), LockKey.journal()):
            assert not s.may_unlink(key)
        with pytest.raises(DatastoreError, match="refusing"):
            s.unlink_lock_file(LockKey.snapshot(N, BASE))
        with pytest.raises(DatastoreError, match="refusing"):
            s.unlink_group_lock_files(N, G)
        with pytest.raises(DatastoreError, match="refusing"):
            s.unlink_namespace_lock_files(N)
    with manager.session() as s:
        s.group(N, G, X)
        assert s.may_unlink(LockKey.snapshot(N, BASE))
        assert s.may_unlink(LockKey.manifest(N, BASE))
        assert not s.may_unlink(LockKey.group_writer(N, G))
        assert not s.may_unlink(LockKey.group_access(N, G2))
    with manager.session() as s:
        s.namespace_subtree_exclusive(N, lambda n: [])
        assert s.may_unlink(LockKey.group_writer(N, G))
        assert not s.may_unlink(LockKey.snapshot(M, BASE))


def test_lock_dir_removed_under_a_waiter_is_recreated(manager: LockManager) -> None:
    with manager.session() as s:
        s.namespace_subtree_exclusive(N, lambda n: [])
        s.unlink_namespace_lock_files(N)
        assert not os.path.exists(manager.namespace_lock_dir(N))
    with manager.session() as s:
        s.snapshot(N, BASE, X)
    assert os.path.isdir(manager.namespace_lock_dir(N))


def test_chunk_store_needs_a_path(tmp_path: Path) -> None:
    with LockManager(str(tmp_path)).session() as s, pytest.raises(DatastoreError):
        s.chunk_store(S)


def test_a_dropped_session_releases_its_locks(manager: LockManager) -> None:
    def leak() -> None:
        s = manager.session("leaky")
        s.snapshot(N, BASE, X)
        # no close(): the session is dropped here
    with pytest.warns(ResourceWarning, match="leaky"):
        in_thread(leak)
    assert can_take(manager, lambda t: t.snapshot(N, BASE, X))


def test_unusable_lock_directory_is_a_datastore_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    m = LockManager(str(tmp_path / "file" / "locks"))
    with m.session() as s, pytest.raises(DatastoreError, match=r"cannot .* lock"):
        s.namespace(N, S)


def test_lock_busy_survives_pickling(manager: LockManager) -> None:
    holder = manager.session("holder")
    in_thread(lambda: holder.namespace(N, X))
    try:
        with manager.session() as s, pytest.raises(LockBusy) as info:
            s.namespace(N, S)
        copy = pickle.loads(pickle.dumps(info.value))
        assert str(copy) == str(info.value) and copy.holders == info.value.holders
    finally:
        holder.close()
