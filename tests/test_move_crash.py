"""Moves cut short, raced and fed garbage: the crash-safety promises of `chunkyard.datastore.moves`.

Every mover here is a real `chunkyard` process doing real rename(2)s. It is killed with
SIGKILL at each fault-injection point (`chunkyard.faults.KNOWN_POINTS`) in the rename path
(a namespace renamed whole) and in two merge paths (a namespace merged into an existing one,
a group merged into an existing group); then the datastore is reopened, which completes the
move if its intent log was written and leaves the old layout otherwise. Each outcome is
checked exactly: every snapshot once, in its expected place, with its manifest unchanged and
restoring byte-exact; owners and notes per PBS's rules; no orphan directory, intent or lock
file; the GC journal naming every destination.

Also: recovery never touches a live (stopped) mover; corrupt intents are reported and left
alone; mirror moves A->B and B->A at once never deadlock; the recovery races and crash
leftovers this file once found stay fixed (the tests at its end).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import (
    MOVE_INTENT_DIR,
    group_key,
    namespace_key,
    snapshot_key,
)
from chunkyard.datastore.locking import LockKey
from chunkyard.datastore.moves import intents, journal
from chunkyard.faults import KNOWN_POINTS
from chunkyard.names import Authid, BackupDir, BackupGroup
from tests.helpers import tree_state
from tests.store_helpers import OWNER, ROOT, T0, backup, make_namespaces, ns

_SCRIPT = Path(sys.executable).with_name("chunkyard")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkyard.cli.main"]
OTHER_OWNER = Authid.parse("backup@pbs")
ARCHIVE = "root.tar"
# points at which the intent log is not yet written: the move must not happen at all
BEFORE_INTENT = ("move.locked", "move.journaled")
# the points a move passes (KNOWN_POINTS also holds other operations' points)
MOVE_POINTS = tuple(p for p in KNOWN_POINTS if p.startswith("move."))

GroupRef = tuple[str, str]  # (namespace, "type/id")


# -- layouts and scenarios -------------------------------------------------------------------

@dataclass
class Layout:
    """A datastore's contents as the test sees them."""

    namespaces: tuple[str, ...]                    # every namespace but the root
    groups: dict[GroupRef, tuple[int, ...]]        # snapshot times per group
    notes: dict[GroupRef, str] = field(default_factory=dict)
    owners: dict[GroupRef, Authid] = field(default_factory=dict)   # OWNER if absent
    # (namespace, type) directories a group left, empty (a group deletion leaves them too)
    empty_type_dirs: tuple[tuple[str, str], ...] = ()

    def placement(self) -> dict[tuple[str, int], str]:
        """(group, time) -> namespace: each snapshot's one home."""
        out: dict[tuple[str, int], str] = {}
        for (namespace, group), times in self.groups.items():
            for t in times:
                assert (group, t) not in out, "scenario snapshots must be unique"
                out[(group, t)] = namespace
        return out

    def dirs(self) -> set[str]:
        """Every directory the datastore must hold (relative, without `.chunks`)."""
        out: set[str] = set()

        def add(parts: list[str]) -> None:
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))

        for name in self.namespaces:
            add(ns(name).path_parts())
        for (namespace, group), times in self.groups.items():
            g = BackupGroup.parse(group)
            add(group_key(ns(namespace), g).split("/"))
            for t in times:
                add(snapshot_key(ns(namespace), BackupDir(g, t)).split("/"))
        for namespace, btype in self.empty_type_dirs:
            add([*ns(namespace).path_parts(), btype])
        return out


@dataclass
class Scenario:
    name: str
    args: tuple[str, ...]
    before: Layout
    after: Layout
    steps: int                      # the plan's number of steps
    step_points: tuple[int, ...]    # the `move.step@n` points to kill at
    destinations: tuple[str, ...]   # what the GC journal must name
    targets: tuple[str, ...]        # namespaces the move creates or merges into


def _snap_key(namespace: str, group: str, t: int) -> str:
    return snapshot_key(ns(namespace), BackupDir(BackupGroup.parse(group), t))


