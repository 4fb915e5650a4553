"""Moving a namespace: chunkyard's one rename next to PBS 4.1.9's per-snapshot renames, and
whether a running move slows backups into other namespaces.

Part 1 moves namespaces of G groups x S snapshots (10x10, 100x10, 1000x10, 10x1000) to an
absent target and back, timing each direction (median of 2 x --runs moves), with

- chunkyard: `move_namespace` (target absent: one rename(2) under the namespace locks, plus
  its GC journal entry, intent log and directory fsyncs);
- baseline: PBS 4.1.9's method written out here with plain os/fcntl calls (spec
  pbs-move-series §3.5, §4): per group an exclusive flock on the group's lock file, the
  target group created with its owner file, then batches of 512 snapshots, each locked with
  open+flock on its own lock file, renamed into the target group and its lock files unlinked;
  then notes and owner, the source group directory, and at the end the source namespace;
- baseline + journal: the same, plus PBS v8's GC move journal: per snapshot a readdir for its
  index files and an append to the journal under an exclusive flock, before the rename.

All three work on the same on-disk tree in one run, interleaved (each repetition runs every
variant in both directions). Each is timed in two lock states, recreated untimed before
every move: a fresh lock directory (as after a reboot: lock files live on tmpfs), and the
lock files that backups and restores leave behind (chunkyard: `ga-`/`gw-` per group; the last
holder of a per-snapshot lock removes its file, so none per snapshot; the baseline, as PBS:
a snapshot and a manifest lock file per snapshot and a group lock file). Snapshot directories
hold a real manifest (`index.json.blob`) and a small dynamic index (`root.pxar.didx`)
referencing the zero chunk.

Part 2 runs four processes that each loop real small backups (a 3.5 MiB tree, one 128 KiB
file rewritten before each backup, the snapshot that falls out of the newest 10 forgotten
after it; both untimed) into their own namespace w0..w3, and measures each backup's duration
while the main process, in turn, idles; moves an unrelated namespace of 100 groups x 10
snapshots back and forth without pause ("moving"); burns as much CPU as it used moving,
without touching the datastore ("cpu burn", to tell CPU contention on a small machine apart
from interference through the datastore); and makes one such move every 100 ms ("paced
moves"). Rounds alternate the order of the phases; backups that straddle two phases are
not counted.

    python bench/bench_moves.py [--runs N] [--phase-seconds S] [--rounds R] [--dir DIR]
                                [--lock-dir DIR] [--skip-backups | --skip-moves]

The datastores go to a fresh directory under --dir (default bench/work, gitignored); the
lock directories (chunkyard's and the baseline's) to one under --lock-dir (default /dev/shm,
tmpfs, as /run is).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import multiprocessing
import multiprocessing.synchronize
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import namespace_key
from chunkyard.datastore.locking import LockKey
from chunkyard.datastore.locking.lockfiles import LOCK_DIR_ENV
from chunkyard.datastore.moves import move_namespace
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.datastore.snapshots import forget_snapshot
from chunkyard.errors import NotFound
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace

HERE = Path(__file__).resolve().parent
OWNER = Authid.parse("root@pam")
T0 = 1_700_000_000
ZERO_CHUNK_SIZE = 4 * 1024 * 1024
SHAPES = ((10, 10), (100, 10), (1000, 10), (10, 1000))  # (groups, snapshots per group)
MAX_SNAPSHOT_LOCKS = 512  # PBS's batch size
LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
CTX = multiprocessing.get_context("fork")


def ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def cpu_times() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


# -- the data ------------------------------------------------------------------------------

def group_of(i: int) -> BackupGroup:
    return BackupGroup.parse(f"host/g{i:04d}")


def build_namespace(ds: Datastore, name: BackupNamespace, groups: int, snaps: int) -> None:
    """`groups` groups of `snaps` finished snapshots each, every one with a real manifest
    and a one-chunk dynamic index (the zero chunk, which the datastore holds)."""
    create_namespace(ds, name)
    zero = hashlib.sha256(bytes(ZERO_CHUNK_SIZE)).digest()
    index = DynamicIndex.from_chunks([ZERO_CHUNK_SIZE], [zero], uuid=uuid.uuid4().bytes,
                                     ctime=T0)
    encoded = index.encode()
    info = FileInfo("root.pxar.didx", "none", index.size, index.csum())
    for g in range(groups):
        group = group_of(g)
        ds.make_group_dir(name, group, OWNER)
        for s in range(snaps):
            snap = BackupDir(group, T0 + s * 3600)
            ds.make_snapshot_dir(name, snap)
            ds.write_index_file(name, snap, "root.pxar.didx", encoded)
            ds.write_manifest(name, snap, BackupManifest(
                group.type.value, group.id, snap.time, [info],
                {"chunk_upload_stats": {"count": 1, "size": ZERO_CHUNK_SIZE}}))


def count_snapshots(ds: Datastore, name: BackupNamespace) -> tuple[int, int]:
    """(groups, finished snapshots) in `name`."""
    groups = ds.list_groups(name)
    return len(groups), sum(s.finished for g in groups for s in ds.list_snapshots(name, g))


# -- the baseline: PBS 4.1.9's per-snapshot move ------------------------------------------

class PbsBaseline:
    """PBS 4.1.9's namespace move to an absent target on a filesystem datastore, written
    with plain os/fcntl calls: no namespace lock; per group a group lock, the target group
    created under its own lock, snapshots locked and renamed in batches of 512, stale lock
    files unlinked, then notes, owner and the source group; the source namespace last.

    Lock files: one per group, snapshot and manifest in a per-namespace directory under
    `lock_root` (PBS: /run/proxmox-backup/locks/<store>/<ns>/...). `journal` adds v8's GC
    move journal append before each rename."""

    def __init__(self, base: str, lock_root: str, journal: bool) -> None:
        self.base = base
        self.lock_root = lock_root
        self.journal = journal
        self.journal_path = os.path.join(lock_root, "move-journal")

    def ns_dir(self, name: BackupNamespace) -> str:
        return os.path.join(self.base, namespace_key(name))

    def lock_dir(self, name: BackupNamespace) -> str:
        return os.path.join(self.lock_root, ":".join(name.components))

    @staticmethod
    def group_lock(lock_dir: str, type_: str, id_: str) -> str:
        return os.path.join(lock_dir, f"{type_}-{id_}")

    @staticmethod
    def snapshot_locks(lock_dir: str, type_: str, id_: str, time_: str) -> tuple[str, str]:
        snap = os.path.join(lock_dir, f"{type_}-{id_}-{time_}")
        return snap, snap + ".index.json.lck"

    @staticmethod
    def lock(path: str) -> int:
        fd = os.open(path, LOCK_FLAGS, 0o660)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def move_namespace(self, source: BackupNamespace, target: BackupNamespace) -> None:
        src, dst = self.ns_dir(source), self.ns_dir(target)
        os.mkdir(dst)  # create_namespace (the parent's ns/ exists)
        src_locks, dst_locks = self.lock_dir(source), self.lock_dir(target)
        os.makedirs(src_locks, exist_ok=True)
        os.makedirs(dst_locks, exist_ok=True)
        for type_ in sorted(os.listdir(src)):
            if type_ not in ("vm", "ct", "host"):
                continue
            for id_ in sorted(os.listdir(os.path.join(src, type_))):
                self.move_group(src, dst, src_locks, dst_locks, type_, id_)
        # remove_namespace: the emptied type directories, ns/, the namespace itself
        for entry in os.listdir(src):
            os.rmdir(os.path.join(src, entry))
        os.rmdir(src)

    def move_group(self, src: str, dst: str, src_locks: str, dst_locks: str, type_: str,
                   id_: str) -> None:
        src_group = os.path.join(src, type_, id_)
        dst_type = os.path.join(dst, type_)
        dst_group = os.path.join(dst_type, id_)
        group_lock = self.group_lock(src_locks, type_, id_)
        source_guard = self.lock(group_lock)
        try:
            os.stat(src_group)  # post-lock check: the group still exists
            with open(os.path.join(src_group, "owner"), "rb") as f:
                owner = f.read()
            # create_locked_backup_group_do: type and group directory, lock, owner file
            with contextlib.suppress(FileExistsError):
                os.mkdir(dst_type)
            os.mkdir(dst_group)
            target_guard = self.lock(self.group_lock(dst_locks, type_, id_))
            try:
                tmp = os.path.join(dst_group, ".owner.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, owner)
                finally:
                    os.close(fd)
                os.rename(tmp, os.path.join(dst_group, "owner"))
                snaps = sorted(e.name for e in os.scandir(src_group) if e.is_dir())
                for start in range(0, len(snaps), MAX_SNAPSHOT_LOCKS):
                    batch = snaps[start:start + MAX_SNAPSHOT_LOCKS]
                    guards = []
                    try:
                        for t in batch:
                            guards.append(self.lock(
                                self.snapshot_locks(src_locks, type_, id_, t)[0]))
                        for t in batch:
                            self.move_snapshot(src_group, dst_group, src_locks, type_, id_, t)
                    finally:
                        for fd in guards:
                            os.close(fd)
                # move_notes_to: only the source has notes here. try/except rather than
                # contextlib.suppress in the baseline: no context manager object per call
                try:  # noqa: SIM105
                    os.rename(os.path.join(src_group, "notes"), os.path.join(dst_group, "notes"))
                except FileNotFoundError:
                    pass
                # BackupGroup::destroy: owner file, group directory, group lock file
                os.unlink(os.path.join(src_group, "owner"))
                os.rmdir(src_group)
                os.unlink(group_lock)
            finally:
                os.close(target_guard)
        finally:
            os.close(source_guard)

    def move_snapshot(self, src_group: str, dst_group: str, src_locks: str, type_: str,
                      id_: str, time_: str) -> None:
        src_snap = os.path.join(src_group, time_)
        dst_snap = os.path.join(dst_group, time_)
        if self.journal:
            self.journal_append([os.path.join(dst_snap, n) for n in os.listdir(src_snap)
                                 if n.endswith((".fidx", ".didx"))])
        os.rename(src_snap, dst_snap)
        for path in self.snapshot_locks(src_locks, type_, id_, time_):
            try:  # noqa: SIM105 (see move_group)
                os.unlink(path)
            except FileNotFoundError:
                pass

    def journal_append(self, paths: list[str]) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, "".join(p + "\n" for p in paths).encode())
        finally:
            os.close(fd)

    def leave_backup_lock_files(self, name: BackupNamespace) -> None:
        """The lock files backups leave in `name` until the next reboot."""
        d = self.lock_dir(name)
        os.makedirs(d, exist_ok=True)
        src = self.ns_dir(name)
        for type_ in os.listdir(src):
            if type_ not in ("vm", "ct", "host"):
                continue
            for id_ in os.listdir(os.path.join(src, type_)):
                touch(self.group_lock(d, type_, id_))
                for e in os.scandir(os.path.join(src, type_, id_)):
                    if e.is_dir():
                        for path in self.snapshot_locks(d, type_, id_, e.name):
                            touch(path)

    def clear_lock_dirs(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.journal_path, 0)
        for entry in os.scandir(self.lock_root):
            if entry.is_dir():
                shutil.rmtree(entry.path)


def touch(path: str) -> None:
    os.close(os.open(path, LOCK_FLAGS, 0o660))


def leave_chunkyard_lock_files(ds: Datastore, name: BackupNamespace) -> None:
    """The lock files chunkyard's backups and restores leave in `name`: ga- and gw- per group
    (the last holder of a per-snapshot lock removes its file)."""
    os.makedirs(ds.locks.namespace_lock_dir(name), exist_ok=True)
    for group in ds.list_groups(name):
        touch(ds.locks.lock_file_path(LockKey.group_access(name, group)))
        touch(ds.locks.lock_file_path(LockKey.group_writer(name, group)))


def clear_chunkyard_lock_files(ds: Datastore, name: BackupNamespace) -> None:
    shutil.rmtree(ds.locks.namespace_lock_dir(name), ignore_errors=True)


# -- part 1 --------------------------------------------------------------------------------

VARIANTS = ("chunkyard", "baseline", "baseline + journal")
# chunkyard's move takes milliseconds: more samples per run make its median robust against
# the machine's hiccups at little cost
CHUNKYARD_REPEATS = 3
CONDITIONS = ("fresh lock dir", "after backups")


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    user: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)


def timed(fn: Callable[[], Any], into: Samples) -> Any:
    u0, s0 = cpu_times()
    t0 = time.perf_counter()
    result = fn()
    into.seconds.append(time.perf_counter() - t0)
    u1, s1 = cpu_times()
    into.user.append(u1 - u0)
    into.system.append(s1 - s0)
    return result


def run_moves(root: str, lock_root: str, runs: int, shapes: tuple[tuple[int, int], ...]
              ) -> dict[tuple[int, int, str, str], Samples]:
    ds = Datastore.create(os.path.join(root, "moves"), sparse=True)
    pbs_locks = os.path.join(lock_root, "pbs")
    os.makedirs(pbs_locks)
    baselines = {"baseline": PbsBaseline(ds.path, pbs_locks, journal=False),
                 "baseline + journal": PbsBaseline(ds.path, pbs_locks, journal=True)}
    names = {(g, s): (ns(f"g{g}s{s}"), ns(f"g{g}s{s}-moved")) for g, s in shapes}
    t0 = time.perf_counter()
    for (g, s), (a, _) in names.items():
        build_namespace(ds, a, g, s)
    print(f"built {sum(g * s for g, s in shapes)} snapshots in {len(shapes)} namespaces in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    samples: dict[tuple[int, int, str, str], Samples] = {}

    def chunkyard_move(src: BackupNamespace, dst: BackupNamespace) -> None:
        result = move_namespace(ds, src, dst)
        assert result["method"] == "rename", result

    for rep in range(runs):
        t_rep = time.perf_counter()
        for shape, (a, b) in names.items():
            for condition in CONDITIONS:
                for variant in VARIANTS:
                    into = samples.setdefault((*shape, condition, variant), Samples())
                    repeats = CHUNKYARD_REPEATS if variant == "chunkyard" else 1
                    for src, dst in ((a, b), (b, a)) * repeats:
                        # untimed: the lock files this condition starts with
                        clear_chunkyard_lock_files(ds, src)
                        for base in baselines.values():
                            base.clear_lock_dirs()
                        if condition == "after backups":
                            if variant == "chunkyard":
                                leave_chunkyard_lock_files(ds, src)
                            else:
                                baselines[variant].leave_backup_lock_files(src)
                        if variant == "chunkyard":
                            timed(functools.partial(chunkyard_move, src, dst), into)
                        else:
                            timed(functools.partial(baselines[variant].move_namespace, src, dst),
                                  into)
        print(f"run {rep + 1}/{runs}: {time.perf_counter() - t_rep:.1f} s", flush=True)

    for (g, s), (a, b) in names.items():  # every move came back whole
        found = count_snapshots(ds, a)
        assert found == (g, g * s), f"{a}: {found} groups/snapshots, expected {(g, g * s)}"
        assert not ds.namespace_exists(b), f"{b} left behind"
    return samples


def report_moves(samples: dict[tuple[int, int, str, str], Samples], runs: int,
                 shapes: tuple[tuple[int, int], ...]) -> dict[str, float]:
    """Print the tables; return the figures the verdict needs."""
    def med(key: tuple[int, int, str, str]) -> float:
        return statistics.median(samples[key].seconds)

    print(f"\nmedians in milliseconds of {2 * runs} moves per baseline ({runs} runs x both "
          f"directions) and {2 * runs * CHUNKYARD_REPEATS} per chunkyard ({CHUNKYARD_REPEATS} "
          "times as many); ratio = baseline / chunkyard;\n"
          "baseline us/snap = baseline time per snapshot; user % = the baseline's user-space "
          "share of its CPU time (the Python interpreter; "
          "the rest is the kernel)")
    out: dict[str, float] = {}
    for condition in CONDITIONS:
        print(f"\n{condition}:")
        print(f"{'groups x snaps':>15} {'snapshots':>9} {'chunkyard':>10} {'baseline':>10} "
              f"{'ratio':>7} {'+ journal':>10} {'ratio':>7} {'baseline us/snap':>16} "
              f"{'user %':>6}")
        for g, s in shapes:
            cy = med((g, s, condition, "chunkyard"))
            base = med((g, s, condition, "baseline"))
            jr = med((g, s, condition, "baseline + journal"))
            b = samples[(g, s, condition, "baseline")]
            user = statistics.median(b.user) / max(
                1e-9, statistics.median(b.user) + statistics.median(b.system))
            print(f"{f'{g} x {s}':>15} {g * s:>9} {cy * 1e3:>10.2f} {base * 1e3:>10.1f} "
                  f"{base / cy:>7.1f} {jr * 1e3:>10.1f} {jr / cy:>7.1f} "
                  f"{base / (g * s) * 1e6:>16.1f} {user * 100:>6.0f}")
            out[f"{condition}/{g}x{s}/chunkyard"] = cy
            out[f"{condition}/{g}x{s}/chunkyard-min"] = min(
                samples[(g, s, condition, "chunkyard")].seconds)
            out[f"{condition}/{g}x{s}/baseline"] = base
            out[f"{condition}/{g}x{s}/journal"] = jr
        print("chunkyard, min / median / max of its moves (ms): " + "; ".join(
            f"{g}x{s}: {min(xs) * 1e3:.1f} / {statistics.median(xs) * 1e3:.1f} / "
            f"{max(xs) * 1e3:.1f}"
            for g, s in shapes for xs in [samples[(g, s, condition, "chunkyard")].seconds]))
    return out


# -- part 2: backups while a move runs -----------------------------------------------------

WORKERS = 4
TREE_FILES = 24
TREE_FILE_SIZE = 128 * 1024
TEXT_FILES = 8
KEEP = 10  # snapshots a backup worker keeps in its group (it forgets older ones, untimed)


def make_tree(path: str, seed: int) -> None:
    rng = random.Random(seed)
    os.makedirs(path)
    for i in range(TREE_FILES):
        with open(os.path.join(path, f"bin{i:02d}"), "wb") as f:
            f.write(rng.randbytes(TREE_FILE_SIZE))
    for i in range(TEXT_FILES):
        with open(os.path.join(path, f"log{i:02d}.txt"), "w") as f:
            f.writelines(f"{T0 + n} host{seed} service[{n % 97}]: request {rng.random():.6f} ok\n"
                         for n in range(1200))


def backup_worker(path: str, tree: str, index: int,
                  ready: multiprocessing.synchronize.Event,
                  stop: multiprocessing.synchronize.Event, out: Any) -> None:
    """Loop backups into namespace w<index>; each rewrites one file first and forgets the
    snapshot that fell out of the last KEEP after it (both untimed).
    Sends (index, [(start, end)], failures) with monotonic times, comparable across
    processes."""
    ds = Datastore.open(path)
    rng = random.Random(1000 + index)
    name = ns(f"w{index}")
    group = BackupGroup.parse(f"host/w{index}")
    archives = [ArchiveSpec.parse(f"root.tar:{tree}")]
    when = T0
    samples: list[tuple[float, float]] = []
    failures: list[str] = []

    def one() -> None:
        nonlocal when
        when += 1
        run_backup(ds, BackupRequest(namespace=name, group=group, backup_time=when,
                                     archives=archives, owner=OWNER))

    def prune() -> None:  # keep the group at KEEP snapshots: no drift from a growing group
        if when - T0 > KEEP:
            with contextlib.suppress(NotFound):
                forget_snapshot(ds, name, BackupDir(group, when - KEEP))

    try:
        one()  # warm up: the first backup writes every chunk
        one()
        ready.set()
        n = 0
        while not stop.is_set():
            with open(os.path.join(tree, f"bin{n % TREE_FILES:02d}"), "wb") as f:
                f.write(rng.randbytes(TREE_FILE_SIZE))
            n += 1
            t0 = time.monotonic()
            try:
                one()
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")
                continue
            samples.append((t0, time.monotonic()))
            try:
                prune()
            except Exception as e:
                failures.append(f"prune: {type(e).__name__}: {e}")
    finally:
        ready.set()
        out.put((index, samples, failures))


CONTENTION_CONDITIONS = ("idle", "moving", "cpu burn", "paced moves")
PACED_INTERVAL = 0.1  # seconds between the starts of two moves in "paced moves"


@dataclass
class Phase:
    condition: str
    round: int
    start: float
    end: float = 0.0
    moves: list[float] = field(default_factory=list)
    cpu: float = 0.0

    @property
    def cpu_share(self) -> float:
        return self.cpu / (self.end - self.start)


class Mover:
    """Moves the namespace back and forth; remembers where it is."""

    def __init__(self, ds: Datastore, a: BackupNamespace, b: BackupNamespace) -> None:
        self.ds = ds
        self.where = (a, b)

    def move(self, into: list[float]) -> None:
        t0 = time.perf_counter()
        result = move_namespace(self.ds, *self.where)
        into.append(time.perf_counter() - t0)
        assert result["method"] == "rename", result
        self.where = (self.where[1], self.where[0])


def burn(deadline: float, share: float, started: float, cpu0: float) -> None:
    """Use `share` of one core until `deadline`, in steps of 1 ms: a CPU-only stand-in for
    the mover, to tell its CPU use apart from its effect on the datastore."""
    while (now := time.monotonic()) < deadline:
        if time.process_time() - cpu0 < share * (now - started):
            stop = now + 0.001
            while time.monotonic() < stop:
                pass
        else:
            time.sleep(0.001)


def run_phase(condition: str, rnd: int, seconds: float, mover: Mover,
              phases: list[Phase]) -> Phase:
    phase = Phase(condition, rnd, time.monotonic())
    cpu0 = time.process_time()
    deadline = phase.start + seconds
    if condition == "idle":
        time.sleep(seconds)
    elif condition == "moving":
        while time.monotonic() < deadline:
            mover.move(phase.moves)
    elif condition == "paced moves":
        next_start = phase.start
        while next_start < deadline:
            time.sleep(max(0.0, next_start - time.monotonic()))
            mover.move(phase.moves)
            next_start += PACED_INTERVAL
    else:  # cpu burn: the share of a core the last "moving" phase used
        share = next(p.cpu_share for p in reversed(phases) if p.condition == "moving")
        burn(deadline, share, phase.start, cpu0)
    phase.end = time.monotonic()
    phase.cpu = time.process_time() - cpu0
    return phase


def run_contention(root: str, phase_seconds: float, rounds: int) -> dict[str, Any]:
    ds = Datastore.create(os.path.join(root, "contention"), sparse=True)
    for i in range(WORKERS):
        create_namespace(ds, ns(f"w{i}"))
    a, b = ns("mover"), ns("mover-moved")
    build_namespace(ds, a, 100, 10)
    trees = []
    for i in range(WORKERS):
        trees.append(os.path.join(root, "trees", f"w{i}"))
        make_tree(trees[-1], i)

    ready = [CTX.Event() for _ in range(WORKERS)]
    stop = CTX.Event()
    out: Any = CTX.Queue()
    procs = [CTX.Process(target=backup_worker,
                         args=(ds.path, trees[i], i, ready[i], stop, out), daemon=True)
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    mover = Mover(ds, a, b)
    phases: list[Phase] = []
    results: list[tuple[int, list[tuple[float, float]], list[str]]] = []
    try:
        for e in ready:
            e.wait(120)
        time.sleep(1.0)  # let the workers settle into their loop
        for rnd in range(rounds):
            # odd rounds run the conditions in reverse, so a drift hurts every one alike
            # ("cpu burn" needs a "moving" phase before it: the first round has one)
            order = CONTENTION_CONDITIONS if rnd % 2 == 0 else CONTENTION_CONDITIONS[::-1]
            for condition in order:
                phases.append(run_phase(condition, rnd + 1, phase_seconds, mover, phases))
            print(f"  round {rnd + 1}/{rounds} done", flush=True)
        stop.set()
        for _ in procs:
            results.append(out.get(timeout=120))
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
    if mover.where[0] != a:
        mover.move([])
    assert count_snapshots(ds, a) == (100, 1000)

    per_phase: list[list[float]] = [[] for _ in phases]
    straddling = 0
    for _, spans, _ in results:
        for t0, t1 in spans:
            for i, ph in enumerate(phases):
                if ph.start <= t0 and t1 <= ph.end:
                    per_phase[i].append(t1 - t0)
                    break
            else:
                straddling += 1
    return {"phases": phases, "per_phase": per_phase, "straddling": straddling,
            "failures": [f for _, _, fs in results for f in fs]}


def p90(xs: list[float]) -> float:
    return sorted(xs)[int(0.9 * (len(xs) - 1))] if xs else float("nan")


def report_contention(r: dict[str, Any]) -> dict[str, float]:
    phases: list[Phase] = r["phases"]
    per_phase: list[list[float]] = r["per_phase"]
    conds = CONTENTION_CONDITIONS
    rounds = max(ph.round for ph in phases)
    by: dict[tuple[str, int], tuple[Phase, list[float]]] = {
        (ph.condition, ph.round): (ph, xs) for ph, xs in zip(phases, per_phase, strict=True)}
    print(f"\n{WORKERS} backup processes, each into its own namespace, while the main process "
          "idles, moves an unrelated namespace of 100 groups x 10 snapshots back and forth "
          f"without pause (moving) or once every {PACED_INTERVAL * 1e3:.0f} ms (paced moves), "
          "or burns as much CPU as it used moving (cpu burn). Median backup in ms:")
    w = 12
    print(f"{'':<26}" + "".join(f"{c:>{w}}" for c in conds))

    def med_ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1e3:.1f}" if xs else "-"

    for rnd in range(1, rounds + 1):
        print(f"{f'round {rnd}':<26}" + "".join(f"{med_ms(by[(c, rnd)][1]):>{w}}" for c in conds))
    pooled = {c: [x for rnd in range(1, rounds + 1) for x in by[(c, rnd)][1]] for c in conds}
    medians = {c: statistics.median(xs) for c, xs in pooled.items()}
    print(f"{'pooled':<26}" + "".join(f"{medians[c] * 1e3:>{w}.1f}" for c in conds))
    print(f"{'  p90':<26}" + "".join(f"{p90(pooled[c]) * 1e3:>{w}.1f}" for c in conds))
    print(f"{'  backups counted':<26}" + "".join(f"{len(pooled[c]):>{w}}" for c in conds))
    print(f"{'  x idle':<26}" + "".join(
        f"{medians[c] / medians['idle']:>{w}.2f}" for c in conds))
    paired: dict[str, list[float]] = {c: [] for c in conds}
    for rnd in range(1, rounds + 1):
        idle_xs = by[("idle", rnd)][1]
        for c in conds:
            xs = by[(c, rnd)][1]
            if xs and idle_xs:
                paired[c].append(statistics.median(xs) / statistics.median(idle_xs))
    print(f"{'x idle, per round: min':<26}" + "".join(
        f"{min(paired[c]):>{w}.2f}" for c in conds))
    print(f"{'                   max':<26}" + "".join(
        f"{max(paired[c]):>{w}.2f}" for c in conds))
    print(f"{'                   median':<26}" + "".join(
        f"{statistics.median(paired[c]):>{w}.2f}" for c in conds))
    intervals = {c: bootstrap_median(paired[c]) for c in conds}
    print(f"{'  90% interval':<26}" + "".join(
        f"{f'{lo:.2f}-{hi:.2f}':>{w}}" for c in conds for lo, hi in [intervals[c]]))
    moves = {c: [m for rnd in range(1, rounds + 1) for m in by[(c, rnd)][0].moves] for c in conds}
    print(f"{'moves':<26}" + "".join(f"{len(moves[c]) or '-':>{w}}" for c in conds))
    print(f"{'  median move ms':<26}" + "".join(
        f"{med_ms(moves[c]):>{w}}" for c in conds))
    cpu = {c: statistics.median(by[(c, rnd)][0].cpu_share for rnd in range(1, rounds + 1))
           for c in conds}
    print(f"{'main process CPU':<26}" + "".join(f"{f'{cpu[c] * 100:.0f}%':>{w}}" for c in conds))
    halves = [statistics.median([x for rnd in range(1 + k, rounds + 1, 2)
                                 for x in by[("idle", rnd)][1]] or [float("nan")])
              for k in (0, 1)]
    noise = max(halves) / min(halves) - 1
    print(f"noise floor: the idle phases of odd and even rounds differ by {noise * 100:.0f}% "
          f"(medians {halves[0] * 1e3:.1f} and {halves[1] * 1e3:.1f} ms); "
          f"{r['straddling']} backups straddled a phase boundary (not counted); "
          f"{len(r['failures'])} backups failed")
    for f in r["failures"][:5]:
        print(f"  failure: {f}")
    return {**{c: statistics.median(paired[c]) for c in conds}, "noise": noise,
            **{f"{c} lo": intervals[c][0] for c in conds},
            **{f"{c} hi": intervals[c][1] for c in conds}}


def bootstrap_median(xs: list[float], n: int = 2000) -> tuple[float, float]:
    """A 90% bootstrap interval of the median of `xs` (resampling rounds; fixed seed)."""
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.05 * n)], meds[int(0.95 * n) - 1]


# -- main ----------------------------------------------------------------------------------

@contextlib.contextmanager
def scratch(parent: str, prefix: str) -> Iterator[str]:
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=parent) as d:
        yield d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5,
                    help="repetitions of part 1; each moves both ways (default %(default)s)")
    ap.add_argument("--phase-seconds", type=float, default=2.5,
                    help="length of each phase of part 2 (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=8,
                    help="rounds of part 2, each one phase per condition (default %(default)s)")
    ap.add_argument("--dir", default=str(HERE / "work"),
                    help="parent of the scratch datastores (default %(default)s)")
    ap.add_argument("--lock-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="parent of the scratch lock directories (default %(default)s)")
    ap.add_argument("--skip-backups", action="store_true", help="run part 1 only")
    ap.add_argument("--skip-moves", action="store_true", help="run part 2 only")
    args = ap.parse_args()
    if args.runs < 1 or args.rounds < 1:
        ap.error("--runs and --rounds must be at least 1")

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"nproc {len(os.sched_getaffinity(0))}, load average at start {load}; datastores "
          f"under {args.dir}, lock directories under {args.lock_dir or tempfile.gettempdir()}",
          flush=True)
    with scratch(args.dir, "moves-") as root, tempfile.TemporaryDirectory(
            prefix="chunkyard-bench-moves-", dir=args.lock_dir) as locks:
        os.environ[LOCK_DIR_ENV] = os.path.join(locks, "chunkyard")
        os.environ["CHUNKYARD_CACHE_DIR"] = os.path.join(root, "cache")
        figures = None
        if not args.skip_moves:
            samples = run_moves(root, locks, args.runs, SHAPES)
            figures = report_moves(samples, args.runs, SHAPES)
        contention = None
        if not args.skip_backups:
            print(f"\npart 2: {args.rounds} rounds of {', '.join(CONTENTION_CONDITIONS)}, "
                  f"{args.phase_seconds:g} s each", flush=True)
            contention = report_contention(run_contention(root, args.phase_seconds,
                                                          args.rounds))

    print("\ntargets:")
    for condition in CONDITIONS if figures is not None else ():
        assert figures is not None
        for g, s in ((1000, 10), (10, 1000)):
            ratio = (figures[f"{condition}/{g}x{s}/baseline"]
                     / figures[f"{condition}/{g}x{s}/chunkyard"])
            print(f"- >= 50x faster than the baseline at 10,000 snapshots ({g} x {s}, "
                  f"{condition}): {'MET' if ratio >= 50 else 'NOT MET'} ({ratio:.0f}x)")
        big = [(g, s) for g, s in SHAPES if g * s >= 10_000]
        small = figures[f"{condition}/10x10/chunkyard"]
        large = max(figures[f"{condition}/{g}x{s}/chunkyard"] for g, s in big)
        small_min = figures[f"{condition}/10x10/chunkyard-min"]
        large_min = max(figures[f"{condition}/{g}x{s}/chunkyard-min"] for g, s in big)
        print(f"- flat in the number of snapshots ({condition}): median at 100 snapshots "
              f"{small * 1e3:.1f} ms, at 10,000 (the slower shape) {large * 1e3:.1f} ms "
              f"({large / small:.2f}x); fastest move {small_min * 1e3:.1f} ms against "
              f"{large_min * 1e3:.1f} ms ({large_min / small_min:.2f}x)")
    if contention is not None:
        print("- backups not measurably slowed by moves into other namespaces (median over "
              "rounds of the round's median backup over its idle phase's, 90% interval): "
              + ", ".join(f"{label} x{contention[c]:.2f} ({contention[c + ' lo']:.2f}-"
                          f"{contention[c + ' hi']:.2f})"
                          for c, label in (("moving", "moves without pause"),
                                           ("paced moves", f"a move every "
                                            f"{PACED_INTERVAL * 1e3:.0f} ms"),
                                           ("cpu burn", "the same CPU burnt without moving")))
              + f"; noise floor {contention['noise'] * 100:.0f}% (idle phases of odd against "
              "even rounds)")

if __name__ == "__main__":
    main()
