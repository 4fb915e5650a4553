"""One process of the stress test (tests/test_stress.py): random datastore operations until a
deadline, each written to this worker's own ledger so the parent can check the outcome.

Run as `python -m tests.stress_worker CONFIG.json WORKER_ID [--slot=N] [--gc-first]
[--moves-only]` from the repository root. The ledger (`<ledger_dir>/w<ID>.jsonl`) gets a
`begin` line before each operation and an `end` line after it, flushed at once, so a worker
killed with SIGKILL leaves its in-flight operation visible. Outcomes: ok, busy (LockBusy),
not-found, exists, stale-time (backup time not newer than the group's last), conflict (a move
broke a merge rule: MoveConflict), mismatch (a restore differed from what was backed up) and
error (anything else, with its traceback). Which outcomes are acceptable is the parent's call.

Moves (group and namespace) stay inside the namespace shape the stress test uses: a namespace
`<top>/<rest>` moves to `<other top>/<rest>`, so children come along and every target is a
namespace the workers use or will use. A worker started with `--moves-only` does nothing but
moves: the parent starts one with CHUNKYARD_FAULT set, so that it dies by SIGKILL in the middle
of a move (chunkyard.faults), leaving an intent log for the next `Datastore.open` to complete.

Prune (group or namespace tree), verify (namespace tree, group or snapshot) and GC run in
the same mix; the ledger records which snapshots a prune removed and skipped, what a verify
found (failed snapshots with their errors) and a GC's counts. A worker started with
`--gc-first` runs a GC `first_gc_after` seconds after its start (the parent asks one to after
each ageing of the chunks), and a GC that removed chunks is followed by a verify of the whole
datastore. `--slot=N` picks the source tree: the workers of one slot, one after another, back
up the same files.

Every snapshot describes itself: besides `root.tar` (the worker's source tree) it holds
`meta.conf.blob`, whose JSON names the snapshot and records the tree's expected state, so any
worker can check a restore of any snapshot without shared state.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore import queries
from chunkyard.datastore.chunk_store import SyncLevel
from chunkyard.datastore.datastore import Datastore, SnapshotInfo
from chunkyard.datastore.groups import delete_group
from chunkyard.datastore.locking import LockBusy
from chunkyard.datastore.locking.tasks import new_task_upid
from chunkyard.datastore.maintenance.gc import (
    DEFAULT_CUTOFF_MINUTES,
    GcOptions,
    garbage_collection,
)
from chunkyard.datastore.maintenance.prune import PruneReport, prune_datastore, prune_group
from chunkyard.datastore.maintenance.prune_rules import RULES, KeepOptions
from chunkyard.datastore.maintenance.verify import Outcome, VerifyOptions, run_verify
from chunkyard.datastore.moves import MoveConflict, move_group, move_namespace
from chunkyard.datastore.moves import intents as move_intents
from chunkyard.datastore.namespaces import create_namespace, delete_namespace
from chunkyard.datastore.snapshots import forget_snapshot
from chunkyard.errors import AlreadyExists, DatastoreError, NotFound
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace
from tests.helpers import tree_state

OWNER = Authid.parse("stress@pbs")
TAR_ARCHIVE = "root.tar.didx"
META_ARCHIVE = "meta.conf.blob"
# Time of the first snapshot; the shared counter adds one second per backup.
TIME_BASE = 1_700_000_000

# How many lock calls of an operation may each wait the operation's `wait` (the manifest
# lock MF waits its own 5 s): the parent bounds elapsed time with these.
# A namespace move locks up to LOCK_ATTEMPTS times when the tree changes between its unlocked
# plan and its locks (the move journal's lock JR waits its own 10 s).
# Prune, verify and GC take no `wait`: they skip what is busy (GC's only waits are its own:
# JR's 10 s and GA S's 10 s on a group's last marking attempt).
WAITING_CALLS = {"backup": 4, "restore": 2, "forget": 1, "create-ns": 1, "delete-ns": 1,
                 "delete-group": 1, "list": 0, "move-group": 1, "move-ns": 5,
                 "prune-group": 0, "prune-ds": 0, "verify": 0, "gc": 0}
MOVES = ("move-group", "move-ns")
PRUNES = ("prune-group", "prune-ds")
# Backups cut their archives into chunks of 64 KiB on average (the smallest PBS allows), so
# consecutive backups of a source tree share most chunks: a backup into a group whose base is
# another tree's deduplicates by touching chunks that may be garbage GC is about to sweep.
CHUNK_SIZE = 64 * 1024
BIG_VARIANTS = 8  # the contents a source tree's larger file has (SourceTree)


class Mismatch(Exception):
    """A restore produced something other than what was backed up."""


def normalise(state: dict[str, tuple[object, ...]]) -> dict[str, Any]:
    """`tree_state` as it reads back from JSON (tuples become lists)."""
    result: dict[str, Any] = json.loads(json.dumps(state))
    return result


def allocate_backup_time(counter_path: str) -> int:
    """The next backup time from the shared counter, strictly increasing across workers."""
    fd = os.open(counter_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 32, 0)
        value = int(raw or b"0") + 1
        os.pwrite(fd, str(value).encode().ljust(32), 0)
        return TIME_BASE + value
    finally:
        os.close(fd)


def classify(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """An exception as (outcome, detail) for the ledger."""
    detail: dict[str, Any] = {"type": type(exc).__name__, "msg": str(exc)}
    if isinstance(exc, LockBusy):
        detail.update(what=exc.what, wanted=str(exc.wanted), waited=exc.waited, holders=[
            {"pid": h.pid, "program": h.program, "mode": str(h.mode) if h.mode else None,
             "ops": [t.operation for t in h.tasks]} for h in exc.holders])
        return "busy", detail
    if isinstance(exc, Mismatch):
        return "mismatch", detail
    if isinstance(exc, MoveConflict):
        detail["conflicts"] = exc.report.get("conflicts", [])
        return "conflict", detail
    if isinstance(exc, NotFound):
        return "not-found", detail
    if isinstance(exc, AlreadyExists):
        return "exists", detail
    if isinstance(exc, DatastoreError) and "must be newer" in str(exc):
        return "stale-time", detail
    detail["traceback"] = traceback.format_exc()
    return "error", detail


class SourceTree:
    """The worker's own backup source, changed a little before each backup so that
    consecutive backups of one group share most files (and hit the metadata cache).

    Its larger file is one of BIG_VARIANTS contents shared by all trees, and now and then
    another one: a variant no snapshot holds any more is garbage (aged between epochs of
    the stress test) until a backup switches back to it and deduplicates against its chunks,
    maybe while a GC sweeps them."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.counter = 0
        for i in range(10):
            self._write(f"s{i % 3}/f{i}.bin")
        (root / "empty").mkdir(parents=True, exist_ok=True)
        os.symlink("s0/f0.bin", root / "link")
        self._write_big()

    def _write_big(self) -> None:
        variant = self.rng.randrange(BIG_VARIANTS)
        (self.root / "big.bin").write_bytes(random.Random(f"big-{variant}").randbytes(600_000))

    def _write(self, rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.rng.choice([0, 1, 100, 4096, 20_000, 65_543])
        path.write_bytes(self.rng.randbytes(size))
        if self.rng.random() < 0.2:
            path.chmod(self.rng.choice([0o600, 0o640, 0o755]))

    def mutate(self) -> None:
        # A stamp of fresh bytes (more than a chunk's worth) makes at least one chunk of each
        # snapshot its own: a chunk GC must not lose though no other snapshot shares it.
        (self.root / "stamp.bin").write_bytes(os.urandom(self.rng.randint(100_000, 160_000)))
        if self.rng.random() < 0.05:
            self._write_big()
        files = sorted(p for p in self.root.glob("s*/f*.bin"))
        for _ in range(self.rng.randint(1, 3)):
            roll = self.rng.random()
            if roll < 0.25 and len(files) > 4:
                victim = files.pop(self.rng.randrange(len(files)))
                victim.unlink()
            elif roll < 0.5 or not files:
                self.counter += 1
                self._write(f"s{self.rng.randrange(4)}/f-new{self.counter}.bin")
            else:
                self._write(str(self.rng.choice(files).relative_to(self.root)))


class Worker:
    """Picks random operations until the deadline; see the module docstring."""

    def __init__(self, cfg: dict[str, Any], wid: int, moves_only: bool = False,
                 slot: int | None = None, gc_first: bool = False) -> None:
        self.cfg = cfg
        self.wid = wid
        self.rng = random.Random(f"{cfg['seed']}-{wid}")
        self.gc_first = gc_first
        self.ds = Datastore.open(cfg["store"], sync_level=SyncLevel.NONE)
        self.namespaces = [BackupNamespace.parse(n) for n in cfg["namespaces"]]
        self.groups = [BackupGroup.parse(g) for g in cfg["groups"]]
        self.scratch = Path(cfg["scratch"]) / f"w{wid}"
        self.scratch.mkdir(parents=True)
        # The tree comes from the slot's own generator: the worker that takes a slot over (after
        # a kill, or in the next epoch) starts from the same files, so its backups share chunks
        # with the aged ones of its predecessors (the garbage GC removes in later epochs).
        slot = wid if slot is None else slot
        self.source = SourceTree(self.scratch / "src", random.Random(f"{cfg['seed']}-src{slot}"))
        self.ledger = open(Path(cfg["ledgers"]) / f"w{wid}.jsonl", "a", buffering=1)  # noqa: SIM115
        self.seq = 0
        self.tops = list(cfg["tops"])
        every: dict[str, Callable[[], None]] = {
            "backup": self.op_backup, "restore": self.op_restore, "forget": self.op_forget,
            "list": self.op_list, "create-ns": self.op_create_ns,
            "delete-ns": self.op_delete_ns, "delete-group": self.op_delete_group,
            "move-group": self.op_move_group, "move-ns": self.op_move_ns,
            "prune-group": self.op_prune_group, "prune-ds": self.op_prune_ds,
            "verify": self.op_verify, "gc": self.op_gc,
        }
        names = MOVES if moves_only else tuple(every)
        self.ops: list[tuple[Callable[[], None], float]] = [
            (every[name], cfg["weights"][name]) for name in names]

    # -- ledger -----------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        self.ledger.write(json.dumps(record, separators=(",", ":")) + "\n")

    def _wait(self) -> float:
        if self.rng.random() < 0.35:
            return 0.0
        return round(self.rng.uniform(0.0, self.cfg["max_wait"]), 3)

    def perform(self, op: str, args: dict[str, Any], wait: float,
                call: Callable[[], dict[str, Any] | None]) -> None:
        """Run one operation between a begin and an end line of the ledger."""
        self.seq += 1
        t0 = time.time_ns()
        self._log({"ev": "begin", "seq": self.seq, "op": op, "args": args, "wait": wait,
                   "t0": t0})
        detail: dict[str, Any] | None
        try:
            detail = call()
            outcome = "ok"
        except Exception as exc:  # every kind is recorded; the parent judges
            outcome, detail = classify(exc)
        t1 = time.time_ns()
        self._log({"ev": "end", "seq": self.seq, "op": op, "t1": t1, "outcome": outcome,
                   "detail": detail})

    # -- picking targets (lock-free listing, as a user would) ---------------------------------
    def _snapshots(self, ns: BackupNamespace, group: BackupGroup) -> list[SnapshotInfo]:
        try:
            return self.ds.list_snapshots(ns, group)
        except NotFound:
            return []

    def _random_snapshot(self, finished_only: bool) -> tuple[BackupNamespace, BackupDir] | None:
        ns = self.rng.choice(self.namespaces)
        group = self.rng.choice(self.groups)
        infos = [i for i in self._snapshots(ns, group) if i.finished or not finished_only]
        if not infos:
            return None
        return ns, self.rng.choice(infos).dir

    # -- operations ---------------------------------------------------------------------------
    def op_backup(self) -> None:
        ns = self.rng.choice(self.namespaces)
        group = self.rng.choice(self.groups)
        self.source.mutate()
        state = normalise(tree_state(self.source.root))
        backup_time = allocate_backup_time(self.cfg["counter"])
        token = f"w{self.wid}-{self.seq + 1}"
        meta = json.dumps({"token": token, "ns": str(ns), "group": str(group),
                           "time": backup_time, "state": state}, sort_keys=True).encode()
        meta_path = self.scratch / "meta.conf"
        meta_path.write_bytes(meta)
        wait = self._wait()
        # The meta blob holds the tree's state; its digest binds the snapshot to this entry.
        args = {"ns": str(ns), "group": str(group), "time": backup_time, "token": token,
                "meta_sha": hashlib.sha256(meta).hexdigest()}

        def call() -> dict[str, Any]:
            req = BackupRequest(ns, group, backup_time,
                                [ArchiveSpec.parse(f"root.tar:{self.source.root}"),
                                 ArchiveSpec.parse(f"meta.conf:{meta_path}")],
                                OWNER, wait=wait, chunk_size=CHUNK_SIZE)
            result = run_backup(self.ds, req)
            if result.snapshot != BackupDir(group, backup_time):
                raise Mismatch(f"backup made {result.snapshot}, not {group}/{backup_time}")
            return {"base": result.base.time if result.base else None,
                    "reused": sum(a.bytes_reused for a in result.archives)}

        self.perform("backup", args, wait, call)

    def op_restore(self) -> None:
        picked = self._random_snapshot(finished_only=True)
        if picked is None:
            return
        ns, snap = picked
        wait = self._wait()
        args = {"ns": str(ns), "group": str(snap.group), "time": snap.time}

        def call() -> dict[str, Any]:
            target = self.scratch / f"restore-{self.seq}"
            try:
                return verify_snapshot(self.ds, ns, snap, target, wait)
            finally:
                shutil.rmtree(target, ignore_errors=True)

        self.perform("restore", args, wait, call)

    def op_forget(self) -> None:
        picked = self._random_snapshot(finished_only=False)
        if picked is None:
            return
        ns, snap = picked
        wait = self._wait()
        args = {"ns": str(ns), "group": str(snap.group), "time": snap.time}
        self.perform("forget", args, wait,
                     lambda: forget_snapshot(self.ds, ns, snap, wait=wait))

    def op_list(self) -> None:
        ns = self.rng.choice(self.namespaces)

        def call() -> dict[str, Any]:
            spaces = queries.namespace_list(self.ds, BackupNamespace(), 7)
            groups = queries.group_list(self.ds, ns)
            snaps = queries.snapshot_list(self.ds, ns)
            return {"namespaces": len(spaces), "groups": len(groups), "snapshots": len(snaps)}

        self.perform("list", {"ns": str(ns)}, 0.0, call)

    def op_create_ns(self) -> None:
        ns = self.rng.choice(self.namespaces[1:])
        wait = self._wait()
        self.perform("create-ns", {"ns": str(ns)}, wait,
                     lambda: {"created": str(create_namespace(self.ds, ns, wait=wait))})

    def op_delete_ns(self) -> None:
        ns = self.rng.choice(self.namespaces[1:])
        wait = self._wait()
        self.perform("delete-ns", {"ns": str(ns)}, wait,
                     lambda: delete_namespace(self.ds, ns, delete_groups=True,
                                              wait=wait).as_dict())

    def op_delete_group(self) -> None:
        ns = self.rng.choice(self.namespaces)
        group = self.rng.choice(self.groups)
        wait = self._wait()
        self.perform("delete-group", {"ns": str(ns), "group": str(group)}, wait,
                     lambda: delete_group(self.ds, ns, group, wait=wait).as_dict())

    def _existing(self) -> list[tuple[BackupNamespace, list[BackupGroup]]]:
        """Every namespace with its groups, listed without locks (things may vanish)."""
        out: list[tuple[BackupNamespace, list[BackupGroup]]] = []
        try:
            for ns in self.ds.iter_namespaces(BackupNamespace()):
                try:
                    out.append((ns, self.ds.list_groups(ns)))
                except NotFound:
                    continue
        except NotFound:
            pass
        return out

    def _other_top(self, ns: BackupNamespace) -> BackupNamespace:
        """`ns` with its first component replaced by another top-level name."""
        top = self.rng.choice([t for t in self.tops if t != ns.components[0]])
        return BackupNamespace.parse("/".join([top, *ns.components[1:]]))

    def op_move_group(self) -> None:
        existing = [(ns, g) for ns, groups in self._existing() for g in groups]
        if existing and self.rng.random() < 0.8:
            source, group = self.rng.choice(existing)
        else:
            source, group = self.rng.choice(self.namespaces), self.rng.choice(self.groups)
        target = self.rng.choice([n for n in self.namespaces if n != source])
        merge = self.rng.random() < 0.85
        wait = self._wait()
        args = {"ns": str(source), "group": str(group), "target": str(target), "merge": merge}

        def call() -> dict[str, Any]:
            result = move_group(self.ds, source, group, target, merge_group=merge, wait=wait)
            return _move_summary(result)

        self.perform("move-group", args, wait, call)

    def op_move_ns(self) -> None:
        existing = [ns for ns, _ in self._existing() if not ns.is_root]
        if existing and self.rng.random() < 0.8:
            source = self.rng.choice(existing)
        else:
            source = self.rng.choice(self.namespaces[1:])
        target = self._other_top(source)
        max_depth = self.rng.choice([None] * 6 + [0, 1])
        delete_source = self.rng.random() < 0.85
        merge = self.rng.random() < 0.9
        wait = self._wait()
        args = {"ns": str(source), "target": str(target), "max_depth": max_depth,
                "delete_source": delete_source, "merge": merge}

        def call() -> dict[str, Any]:
            result = move_namespace(self.ds, source, target, max_depth=max_depth,
                                    delete_source=delete_source, merge_groups=merge,
                                    wait=wait)
            return _move_summary(result)

        self.perform("move-ns", args, wait, call)

    # -- maintenance: prune, verify, GC -------------------------------------------------------
    def _keep_options(self) -> KeepOptions:
        """Random keep options; now and then none at all ("keep all")."""
        if self.rng.random() < 0.05:
            return KeepOptions()
        chances = {"last": 0.8, "hourly": 0.3, "daily": 0.2, "weekly": 0.1, "monthly": 0.1,
                   "yearly": 0.1}
        counts = {rule: self.rng.randint(1, 4 if rule == "last" else 2)
                  for rule in RULES if self.rng.random() < chances[rule]}
        return KeepOptions(**counts)

    def op_prune_group(self) -> None:
        existing = [(ns, g) for ns, groups in self._existing() for g in groups]
        if existing and self.rng.random() < 0.85:
            ns, group = self.rng.choice(existing)
        else:
            ns, group = self.rng.choice(self.namespaces), self.rng.choice(self.groups)
        options = self._keep_options()
        dry_run = self.rng.random() < 0.2
        args = {"ns": str(ns), "group": str(group), "keep": options.as_dict(),
                "dry_run": dry_run}
        self.perform("prune-group", args, 0.0, lambda: _prune_summary(
            prune_group(self.ds, ns, group, options, dry_run=dry_run)))

    def op_prune_ds(self) -> None:
        ns = self.rng.choice(self.namespaces[:1] * 2 + self.namespaces)
        max_depth = self.rng.choice([None] * 3 + [0, 1])
        options = self._keep_options()
        dry_run = self.rng.random() < 0.2
        args = {"ns": str(ns), "max_depth": max_depth, "keep": options.as_dict(),
                "dry_run": dry_run}
        kwargs = {} if max_depth is None else {"max_depth": max_depth}
        self.perform("prune-ds", args, 0.0, lambda: _prune_summary(
            prune_datastore(self.ds, ns, options, dry_run=dry_run, **kwargs)))

    def op_verify(self, everything: bool = False) -> None:
        """Verify a namespace subtree, a group or a snapshot (re-verifying or not); with
        `everything`, every snapshot of the datastore, verified or not."""
        scope = "ns" if everything else self.rng.choice(["ns", "ns", "group", "group",
                                                         "snapshot"])
        ignore_verified = not everything and self.rng.random() < 0.3
        args: dict[str, Any] = {"scope": scope, "ignore_verified": ignore_verified}
        target: BackupGroup | BackupDir | None = None
        max_depth: int | None = None
        if scope == "snapshot":
            picked = self._random_snapshot(finished_only=self.rng.random() < 0.9)
            if picked is None:
                return
            ns, target = picked
            args.update(ns=str(ns), group=str(target.group), time=target.time)
        elif scope == "group":
            existing = [(n, g) for n, groups in self._existing() for g in groups]
            if not existing:
                return
            ns, target = self.rng.choice(existing)
            args.update(ns=str(ns), group=str(target))
        elif everything:
            ns = BackupNamespace()
            args.update(ns=str(ns), max_depth=max_depth)
        else:
            ns = self.rng.choice(self.namespaces)
            max_depth = self.rng.choice([None, None, 0, 1])
            args.update(ns=str(ns), max_depth=max_depth)
        options = VerifyOptions(ignore_verified=ignore_verified)

        def call() -> dict[str, Any]:
            report = run_verify(self.ds, authid=str(OWNER), ns=ns, target=target,
                                max_depth=max_depth, options=options)
            results = report.snapshots
            reasons = [str(r.reason) for r in results if r.outcome is Outcome.SKIPPED]
            return {"snapshots": len(results),
                    "ok": sum(1 for r in results if r.outcome is Outcome.OK),
                    "skipped": {why: reasons.count(why) for why in sorted(set(reasons))},
                    "failed": [{"ns": str(r.ns), "group": str(r.snapshot.group),
                                "time": r.snapshot.time, "errors": r.errors[:3],
                                "details": r.details[:3]} for r in report.failed],
                    "chunks": report.chunks_verified, "corrupt": report.chunks_corrupt,
                    "renamed": report.renamed}

        self.perform("verify", args, 0.0, call)

    def op_gc(self) -> None:
        """Garbage collection: one at a time (CS X); another GC is refused with LockBusy. One
        that removed chunks is followed by a verify of everything: every chunk that the
        snapshots still there reference must be there (the stress test's other operations
        remove snapshots quickly: they would not restore most of them)."""
        safety = self.rng.random() < 0.25
        cutoff = self.rng.choice([DEFAULT_CUTOFF_MINUTES, DEFAULT_CUTOFF_MINUTES, 60, 1])
        args = {"safety_check": safety, "cutoff": cutoff}
        options = GcOptions(atime_safety_check=safety, atime_cutoff_minutes=cutoff)

        def call() -> dict[str, Any]:
            upid = new_task_upid("garbage_collection", "stress", str(OWNER))
            status = garbage_collection(self.ds, upid=str(upid), options=options)
            removed.append(status.removed_chunks)
            return {k: getattr(status, k) for k in (
                "index_file_count", "disk_chunks", "removed_chunks", "removed_bytes",
                "pending_chunks", "removed_bad", "still_bad")}

        removed: list[int] = []
        self.perform("gc", args, 0.0, call)
        if removed and removed[0]:
            self.op_verify(everything=True)

    def run(self) -> None:
        deadline = float(self.cfg["deadline"])
        calls, weights = zip(*self.ops, strict=True)
        # a worker told to (after an ageing) runs a GC once the others are at work
        gc_at = time.time() + float(self.cfg["first_gc_after"]) if self.gc_first else None
        while time.time() < deadline:
            if gc_at is not None and time.time() >= gc_at:
                gc_at = None
                self.op_gc()
                continue
            self.rng.choices(calls, weights)[0]()
        self.ledger.close()


def _move_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a move's result."""
    return {"method": result["method"], "groups": len(result["groups"]),
            "moved-snapshots": result["moved-snapshots"],
            "namespaces": [n["action"] for n in result["namespaces"]],
            "warnings": result["warnings"]}


def _prune_summary(report: PruneReport) -> dict[str, Any]:
    """What the ledger keeps of a prune: the snapshots it removed, by namespace, group and
    time (rows not kept and not skipped; a dry run removes nothing), and those it skipped."""
    removed = [] if report.dry_run else [
        [str(r.ns), str(r.snapshot.group), r.snapshot.time] for r in report.rows
        if not r.keep and r.skipped is None]
    skipped = [[str(r.ns), str(r.snapshot.group), r.snapshot.time, r.skipped]
               for r in report.skipped]
    return {"removed": removed, "skipped": skipped, "kept": report.kept,
            "would_remove": report.removed if report.dry_run else 0,
            "groups": report.groups, "warnings": len(report.warnings)}


def verify_snapshot(ds: Datastore, ns: BackupNamespace, snap: BackupDir, target: Path,
                    wait: float) -> dict[str, Any]:
    """Restore both archives of a stress snapshot and check them against its own meta blob.

    Raises Mismatch when the restored tree or the blob names another snapshot (group and
    time; the namespace it was made in may differ: moves) or state. Returns the blob's token,
    digest and namespace of origin."""
    target.mkdir(parents=True, exist_ok=True)
    meta_file = target / "meta.conf"
    run_restore(ds, RestoreRequest(ns, snap, META_ARCHIVE, str(meta_file), wait=wait))
    raw = meta_file.read_bytes()
    try:
        meta = json.loads(raw)
    except ValueError:
        raise Mismatch(f"{snap} in '{ns}': meta blob is not JSON: {raw[:80]!r}") from None
    where = (meta.get("group"), meta.get("time"))
    if where != (str(snap.group), snap.time):
        raise Mismatch(f"{snap} in '{ns}' holds the meta blob of {where} (made in "
                       f"'{meta.get('ns')}')")
    tree = target / "tree"
    run_restore(ds, RestoreRequest(ns, snap, TAR_ARCHIVE, str(tree), wait=wait))
    restored = normalise(tree_state(tree))
    if restored != meta["state"]:
        diff = _diff(restored, meta["state"])
        raise Mismatch(f"{snap} in '{ns}' restored a different tree: {diff[:5]}")
    return {"token": meta.get("token"), "meta_sha": hashlib.sha256(raw).hexdigest(),
            "made_in": meta.get("ns")}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def churn_group(store: str, ns: BackupNamespace, group: BackupGroup, seconds: float,
                source: Path) -> int:
    """Back up into `group` and delete it again, over and over; returns the cycles done."""
    ds = Datastore.open(store, sync_level=SyncLevel.NONE)
    source.mkdir(parents=True, exist_ok=True)
    (source / "f").write_bytes(b"churn")
    deadline = time.monotonic() + seconds
    cycles = 0
    while time.monotonic() < deadline:
        cycles += 1
        run_backup(ds, BackupRequest(ns, group, TIME_BASE + cycles,
                                     [ArchiveSpec.parse(f"root.tar:{source}")], OWNER))
        delete_group(ds, ns, group)
    return cycles


def reopen(store: str) -> dict[str, Any]:
    """Open the datastore as the next user after a crash would (completing interrupted
    moves whose locks are free); which intent logs were there before and after."""
    probe = Datastore.open(store, sync_level=SyncLevel.NONE, recover=False)
    before = move_intents.names(probe)
    ds = Datastore.open(store, sync_level=SyncLevel.NONE)
    return {"before": before, "after": move_intents.names(ds)}


def main(argv: list[str]) -> int:
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    if argv[1] == "--churn":  # --churn STORE NS GROUP SECONDS SOURCE_DIR
        cycles = churn_group(argv[2], BackupNamespace.parse(argv[3]),
                             BackupGroup.parse(argv[4]), float(argv[5]), Path(argv[6]))
        print(cycles)
        return 0
    if argv[1] == "--reopen":  # --reopen STORE
        print(json.dumps(reopen(argv[2])))
        return 0
    with open(argv[1]) as f:
        cfg = json.load(f)
    flags = argv[3:]
    slots = [int(f.split("=", 1)[1]) for f in flags if f.startswith("--slot=")]
    worker = Worker(cfg, int(argv[2]), moves_only="--moves-only" in flags,
                    slot=slots[0] if slots else None, gc_first="--gc-first" in flags)
    with contextlib.suppress(KeyboardInterrupt):
        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