# A namespace with children and several groups, moved to a target that does not exist: one
# rename(2) of the whole subtree.
RENAME = Scenario(
    name="ns-rename",
    args=("namespace", "move", "src", "--target-ns", "dst"),
    before=Layout(
        namespaces=("src", "src/c1", "src/c1/g", "src/c2", "keep"),
        groups={("src", "vm/100"): (T0 + 10, T0 + 11), ("src", "host/web"): (T0 + 20, T0 + 21),
                ("src/c1", "ct/200"): (T0 + 30,), ("src/c1/g", "vm/101"): (T0 + 40,),
                ("keep", "vm/102"): (T0 + 50,)},
        notes={("src", "host/web"): "web notes\n"},
        owners={("src", "host/web"): OTHER_OWNER},
    ),
    after=Layout(
        namespaces=("dst", "dst/c1", "dst/c1/g", "dst/c2", "keep"),
        groups={("dst", "vm/100"): (T0 + 10, T0 + 11), ("dst", "host/web"): (T0 + 20, T0 + 21),
                ("dst/c1", "ct/200"): (T0 + 30,), ("dst/c1/g", "vm/101"): (T0 + 40,),
                ("keep", "vm/102"): (T0 + 50,)},
        notes={("dst", "host/web"): "web notes\n"},
        owners={("dst", "host/web"): OTHER_OWNER},
    ),
    steps=1,
    step_points=(1,),
    destinations=(namespace_key(ns("dst")),),
    targets=("dst",),
)

# A namespace merged into an existing one: vm/100 merges (the target's snapshots are older,
# same owner; the notes are the source's only, so they move), host/web is renamed into the
# target, the child namespace c1 is renamed whole, the emptied source is removed. Steps, in
# order: rename host/web, 3 x rename snapshot, merge notes, remove group, rename c1, remove src.
NS_MERGE = Scenario(
    name="ns-merge",
    args=("namespace", "move", "src", "--target-ns", "dst"),
    before=Layout(
        namespaces=("src", "src/c1", "dst"),
        groups={("dst", "vm/100"): (T0 + 1, T0 + 2), ("dst", "host/other"): (T0 + 3,),
                ("src", "vm/100"): (T0 + 10, T0 + 11, T0 + 12),
                ("src", "host/web"): (T0 + 20, T0 + 21), ("src/c1", "ct/200"): (T0 + 30,)},
        notes={("src", "vm/100"): "vm notes from the source\n", ("src", "host/web"): "web\n"},
        owners={("src", "host/web"): OTHER_OWNER},
    ),
    after=Layout(
        namespaces=("dst", "dst/c1"),
        groups={("dst", "vm/100"): (T0 + 1, T0 + 2, T0 + 10, T0 + 11, T0 + 12),
                ("dst", "host/other"): (T0 + 3,), ("dst", "host/web"): (T0 + 20, T0 + 21),
                ("dst/c1", "ct/200"): (T0 + 30,)},
        notes={("dst", "vm/100"): "vm notes from the source\n", ("dst", "host/web"): "web\n"},
        owners={("dst", "host/web"): OTHER_OWNER},
    ),
    steps=8,
    step_points=(1, 3, 5),  # first; mid-merge (2 of 3 snapshots moved); notes moved
    destinations=(group_key(ns("dst"), BackupGroup.parse("host/web")),
                  _snap_key("dst", "vm/100", T0 + 10), _snap_key("dst", "vm/100", T0 + 11),
                  _snap_key("dst", "vm/100", T0 + 12), namespace_key(ns("dst/c1"))),
    targets=("dst", "dst/c1"),
)

# A group merged into the same group of another namespace; notes on both sides: the
# target's stay. The source namespace keeps its other group. Steps: 3 x rename snapshot,
# merge notes, remove group.
GROUP_MERGE = Scenario(
    name="group-merge",
    args=("group", "move", "vm/100", "--ns", "A", "--target-ns", "B"),
    before=Layout(
        namespaces=("A", "B"),
        groups={("B", "vm/100"): (T0 + 1, T0 + 2),
                ("A", "vm/100"): (T0 + 10, T0 + 11, T0 + 12), ("A", "host/stay"): (T0 + 20,)},
        notes={("A", "vm/100"): "A's notes\n", ("B", "vm/100"): "B's notes\n"},
    ),
    after=Layout(
        namespaces=("A", "B"),
        groups={("B", "vm/100"): (T0 + 1, T0 + 2, T0 + 10, T0 + 11, T0 + 12),
                ("A", "host/stay"): (T0 + 20,)},
        notes={("B", "vm/100"): "B's notes\n"},
        empty_type_dirs=(("A", "vm"),),
    ),
    steps=5,
    step_points=(1, 2, 4),  # first; mid-merge; notes done, emptied source group still there
    destinations=tuple(_snap_key("B", "vm/100", T0 + i) for i in (10, 11, 12)),
    targets=("B",),
)

