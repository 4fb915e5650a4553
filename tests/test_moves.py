"""Moving groups and namespaces: PBS 4.1.9's semantics (spec pbs-move-series §4-6, the test
scenarios of §8 that apply to a filesystem datastore) and chunkyard's deliberate differences
(one rename, a quiet source, all-or-nothing merges, dry run, GC journal, reference hooks).

Lock conflicts use real child processes holding locks as the operation they imitate does
(tests/store_helpers.py), or a real mover frozen with SIGSTOP at a fault point.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore import groups, namespaces, snapshots
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockKey
from chunkyard.datastore.maintenance.prune import prune_group
from chunkyard.datastore.maintenance.prune_rules import KeepOptions
from chunkyard.datastore.maintenance.verify import Outcome, SkipReason, run_verify
from chunkyard.datastore.moves import (
    MoveConflict,
    journal,
    move_group,
    move_namespace,
    register_reference_hook,
)
from chunkyard.datastore.moves.executor import destinations
from chunkyard.datastore.moves.planner import plan_namespace_move
from chunkyard.errors import ChunkyardError, DatastoreError, InvalidName, NotFound
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace
from tests.helpers import tree_state
from tests.store_helpers import (
    OWNER,
    ROOT,
    T0,
    assert_names_holder,
    backup,
    backup_writer,
    holding,
    make_namespaces,
    ns,
    ns_dir,
    reader_of,
)

VM = BackupGroup.parse("vm/100")
CT = BackupGroup.parse("ct/7")
HOST = BackupGroup.parse("host/h")
OTHER_OWNER = Authid.parse("backup@pbs")
_SCRIPT = Path(sys.executable).with_name("chunkyard")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkyard.cli.main"]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "file.txt").write_text("moved but unchanged\n")
    (d / "sub").mkdir()
    (d / "sub" / "data.bin").write_bytes(os.urandom(70_000))
    return d


def tree(ds: Datastore) -> dict[str, str]:
    """Every directory and file of the datastore outside `.chunks`, files by content hash."""
    out: dict[str, str] = {}
    for directory, dirs, files in os.walk(ds.path):
        dirs[:] = [d for d in dirs if d != ".chunks"]
        rel = os.path.relpath(directory, ds.path)
        out[rel + "/"] = "dir"
        for name in files:
            if rel == "." and name == ".lock":
                continue
            with open(os.path.join(directory, name), "rb") as f:
                out[os.path.join(rel, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


def snapshot_times(ds: Datastore, where: str, group: BackupGroup) -> list[int]:
    if not ds.group_exists(ns(where), group):
        return []
    return [s.dir.time for s in ds.list_snapshots(ns(where), group)]


def restored(ds: Datastore, where: str, snap: BackupDir, target: Path) -> object:
    run_restore(ds, RestoreRequest(ns(where), snap, "root.tar", str(target)))
    return tree_state(target)


def fake_snapshots(ds: Datastore, where: str, group: BackupGroup, times: range,
                   owner: Authid = OWNER) -> None:
    """Snapshot directories with a manifest each, without running backups (fast)."""
    from chunkyard.formats.manifest import BackupManifest

    ds.make_group_dir(ns(where), group, owner)
    for t in times:
        snap = BackupDir(group, t)
        ds.make_snapshot_dir(ns(where), snap)
        ds.write_manifest(ns(where), snap, BackupManifest(group.type.value, group.id, t))


# -- PBS §8.1: the happy path ---------------------------------------------------------------

def test_group_move_carries_snapshots_owner_notes_protection_and_verify_state(
    ds: Datastore, src: Path, tmp_path: Path
) -> None:
    make_namespaces(ds, "a")
    first = backup(ds, src, "", VM, T0)
    second = backup(ds, src, "", VM, T0 + 60)
    snapshots.set_protected(ds, ROOT, first, True)
    manifest = ds.load_manifest(ROOT, second)
    manifest.unprotected["verify_state"] = {"state": "ok", "upid": "UPID:x"}
    ds.write_manifest(ROOT, second, manifest)
    groups.set_group_notes(ds, ROOT, VM, "db server")
    groups.change_owner(ds, ROOT, VM, OTHER_OWNER)  # the mover is root, the owner is not
    before = restored(ds, "", first, tmp_path / "before")
    lock_files = [ds.locks.lock_file_path(key) for key in (  # as processes killed with -9
        LockKey.group_access(ROOT, VM), LockKey.group_writer(ROOT, VM),  # leave them
        LockKey.snapshot(ROOT, first), LockKey.manifest(ROOT, first))]
    for path in lock_files:
        open(path, "a").close()

    result = move_group(ds, ROOT, VM, ns("a"))

    assert result["method"] == "rename" and result["moved-snapshots"] == 2
    assert snapshot_times(ds, "a", VM) == [T0, T0 + 60]
    assert not ds.group_exists(ROOT, VM)
    assert not (Path(ds.path) / "vm" / "100").exists()
    assert ds.get_owner(ns("a"), VM) == OTHER_OWNER
    assert groups.get_group_notes(ds, ns("a"), VM) == "db server"
    assert snapshots.get_protected(ds, ns("a"), first) is True
    assert ds.load_manifest(ns("a"), second).unprotected["verify_state"]["state"] == "ok"
    assert restored(ds, "a", first, tmp_path / "after") == before
    assert not any(os.path.exists(p) for p in lock_files)
    assert not (Path(ds.path) / ".move-intents").exists()


def test_group_move_out_of_a_namespace_to_the_root(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "a/b")
    backup(ds, src, "a/b", CT, T0)
    move_group(ds, ns("a/b"), CT, ROOT)
    assert snapshot_times(ds, "", CT) == [T0]
    assert ds.list_groups(ns("a/b")) == []


# -- §8.2-3: merges --------------------------------------------------------------------------

def test_merge_interleaves_into_one_group(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "a", VM, T0 + 10)
    backup(ds, src, "", VM, T0 + 20)
    backup(ds, src, "", VM, T0 + 30)
    result = move_group(ds, ROOT, VM, ns("a"))
    assert result["method"] == "merge"
    assert snapshot_times(ds, "a", VM) == [T0, T0 + 10, T0 + 20, T0 + 30]
    assert not ds.group_exists(ROOT, VM)


@pytest.mark.parametrize("case", ["owner", "overlap", "equal-time", "merge-off"])
def test_merge_rejections_change_nothing(ds: Datastore, src: Path, case: str) -> None:
    make_namespaces(ds, "a")
    backup(ds, src, "", VM, T0 + 100)
    target_time = {"overlap": T0 + 200, "equal-time": T0 + 100}.get(case, T0)
    backup(ds, src, "a", VM, target_time)
    if case == "owner":
        groups.change_owner(ds, ns("a"), VM, OTHER_OWNER)
    before = tree(ds)
    with pytest.raises(MoveConflict) as err:
        move_group(ds, ROOT, VM, ns("a"), merge_group=case != "merge-off")
    expected = {"owner": "owner mismatch", "overlap": "snapshot time mismatch",
                "equal-time": "snapshot time mismatch", "merge-off": "merging is disabled"}
    assert expected[case] in str(err.value)
    assert "nothing was moved" in str(err.value)
    assert err.value.report["conflicts"]
    assert tree(ds) == before


@pytest.mark.parametrize(("source_notes", "target_notes", "kept", "warned"), [
    ("same", "same", "same", False),
    ("source", "target", "target", True),
    ("only source", "", "only source", False),
    ("", "only target", "only target", False),
])
def test_merge_notes(ds: Datastore, src: Path, source_notes: str, target_notes: str,
                     kept: str, warned: bool) -> None:
    make_namespaces(ds, "a")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "", VM, T0 + 1)
    if source_notes:
        groups.set_group_notes(ds, ROOT, VM, source_notes)
    if target_notes:
        groups.set_group_notes(ds, ns("a"), VM, target_notes)
    result = move_group(ds, ROOT, VM, ns("a"))
    assert groups.get_group_notes(ds, ns("a"), VM) == kept
    assert any("notes differ" in w for w in result["warnings"]) is warned


def test_merging_600_snapshots_keeps_file_descriptors_bounded(ds: Datastore) -> None:
    """PBS locks snapshots in batches of 512 to bound open files; a merge here locks the
    two groups only, so the number of open descriptors does not grow with the snapshots."""
    make_namespaces(ds, "a")
    fake_snapshots(ds, "a", VM, range(T0, T0 + 5))
    fake_snapshots(ds, "", VM, range(T0 + 100, T0 + 700))
    counts: list[int] = []
    baseline = len(os.listdir("/proc/self/fd"))
    move_group(ds, ROOT, VM, ns("a"),
               progress=lambda done, total: counts.append(len(os.listdir("/proc/self/fd"))))
    assert len(counts) == 600 + 2  # every snapshot, the notes, the source group
    assert max(counts) - baseline < 16
    assert len(snapshot_times(ds, "a", VM)) == 605


# -- §8.5 and §8.18: validation --------------------------------------------------------------

def test_group_move_preflight_errors(ds: Datastore, src: Path) -> None:
    backup(ds, src, "", VM, T0)
    with pytest.raises(NotFound, match="target namespace 'nope' does not exist"):
        move_group(ds, ROOT, VM, ns("nope"))
    with pytest.raises(DatastoreError, match="the same"):
        move_group(ds, ROOT, VM, ROOT)
    make_namespaces(ds, "a")
    with pytest.raises(NotFound, match="ct/7"):
        move_group(ds, ROOT, CT, ns("a"))


@pytest.mark.parametrize(("source", "target", "error", "match"), [
    ("a", "a/b/c", DatastoreError, "own subtree"),
    ("a", "a", DatastoreError, "the same"),
    ("", "x", DatastoreError, "root namespace cannot be moved"),
    ("a", "", DatastoreError, "cannot be a move target"),
    ("a", "nope/x", NotFound, "parent namespace 'nope'"),
    ("a/b", "a", DatastoreError, "own ancestor"),
    ("missing", "x", NotFound, "missing"),
    ("a", "y" * 33, InvalidName, "longer than 32"),
])
def test_namespace_move_validation(ds: Datastore, src: Path, source: str, target: str,
                                   error: type[ChunkyardError], match: str) -> None:
    make_namespaces(ds, "a", "a/b")
    backup(ds, src, "a/b", VM, T0)
    before = tree(ds)
    with pytest.raises(error, match=match):
        move_namespace(ds, ns(source), ns(target))
    assert tree(ds) == before


def test_depth_limit_after_the_move_is_checked_before_anything_moves(ds: Datastore) -> None:
    make_namespaces(ds, "a", "a/b", "a/b/c", "x", "x/y", "x/y/z", "x/y/z/w", "x/y/z/w/v")
    before = tree(ds)
    # a's subtree reaches 2 levels below it; below x/y/z/w/v/a that would be level 8
    with pytest.raises(DatastoreError, match="depth limit"):
        move_namespace(ds, ns("a"), ns("x/y/z/w/v/a"))
    assert tree(ds) == before
    move_namespace(ds, ns("a"), ns("x/y/z/w/a"))  # level 7: allowed
    assert ds.namespace_exists(ns("x/y/z/w/a/b/c"))


# -- chunkyard's difference 1: one rename when the target is absent -------------------------

def test_namespace_move_to_an_absent_target_is_one_rename(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "site1", "site1/rack1", "site1/rack1/deep", "site2")
    backup(ds, src, "site1", VM, T0)
    backup(ds, src, "site1/rack1", CT, T0)
    backup(ds, src, "site1/rack1/deep", HOST, T0)
    group_inode = os.stat(ns_dir(ds, "site1/rack1") / "ct" / "7").st_ino
    plan = plan_namespace_move(ds, ns("site1"), ns("site2/moved"))
    assert [s.op for s in plan.steps] == ["rename-ns"]
    # locks: NS X on the three source namespaces, the target's parent S and the target X
    assert len(plan.locks) == 5

    result = move_namespace(ds, ns("site1"), ns("site2/moved"))

    assert result["method"] == "rename"
    assert not ds.namespace_exists(ns("site1"))
    assert snapshot_times(ds, "site2/moved", VM) == [T0]
    assert snapshot_times(ds, "site2/moved/rack1/deep", HOST) == [T0]
    assert os.stat(ns_dir(ds, "site2/moved/rack1") / "ct" / "7").st_ino == group_inode
    for gone in ("site1", "site1/rack1", "site1/rack1/deep"):
        assert not os.path.exists(ds.locks.namespace_lock_dir(ns(gone)))


def test_renamed_namespace_restores_byte_exact(ds: Datastore, src: Path,
                                               tmp_path: Path) -> None:
    make_namespaces(ds, "a")
    snap = backup(ds, src, "a", VM, T0)
    before = restored(ds, "a", snap, tmp_path / "r1")
    move_namespace(ds, ns("a"), ns("b"))
    assert restored(ds, "b", snap, tmp_path / "r2") == before
    with pytest.raises(NotFound):
        run_restore(ds, RestoreRequest(ns("a"), snap, "root.tar", str(tmp_path / "r3")))


# -- §8.16-18: max-depth, delete-source, existing targets -----------------------------------

def _three_levels(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "a/b", "a/b/c")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "a/b", CT, T0)
    backup(ds, src, "a/b/c", HOST, T0)


def test_max_depth_zero_moves_only_the_direct_groups(ds: Datastore, src: Path) -> None:
    _three_levels(ds, src)
    move_namespace(ds, ns("a"), ns("t"), max_depth=0)
    assert snapshot_times(ds, "t", VM) == [T0]
    assert ds.namespace_exists(ns("a")), "kept: its children were not moved"
    assert snapshot_times(ds, "a/b", CT) == [T0]
    assert snapshot_times(ds, "a/b/c", HOST) == [T0]
    assert not ds.namespace_exists(ns("t/b"))


def test_max_depth_one_moves_two_levels_and_renames_what_it_can(ds: Datastore,
                                                                src: Path) -> None:
    _three_levels(ds, src)
    make_namespaces(ds, "a/z")  # a leaf within the depth: renamed whole
    plan = plan_namespace_move(ds, ns("a"), ns("t"), max_depth=1)
    assert [(s.op, str(s.src or ""), str(s.dst or "")) for s in plan.steps] == [
        ("mkdir-ns", "", "t"), ("rename-group", "a", "t"),
        ("mkdir-ns", "", "t/b"), ("rename-group", "a/b", "t/b"),
        ("rename-ns", "a/z", "t/z"),
        ("remove-ns", "a/b", ""), ("remove-ns", "a", "")]
    move_namespace(ds, ns("a"), ns("t"), max_depth=1)
    assert snapshot_times(ds, "t/b", CT) == [T0]
    assert ds.namespace_exists(ns("t/z"))
    assert snapshot_times(ds, "a/b/c", HOST) == [T0]
    assert ds.list_groups(ns("a")) == [] and ds.list_groups(ns("a/b")) == []


@pytest.mark.parametrize("target_exists", [False, True])
def test_delete_source_false_keeps_the_empty_structure(ds: Datastore, src: Path,
                                                       target_exists: bool) -> None:
    _three_levels(ds, src)
    if target_exists:
        make_namespaces(ds, "t")
    move_namespace(ds, ns("a"), ns("t"), delete_source=False)
    for n in ("a", "a/b", "a/b/c"):
        assert ds.namespace_exists(ns(n)) and ds.list_groups(ns(n)) == []
    assert snapshot_times(ds, "t/b/c", HOST) == [T0]


def test_delete_source_removes_empty_type_and_ns_dirs(ds: Datastore, src: Path) -> None:
    _three_levels(ds, src)
    make_namespaces(ds, "t")
    move_namespace(ds, ns("a"), ns("t"))
    assert not ns_dir(ds, "a").exists()
    assert not (Path(ds.path) / "ns" / "a").exists()
    assert sorted(os.listdir(Path(ds.path) / "ns")) == ["t"]


def test_existing_target_merges_groups_and_renames_new_children(ds: Datastore,
                                                                src: Path) -> None:
    _three_levels(ds, src)
    make_namespaces(ds, "t")
    backup(ds, src, "t", VM, T0 - 100)  # older, same owner: merges
    backup(ds, src, "t", HOST, T0)      # unrelated group in the target stays
    result = move_namespace(ds, ns("a"), ns("t"))
    assert result["method"] == "merge"
    assert snapshot_times(ds, "t", VM) == [T0 - 100, T0]
    assert snapshot_times(ds, "t", HOST) == [T0]
    assert snapshot_times(ds, "t/b/c", HOST) == [T0]
    assert {n["ns"]: n["action"] for n in result["namespaces"]} == {
        "a": "merge", "a/b": "rename", "a/b/c": "rename"}
    assert not ds.namespace_exists(ns("a"))


# -- difference 3: merges are all or nothing ------------------------------------------------

def test_one_conflicting_group_stops_the_whole_namespace_merge(ds: Datastore,
                                                               src: Path) -> None:
    make_namespaces(ds, "a", "t")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "a", CT, T0)
    backup(ds, src, "t", CT, T0 + 50)  # newer than a's: conflict
    before = tree(ds)
    with pytest.raises(MoveConflict, match="ct/7") as err:
        move_namespace(ds, ns("a"), ns("t"))
    assert tree(ds) == before
    actions = {(g["backup-type"], g["action"]) for g in err.value.report["groups"]}
    assert actions == {("vm", "rename"), ("ct", "conflict")}


def test_busy_target_group_fails_the_move_before_anything_moves(ds: Datastore,
                                                                src: Path) -> None:
    make_namespaces(ds, "a", "t")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "a", CT, T0)
    base = backup(ds, src, "t", CT, T0 - 50)
    before = tree(ds)
    operation = "backup into the target group"
    with holding(ds, operation, backup_writer("t", CT, base, T0 + 99)) as pid:
        with pytest.raises(LockBusy) as err:
            move_namespace(ds, ns("a"), ns("t"))
        assert_names_holder(err, pid, operation)
        assert tree(ds) == before
        with pytest.raises(LockBusy):
            move_group(ds, ns("a"), CT, ns("t"))
    move_namespace(ds, ns("a"), ns("t"))
    assert snapshot_times(ds, "t", CT) == [T0 - 50, T0]


def test_the_wait_option_waits_for_a_busy_lock(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a")
    snap = backup(ds, src, "", VM, T0)
    with holding(ds, "restore", reader_of("", snap), release_after=0.5):
        started = time.monotonic()
        move_group(ds, ROOT, VM, ns("a"), wait=10)
        assert 0.3 < time.monotonic() - started < 8
    assert snapshot_times(ds, "a", VM) == [T0]


# -- §8.7-9: readers and writers in the source ----------------------------------------------

@pytest.mark.parametrize("holder", ["restore", "backup"])
def test_busy_source_group_refuses_group_and_namespace_moves(ds: Datastore, src: Path,
                                                             holder: str) -> None:
    make_namespaces(ds, "a")
    snap = backup(ds, src, "a", VM, T0)
    take = reader_of("a", snap) if holder == "restore" else backup_writer(
        "a", VM, snap, T0 + 60)
    before = tree(ds)
    with holding(ds, holder, take) as pid:
        for move in (lambda: move_group(ds, ns("a"), VM, ROOT),
                     lambda: move_namespace(ds, ns("a"), ns("b"))):
            with pytest.raises(LockBusy) as err:
                move()
            assert_names_holder(err, pid, holder)
        assert tree(ds) == before


# -- difference 4: dry run -------------------------------------------------------------------

def test_dry_run_reports_the_plan_and_changes_nothing(ds: Datastore, src: Path) -> None:
    _three_levels(ds, src)
    make_namespaces(ds, "t")
    backup(ds, src, "t", VM, T0 + 10)  # conflicts with a's vm/100
    before = tree(ds)
    report = move_namespace(ds, ns("a"), ns("t"), dry_run=True)
    assert tree(ds) == before
    assert report["dry-run"] is True
    assert report["moved-groups"] == 2 and report["moved-snapshots"] == 2
    assert len(report["conflicts"]) == 1 and "snapshot time mismatch" in report["conflicts"][0]
    by_group = {(g["ns"], g["backup-type"]): (g["action"], g["snapshots"])
                for g in report["groups"]}
    assert by_group == {("a", "vm"): ("conflict", 1), ("a/b", "ct"): ("rename", 1),
                        ("a/b/c", "host"): ("rename", 1)}


def test_dry_run_names_a_busy_lock_instead_of_failing(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a")
    snap = backup(ds, src, "a", VM, T0)
    with holding(ds, "restore", reader_of("a", snap)) as pid:
        report = move_namespace(ds, ns("a"), ns("b"), dry_run=True)
        assert f"pid {pid}" in report["busy"]
        report = move_group(ds, ns("a"), VM, ROOT, dry_run=True)
        assert f"pid {pid}" in report["busy"]
        assert report["groups"][0]["snapshots"] == 1


# -- difference 2 and §8.12-15: a quiet source while a namespace moves ----------------------

@pytest.fixture
def frozen_mover(ds: Datastore, src: Path) -> Iterator[subprocess.Popen[str]]:
    """A real `chunkyard namespace move a --target-ns t` stopped (SIGSTOP) with its locks
    held and its plan made; resumed and reaped at the end."""
    _three_levels(ds, src)
    make_namespaces(ds, "t")
    env = dict(os.environ, CHUNKYARD_FAULT="move.locked:stop", CHUNKYARD_AUTHID="root@pam")
    proc = subprocess.Popen([*CLI, "namespace", "move", "a", "--target-ns", "t",
                             "--repository", ds.path], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while _state(proc.pid) != "T":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the mover never reached its fault point"
        time.sleep(0.02)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.communicate(timeout=30)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_nothing_can_start_inside_a_namespace_being_moved(
    ds: Datastore, src: Path, frozen_mover: subprocess.Popen[str]
) -> None:
    pid = frozen_mover.pid
    attempts = {
        "backup into the source": lambda: backup(ds, src, "a/b", BackupGroup.parse("vm/9"),
                                                 T0 + 5),
        "child namespace": lambda: namespaces.create_namespace(ds, ns("a/b/new")),
        "delete group": lambda: groups.delete_group(ds, ns("a/b"), CT),
        "delete namespace": lambda: namespaces.delete_namespace(ds, ns("a"),
                                                                delete_groups=True),
        "forget snapshot": lambda: snapshots.forget_snapshot(ds, ns("a/b/c"),
                                                             BackupDir(HOST, T0)),
        "move a group out": lambda: move_group(ds, ns("a/b"), CT, ROOT),
        "restore": lambda: run_restore(ds, RestoreRequest(ns("a"), BackupDir(VM, T0),
                                                          "root.tar", str(src) + "-r")),
        "backup into the new target": lambda: backup(ds, src, "t", VM, T0 + 7),
        "prune": lambda: prune_group(ds, ns("a/b"), CT, KeepOptions(last=1)),
    }
    for what, attempt in attempts.items():
        with pytest.raises(LockBusy) as err:
            attempt()
        assert f"pid {pid} " in str(err.value), what
        assert "move namespace 'a' to 't'" in str(err.value), what
    # verify skips what it cannot lock (PBS: "SKIPPED ... could not acquire snapshot lock")
    report = run_verify(ds, authid="root@pam", ns=ns("a"))
    assert report.snapshots and all((r.outcome, r.reason) == (Outcome.SKIPPED, SkipReason.BUSY)
                                    for r in report.snapshots)
    os.kill(pid, signal.SIGCONT)
    out, errors = frozen_mover.communicate(timeout=30)
    assert frozen_mover.returncode == 0, errors
    assert "moved namespace 'a' to 't'" in out
    assert not ds.namespace_exists(ns("a")), "nothing was left behind"
    assert snapshot_times(ds, "t/b", CT) == [T0]


# -- difference 5: the GC journal ------------------------------------------------------------

def test_moves_journal_their_destinations_and_drain_marks_them(ds: Datastore,
                                                               src: Path) -> None:
    make_namespaces(ds, "a", "t")
    backup(ds, src, "a", VM, T0)
    backup(ds, src, "", CT, T0)
    move_namespace(ds, ns("a"), ns("b"))
    move_group(ds, ROOT, CT, ns("t"))
    assert journal.entries(ds) == ["ns/b", "ns/t/ct/7"]
    marked: list[str] = []
    with ds.locks.session("gc") as session:
        result = journal.drain(ds, session, marked.append)
    assert sorted(marked) == [f"ns/b/vm/100/{BackupDir(VM, T0).time_string}/root.tar.didx",
                              f"ns/t/ct/7/{BackupDir(CT, T0).time_string}/root.tar.didx"]
    assert result.truncated and result.indexes == 2
    assert journal.entries(ds) == []


def test_journal_ghosts_are_dropped_and_failures_keep_the_journal(ds: Datastore,
                                                                  src: Path) -> None:
    make_namespaces(ds, "a")
    backup(ds, src, "a", VM, T0)
    with ds.locks.session("mover") as session:
        journal.append(ds, session, ["ns/never-renamed", "ns/a"])

    def failing(key: str) -> None:
        raise DatastoreError(f"cannot read {key}")

    with ds.locks.session("gc") as session:
        result = journal.drain(ds, session, failing)
    assert not result.truncated and result.ghosts == 1 and len(result.failures) == 1
    assert journal.entries(ds) == ["ns/never-renamed", "ns/a"]
    with ds.locks.session("gc") as session:
        result = journal.drain(ds, session, lambda key: None)
    assert result.truncated and result.ghosts == 1 and result.indexes == 1
    assert journal.entries(ds) == []


def test_destinations_cover_every_rename_of_a_merge(ds: Datastore, src: Path) -> None:
    make_namespaces(ds, "a", "t")
    backup(ds, src, "t", VM, T0)
    backup(ds, src, "a", VM, T0 + 1)
    backup(ds, src, "a", CT, T0)
    plan = plan_namespace_move(ds, ns("a"), ns("t"))
    assert destinations(plan) == ["ns/t/ct/7",
                                  f"ns/t/vm/100/{BackupDir(VM, T0 + 1).time_string}"]


# -- difference 6: configuration that names a moved namespace -------------------------------

def test_reference_hook_rewrites_acl_paths_in_the_same_operation(ds: Datastore, src: Path,
                                                                 tmp_path: Path) -> None:
    """A sample of what the server's hook will do: ACL lines of PBS's acl.cfg naming the
    moved namespace or a descendant get the new path; others are left alone."""
    _three_levels(ds, src)
    acl = tmp_path / "acl.cfg"
    acl.write_text("acl:1:/datastore/store/a:alice@pbs:DatastoreBackup\n"
                   "acl:1:/datastore/store/a/b/c:bob@pbs:DatastoreReader\n"
                   "acl:1:/datastore/store/ab:carol@pbs:DatastoreAdmin\n")

    def rewrite_acl(store: Datastore, moved: list[tuple[BackupNamespace, BackupNamespace]]
                    ) -> list[str]:
        lines, log = acl.read_text().splitlines(), []
        mapping = {f"/datastore/store/{old}": f"/datastore/store/{new}" for old, new in moved}
        for i, line in enumerate(lines):
            parts = line.split(":")
            if parts[2] in mapping:
                log.append(f"acl {parts[2]} -> {mapping[parts[2]]}")
                parts[2] = mapping[parts[2]]
                lines[i] = ":".join(parts)
        acl.write_text("\n".join(lines) + "\n")
        return log

    def broken(store: Datastore, moved: list[tuple[BackupNamespace, BackupNamespace]]
               ) -> list[str]:
        raise OSError("config is read-only")

    unregister = [register_reference_hook(rewrite_acl), register_reference_hook(broken)]
    try:
        result = move_namespace(ds, ns("a"), ns("x"))
    finally:
        for undo in unregister:
            undo()
    assert acl.read_text().splitlines() == [
        "acl:1:/datastore/store/x:alice@pbs:DatastoreBackup",
        "acl:1:/datastore/store/x/b/c:bob@pbs:DatastoreReader",
        "acl:1:/datastore/store/ab:carol@pbs:DatastoreAdmin"]
    assert result["references"][:2] == ["acl /datastore/store/a -> /datastore/store/x",
                                        "acl /datastore/store/a/b/c -> /datastore/store/x/b/c"]
    assert result["references"][2].startswith("failed: reference hook broken")
    assert snapshot_times(ds, "x/b/c", HOST) == [T0], "a failing hook does not undo the move"


# -- the command line ------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHUNKYARD_AUTHID="root@pam", COLUMNS="200")
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def test_cli_moves_with_json_output_and_one_line_errors(ds: Datastore, src: Path) -> None:
    import json

    _three_levels(ds, src)
    repo = ["--repository", ds.path]
    dry = _cli("namespace", "move", "a", "--target-ns", "t", "--dry-run", *repo)
    assert dry.returncode == 0 and "dry run: would move namespace 'a' to 't'" in dry.stdout
    assert ds.namespace_exists(ns("a"))
    done = _cli("namespace", "move", "a", "--target-ns", "t", "--output-format", "json", *repo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["method"] == "rename"
    moved = _cli("group", "move", "vm/100", "--ns", "t", "--target-ns", "t/b",
                 "--merge-group", "false", "--output-format", "json", *repo)
    assert json.loads(moved.stdout)["moved-snapshots"] == 1
    for bad in (["namespace", "move", "t", "--target-ns", "../etc", *repo],
                ["namespace", "move", "t", "--target-ns", "t/b/x", *repo],
                ["namespace", "move", "", "--target-ns", "x", *repo],
                ["group", "move", "vm/../../x", "--ns", "t", *repo],
                ["group", "move", "ct/7", "--ns", "t/b", "--merge-group", "perhaps", *repo]):
        result = _cli(*bad)
        assert result.returncode in (1, 2), (bad, result)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: ")
    assert snapshot_times(ds, "t/b", CT) == [T0]


def test_cli_conflict_prints_the_plan_in_json_and_fails(ds: Datastore, src: Path) -> None:
    import json

    make_namespaces(ds, "a")
    backup(ds, src, "a", VM, T0 + 5)
    backup(ds, src, "", VM, T0)
    result = _cli("group", "move", "vm/100", "--target-ns", "a", "--output-format", "json",
                  "--repository", ds.path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot move group vm/100")
    assert json.loads(result.stdout)["conflicts"]