SCENARIOS = (RENAME, NS_MERGE, GROUP_MERGE)


def _crash_cases() -> list[Any]:
    cases = []
    for scenario in SCENARIOS:
        for point in MOVE_POINTS:
            if point == "move.step":
                names = [f"move.step@{n}" for n in scenario.step_points]
            else:
                names = [point]
            cases += [pytest.param(scenario, name, id=f"{scenario.name}-{name}")
                      for name in names]
    return cases


# -- building and copying datastores ---------------------------------------------------------

@dataclass
class Template:
    store: Path
    trees: dict[tuple[str, int], Path]     # (group, time) -> the tree backed up
    manifests: dict[tuple[str, int], str]  # (group, time) -> sha256 of the raw manifest


def _make_small_tree(root: Path, group: str, when: int) -> None:
    """A few files whose content names the snapshot, so a swapped snapshot shows."""
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "id.txt").write_text(f"{group} {when}\n")
    (root / "data.bin").write_bytes(hashlib.sha256(f"{group}{when}".encode()).digest() * 97)
    (root / "sub" / "nested.txt").write_text("nested\n" * (when % 7 + 1))
    os.symlink("id.txt", root / "link")
    os.utime(root / "id.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def _build(layout: Layout, base: Path) -> Template:
    ds = Datastore.create(str(base / "store"), sparse=True)
    make_namespaces(ds, *layout.namespaces)
    trees: dict[tuple[str, int], Path] = {}
    for (namespace, group), times in layout.groups.items():
        g = BackupGroup.parse(group)
        for t in times:
            tree = base / "trees" / f"{group.replace('/', '-')}-{t}"
            _make_small_tree(tree, group, t)
            backup(ds, tree, namespace, g, t)
            trees[(group, t)] = tree
        owner = layout.owners.get((namespace, group))
        if owner is not None:
            ds.set_owner(ns(namespace), g, owner)
    for (namespace, group), text in layout.notes.items():
        ds.set_group_notes(ns(namespace), BackupGroup.parse(group), text)
    return Template(base / "store", trees, _manifests(ds))


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Layout], Template]]:
    """Datastores built once per module, one per initial layout; tests work on copies."""
    built: dict[int, Template] = {}

    def get(layout: Layout) -> Template:
        if id(layout) not in built:
            base = tmp_path_factory.mktemp("template")
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CHUNKYARD_CACHE_DIR", str(base / "client-cache"))
                built[id(layout)] = _build(layout, base)
        return built[id(layout)]

    yield get


def _copy(template: Template, dest: Path) -> str:
    """A copy of the template's datastore: a new inode, so its own (empty) lock directory."""
    shutil.copytree(template.store, dest, symlinks=True)
    return str(dest)


# -- running the CLI -------------------------------------------------------------------------

def _env(fault: str | None = None) -> dict[str, str]:
    env = dict(os.environ)  # CHUNKYARD_LOCK_DIR and CHUNKYARD_LOCKDEP as in this process
    env.pop("CHUNKYARD_REPOSITORY", None)
    env.pop("CHUNKYARD_FAULT", None)
    env["CHUNKYARD_AUTHID"] = "root@pam"
    if fault is not None:
        env["CHUNKYARD_FAULT"] = fault
    return env


def _argv(args: tuple[str, ...], store: str, *extra: str) -> list[str]:
    return [*CLI, *args, "--repository", store, *extra]


def _run(args: tuple[str, ...], store: str, fault: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(args, store), capture_output=True, text=True, timeout=60,
                          env=_env(fault), stdin=subprocess.DEVNULL)


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _wait_stopped(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _proc_state(proc.pid) != "T":
        assert proc.poll() is None, f"mover exited ({proc.returncode}) instead of stopping"
        assert time.monotonic() < deadline, "mover never reached its stop point"
        time.sleep(0.01)


# -- observing a datastore -------------------------------------------------------------------

def _all_snapshots(ds: Datastore) -> list[tuple[str, str, int]]:
    """(namespace, group, time) of every snapshot the datastore lists, duplicates kept."""
    out = []
    for n in ds.iter_namespaces(ROOT):
        for g in ds.list_groups(n):
            out += [(str(n), str(g), s.dir.time) for s in ds.list_snapshots(n, g)]
    return out


def _manifests(ds: Datastore) -> dict[tuple[str, int], str]:
    out = {}
    for n, g, t in _all_snapshots(ds):
        raw = ds.load_manifest_raw(ns(n), BackupDir(BackupGroup.parse(g), t))
        out[(g, t)] = hashlib.sha256(raw).hexdigest()
    return out


def _dirs(store: str) -> set[str]:
    out: set[str] = set()
    for directory, dirs, _files in os.walk(store):
        rel = os.path.relpath(directory, store)
        if rel == ".":
            dirs[:] = [d for d in dirs if d != ".chunks"]
        for d in dirs:
            out.add(d if rel == "." else f"{rel}/{d}")
    return out


def _lock_files(ds: Datastore) -> set[str]:
    """Every file and directory below the namespace part of the datastore's lock dir."""
    root = os.path.join(ds.locks.lock_dir, "ns")
    out: set[str] = set()
    for directory, dirs, files in os.walk(root):
        out.update(os.path.join(directory, n) for n in dirs + files)
    return out


def _allowed_lock_files(ds: Datastore, layout: Layout) -> set[str]:
    """The lock files and directories of objects that exist in `layout` (and of the root)."""
    locks = ds.locks
    out = {locks.namespace_lock_dir(ROOT), locks.lock_file_path(LockKey.namespace(ROOT))}
    for name in layout.namespaces:
        out.add(locks.namespace_lock_dir(ns(name)))
        out.add(locks.lock_file_path(LockKey.namespace(ns(name))))
    for (namespace, group), times in layout.groups.items():
        n, g = ns(namespace), BackupGroup.parse(group)
        out.add(locks.lock_file_path(LockKey.group_writer(n, g)))
        out.add(locks.lock_file_path(LockKey.group_access(n, g)))
        for t in times:
            out.add(locks.lock_file_path(LockKey.snapshot(n, BackupDir(g, t))))
            out.add(locks.lock_file_path(LockKey.manifest(n, BackupDir(g, t))))
    return out


def assert_layout(ds: Datastore, layout: Layout, template: Template,
                  extra_dirs: frozenset[str] = frozenset()) -> None:
    """The datastore holds exactly `layout`: snapshots, manifests, owners, notes, dirs."""
    listed = _all_snapshots(ds)
    counts = Counter((g, t) for _n, g, t in listed)
    assert [k for k, c in counts.items() if c != 1] == [], listed
    assert {(g, t): n for n, g, t in listed} == layout.placement()
    assert _manifests(ds) == template.manifests
    for (namespace, group) in layout.groups:
        n, g = ns(namespace), BackupGroup.parse(group)
        assert ds.get_owner(n, g) == layout.owners.get((namespace, group), OWNER), group
        assert ds.get_group_notes(n, g) == layout.notes.get((namespace, group), ""), group
        group_dir = Path(ds.path, group_key(n, g))
        files = {p.name for p in group_dir.iterdir() if not p.is_dir()}
        expected = {"owner", "notes"} if (namespace, group) in layout.notes else {"owner"}
        assert files == expected, (group_dir, files)
    assert _dirs(ds.path) == layout.dirs() | extra_dirs


def assert_restores(ds: Datastore, layout: Layout, template: Template, out: Path) -> None:
    """The oldest and newest snapshot of every group restore byte-exact."""
    for (namespace, group), times in layout.groups.items():
        for t in sorted({min(times), max(times)}):
            target = out / f"{namespace.replace('/', '_')}-{group.replace('/', '-')}-{t}"
            run_restore(ds, RestoreRequest(ns(namespace), BackupDir(BackupGroup.parse(group), t),
                                           ARCHIVE, str(target)))
            assert tree_state(target) == tree_state(template.trees[(group, t)]), target


def assert_complete(ds: Datastore, scenario: Scenario, template: Template, out: Path) -> None:
    """The move is done: the new layout exactly, no intent, no stale lock file."""
    assert not os.path.exists(os.path.join(ds.path, MOVE_INTENT_DIR))
    assert_layout(ds, scenario.after, template)
    stale = _lock_files(ds) - _allowed_lock_files(ds, scenario.after)
    assert stale == set(), "lock files of moved-away objects remain"
    entries = set(journal.entries(ds))
    assert set(scenario.destinations) <= entries, entries
    assert_restores(ds, scenario.after, template, out)


# -- 1. SIGKILL at every fault point, then reopen --------------------------------------------

def test_cases_cover_every_fault_point() -> None:
    covered = {c.values[1].partition("@")[0] for c in _crash_cases()}
    assert covered == set(MOVE_POINTS)
    assert set(BEFORE_INTENT) < covered and "move.intent-written" in covered
    for scenario in SCENARIOS:
        assert all(1 <= n <= scenario.steps for n in scenario.step_points)


@pytest.mark.parametrize(("scenario", "point"), _crash_cases())
def test_kill_at_fault_point_then_reopen(scenario: Scenario, point: str, tmp_path: Path,
                                         templates: Callable[[Layout], Template]) -> None:
    template = templates(scenario.before)
    store = _copy(template, tmp_path / "store")

    result = _run(scenario.args, store, fault=f"{point}:kill")
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    killed_before_intent = point in BEFORE_INTENT
    intent_dir = os.path.join(store, MOVE_INTENT_DIR)
    assert os.path.isdir(intent_dir) != killed_before_intent

    # Before recovery, whatever step the kill hit: each snapshot in exactly one place, and
    # every destination that exists is journaled (what GC relies on).
    raw = Datastore.open(store, recover=False)
    counts = Counter((g, t) for _n, g, t in _all_snapshots(raw))
    assert set(counts) == set(template.manifests) and set(counts.values()) == {1}
    assert _manifests(raw) == template.manifests
    entries = set(journal.entries(raw))
    assert [k for k in scenario.destinations
            if os.path.exists(os.path.join(store, k)) and k not in entries] == []
    if point.startswith("move.step@") and int(point.partition("@")[2]) < scenario.steps:
        partial = _dirs(store) - {MOVE_INTENT_DIR}
        assert partial not in (scenario.before.dirs(), scenario.after.dirs())

    ds = Datastore.open(store)

    out = tmp_path / "restored"
    if not killed_before_intent:
        assert_complete(ds, scenario, template, out)
        # a second open has nothing left to do
        assert_layout(Datastore.open(store), scenario.after, template)
        return
    # the intent was never written: nothing moved, nothing to complete
    assert not os.path.exists(intent_dir)
    assert_layout(ds, scenario.before, template)
    # a lock file of an absent target (a lock taken, never used) is harmless; others are not
    target_dirs = tuple(ds.locks.namespace_lock_dir(ns(t)) + os.sep for t in scenario.targets)
    stale = {p for p in _lock_files(ds) - _allowed_lock_files(ds, scenario.before)
             if not (p + os.sep).startswith(target_dirs)}
    assert stale == set()
    entries = set(journal.entries(ds))
    if point == "move.locked":
        assert entries == set()
    else:  # journaled before the kill: ghosts, which GC skips
        assert set(scenario.destinations) <= entries
    assert_restores(ds, scenario.before, template, out)
    # the move can still be done afterwards, and comes out the same
    done = _run(scenario.args, store)
    assert done.returncode == 0, done.stderr
    assert_complete(Datastore.open(store), scenario, template, tmp_path / "restored-after")


# -- 2. recovery leaves a live mover alone ---------------------------------------------------

@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_recovery_does_not_touch_a_live_move(scenario: Scenario, tmp_path: Path,
                                             templates: Callable[[Layout], Template]) -> None:
    template = templates(scenario.before)
    store = _copy(template, tmp_path / "store")
    proc = subprocess.Popen(_argv(scenario.args, store), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            env=_env("move.intent-written:stop"))
    try:
        _wait_stopped(proc)
        intent_dir = Path(store, MOVE_INTENT_DIR)
        (intent_file,) = intent_dir.iterdir()
        intent_bytes = intent_file.read_bytes()
        assert len(json.loads(intent_bytes)["steps"]) == scenario.steps
        dirs_before = _dirs(store)

        started = time.monotonic()
        ds = Datastore.open(store)  # must not wait for, complete or undo the frozen move
        assert time.monotonic() - started < 5
        assert intent_file.read_bytes() == intent_bytes
        assert _dirs(store) == dirs_before
        assert_layout(ds, scenario.before, template, frozenset({MOVE_INTENT_DIR}))
        assert intents.names(ds) == [intent_file.name]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stdout.startswith("moved "), stdout
    assert_complete(Datastore.open(store), scenario, template, tmp_path / "restored")


# -- 3. corrupt intents ----------------------------------------------------------------------

def _intent(**changes: Any) -> bytes:
    """A well-formed intent of a group move A -> B, with `changes` applied."""
    raw: dict[str, Any] = {
        "version": 1, "kind": "group", "source": "A", "target": "B", "group": "vm/100",
        "steps": [{"op": "rename-snapshot", "src": "A", "dst": "B",
                   "snapshot": str(BackupDir(BackupGroup.parse("vm/100"), T0 + 10))},
                  {"op": "merge-notes", "src": "A", "dst": "B", "group": "vm/100"},
                  {"op": "remove-group", "src": "A", "group": "vm/100"}],
        "locks": [{"kind": "NS", "ns": "A", "mode": "S"}, {"kind": "NS", "ns": "B", "mode": "S"},
                  {"kind": "GW", "ns": "A", "group": "vm/100", "mode": "X"},
                  {"kind": "GA", "ns": "A", "group": "vm/100", "mode": "X"},
                  {"kind": "GA", "ns": "B", "group": "vm/100", "mode": "X"}],
        "moved-namespaces": [], "moved-groups": [["A", "vm/100"]], "namespace-map": [],
    }
    raw.update(changes)
    return json.dumps(raw).encode()


def _step(**fields: str) -> list[dict[str, str]]:
    return [fields]


OUT = "../../outside"  # relative to a namespace directory: the sibling of the datastore

CORRUPT_INTENTS: dict[str, bytes] = {
    "garbage": b"\x00\xffnot json {{",
    "empty": b"",
    "truncated": _intent()[:120],
    "not-an-object": b"[1, 2, 3]",
    "version-2": _intent(version=2),
    "unknown-kind": _intent(kind="datastore"),
    "no-locks": _intent(locks=[]),
    "unknown-op": _intent(steps=_step(op="rm-rf", src="A")),
    "step-lacks-dst": _intent(steps=_step(op="rename-ns", src="A")),
    "source-is-a-number": _intent(source=7),
    "steps-not-a-list": _intent(steps="rename everything"),
    "step-field-not-a-string": _intent(steps=[{"op": "remove-ns", "src": ["A"]}]),
    "moved-groups-wrong-shape": _intent(**{"moved-groups": [["A"]]}),
    "moved-groups-numbers": _intent(**{"moved-groups": [[1, 2]]}),
    "lock-not-an-object": _intent(locks=["NS A X"]),
    "lock-unknown-kind": _intent(locks=[{"kind": "CS", "ns": "", "mode": "X"}]),
    "dotdot-source": _intent(source=OUT),
    "dotdot-target": _intent(target="../outside"),
    "dotdot-step-src": _intent(steps=_step(op="rename-ns", src=OUT, dst="A/x")),
    "dotdot-step-dst": _intent(steps=_step(op="rename-ns", src="A", dst=OUT)),
    "dotdot-remove-ns": _intent(steps=_step(op="remove-ns", src="..")),
    "dotdot-group": _intent(steps=_step(op="remove-group", src="A", group="vm/../../..")),
    "dotdot-group-id": _intent(steps=_step(op="rename-group", src="A", dst="B",
                                           group="vm/..")),
    "dotdot-snapshot": _intent(steps=_step(op="rename-snapshot", src="A", dst="B",
                                           snapshot="vm/100/../../../..")),
    "absolute-dst": _intent(steps=_step(op="rename-ns", src="A", dst="/tmp/x")),
    "dotdot-lock": _intent(locks=[{"kind": "NS", "ns": "../..", "mode": "X"}]),
    "dotdot-moved-namespace": _intent(**{"moved-namespaces": [".."]}),
    # well-formed, but the namespaces it moves do not exist (a stale or foreign intent)
    "stale": _intent(steps=_step(op="rename-ns", src="gone", dst="gone2"),
                     locks=[{"kind": "NS", "ns": "gone", "mode": "X"},
                            {"kind": "NS", "ns": "gone2", "mode": "X"}]),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_INTENTS))
def test_corrupt_intent_is_reported_and_left(case: str, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture,
                                             templates: Callable[[Layout], Template]) -> None:
    template = templates(GROUP_MERGE.before)
    store = _copy(template, tmp_path / "store")
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "precious.txt").write_text("do not touch\n")
    intent = Path(store, MOVE_INTENT_DIR, f"{T0}-1-{case}.json")
    intent.parent.mkdir()
    intent.write_bytes(CORRUPT_INTENTS[case])
    before = tree_state(tmp_path)

    with caplog.at_level(logging.WARNING, logger="chunkyard.moves"):
        ds = Datastore.open(store)
        Datastore.open(store)  # again: the same warning, still no harm
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in caplog.records]
    assert all("cannot complete" in r.getMessage() for r in warnings)
    assert tree_state(tmp_path) == before  # the intent, the datastore and its neighbours
    assert_layout(ds, GROUP_MERGE.before, template, frozenset({MOVE_INTENT_DIR}))


def test_intent_that_is_a_directory_or_unlisted_is_left(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        templates: Callable[[Layout], Template]) -> None:
    template = templates(GROUP_MERGE.before)
    store = _copy(template, tmp_path / "store")
    intent_dir = Path(store, MOVE_INTENT_DIR)
    (intent_dir / f"{T0}-1.json").mkdir(parents=True)   # a directory named like an intent
    (intent_dir / "notes.txt").write_text("not an intent\n")
    (intent_dir / f".{T0}-2.json.tmp").write_bytes(_intent())  # an unfinished write
    before = tree_state(tmp_path)
    with caplog.at_level(logging.WARNING, logger="chunkyard.moves"):
        ds = Datastore.open(store)
    assert tree_state(tmp_path) == before
    assert_layout(ds, GROUP_MERGE.before, template,
                  frozenset({MOVE_INTENT_DIR, f"{MOVE_INTENT_DIR}/{T0}-1.json"}))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# -- 4. mirror moves never deadlock ----------------------------------------------------------

MIRROR = Layout(namespaces=("A", "B"),
                groups={("A", "vm/100"): (T0 + 1, T0 + 2), ("B", "vm/100"): (T0 + 10, T0 + 11)})
ROUNDS = 5


def _race(store: str, first: tuple[str, ...], second: tuple[str, ...]
          ) -> list[tuple[subprocess.Popen[str], str, str]]:
    """Start both movers back to back; both must end well within their --wait."""
    procs = [subprocess.Popen(_argv(args, store, "--wait", "5"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                              env=_env())
             for args in (first, second)]
    started = time.monotonic()
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=30)
            out.append((p, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert time.monotonic() - started < 20, "the mirror moves took too long"
    return out


def _check_failure(stdout: str, stderr: str, other_pid: int) -> None:
    """A refused mover fails with one line: the other one's lock, or a merge conflict."""
    assert "Traceback" not in stderr, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert f"pid {other_pid}" in lines[0] or "snapshot time mismatch" in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["group", "namespace"])
def test_mirror_moves_never_deadlock(kind: str, tmp_path: Path,
                                     templates: Callable[[Layout], Template]) -> None:
    template = templates(MIRROR)
    a_to_b: tuple[str, ...]
    b_to_a: tuple[str, ...]
    if kind == "group":
        a_to_b = ("group", "move", "vm/100", "--ns", "A", "--target-ns", "B")
        b_to_a = ("group", "move", "vm/100", "--ns", "B", "--target-ns", "A")
    else:
        a_to_b = ("namespace", "move", "A", "--target-ns", "B")
        b_to_a = ("namespace", "move", "B", "--target-ns", "A")
    all_times = (T0 + 1, T0 + 2, T0 + 10, T0 + 11)
    for round_ in range(ROUNDS):
        store = _copy(template, tmp_path / f"store-{round_}")
        pair = (a_to_b, b_to_a) if round_ % 2 == 0 else (b_to_a, a_to_b)
        results = dict(zip(pair, _race(store, *pair), strict=True))
        ok = {args for args, (p, _o, _e) in results.items() if p.returncode == 0}
        # A's snapshots are older: only B -> A can merge; A -> B succeeds only by renaming
        # after B -> A emptied B
        assert b_to_a in ok, {a: r[2] for a, r in results.items()}
        for p, stdout, stderr in results.values():
            if p.returncode == 0:
                assert stdout.startswith("moved "), stdout
                assert stderr.splitlines() == [], stderr
            else:
                assert p.returncode == 1, stderr
                other = next(q for q, _o, _e in results.values() if q is not p)
                _check_failure(stdout, stderr, other.pid)
        home = "B" if a_to_b in ok else "A"
        if kind == "group":
            after = Layout(namespaces=("A", "B"), groups={(home, "vm/100"): all_times},
                           empty_type_dirs=(("B" if home == "A" else "A", "vm"),))
        else:
            after = Layout(namespaces=(home,), groups={(home, "vm/100"): all_times})
        ds = Datastore.open(store)
        assert not os.path.exists(os.path.join(store, MOVE_INTENT_DIR))
        assert_layout(ds, after, template)
        assert _lock_files(ds) - _allowed_lock_files(ds, after) == set()
    assert_restores(ds, after, template, tmp_path / "restored")


# -- once bugs, now fixed: recovery races and crash leftovers ------------------------------

def test_intent_finished_between_listing_and_loading_is_no_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        templates: Callable[[Layout], Template]) -> None:
    template = templates(GROUP_MERGE.before)
    store = _copy(template, tmp_path / "store")
    stopped = subprocess.Popen(_argv(GROUP_MERGE.args, store), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                               env=_env("move.cleaned:stop"))
    real_load = intents.load

    def load_after_the_mover_finished(ds: Datastore, name: str) -> Any:
        # the mover resumes and removes its intent (and the then empty directory) between
        # our listing and our reading
        os.kill(stopped.pid, signal.SIGCONT)
        assert stopped.wait(60) == 0
        return real_load(ds, name)

    try:
        _wait_stopped(stopped)
        monkeypatch.setattr(intents, "load", load_after_the_mover_finished)
        with caplog.at_level(logging.WARNING, logger="chunkyard.moves"):
            ds = Datastore.open(store)
    finally:
        if stopped.poll() is None:
            os.kill(stopped.pid, signal.SIGCONT)
        stopped.communicate(timeout=60)
    assert stopped.returncode == 0
    assert_layout(ds, GROUP_MERGE.after, template)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_empty_intent_directory_left_by_a_crash_is_removed_on_open(
        tmp_path: Path, templates: Callable[[Layout], Template]) -> None:
    template = templates(GROUP_MERGE.before)
    store = _copy(template, tmp_path / "store")
    os.mkdir(os.path.join(store, MOVE_INTENT_DIR))  # what the crash leaves
    ds = Datastore.open(store)
    assert_layout(ds, GROUP_MERGE.before, template)  # no orphan directory


def test_recovery_leaves_a_live_move_alone_while_it_cleans_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        templates: Callable[[Layout], Template]) -> None:
    # a namespace without groups merged into an existing one: its plan's exclusive locks
    # are the source subtree's NS X only, the very lock files the cleanup unlinks
    layout = Layout(namespaces=("E", "D"), groups={})
    store = _copy(templates(layout), tmp_path / "store")
    proc = subprocess.Popen(_argv(("namespace", "move", "E", "--target-ns", "D"), store),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=_env("move.cleaned:stop"))
    try:
        _wait_stopped(proc)
        (intent_file,) = Path(store, MOVE_INTENT_DIR).iterdir()
        with caplog.at_level(logging.WARNING, logger="chunkyard.moves"):
            Datastore.open(store)
        touched = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert intent_file.exists() and touched == []
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
