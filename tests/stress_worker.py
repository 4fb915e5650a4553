"""One process of the stress test (tests/test_stress.py): random datastore operations until a
deadline, each written to this worker's own ledger so the parent can check the outcome.

Run as `python -m tests.stress_worker CONFIG.json WORKER_ID` from the repository root. The
ledger (`<ledger_dir>/w<ID>.jsonl`) gets a `begin` line before each operation and an `end` line
after it, flushed at once, so a worker killed with SIGKILL leaves its in-flight operation
visible. Outcomes: ok, busy (LockBusy), not-found, exists, stale-time (backup time not newer
than the group's last), conflict (a move broke a merge rule: MoveConflict), mismatch (a restore
differed from what was backed up) and error (anything else, with its traceback). Which
outcomes are acceptable is the parent's call.

Moves (group and namespace) stay inside the namespace shape the stress test uses: a namespace
`<top>/<rest>` moves to `<other top>/<rest>`, so children come along and every target is a
namespace the workers use or will use. A worker started with `--moves-only` does nothing but
moves: the parent starts one with CHUNKYARD_FAULT set, so that it dies by SIGKILL in the middle
of a move (chunkyard.faults), leaving an intent log for the next `Datastore.open` to complete.

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
WAITING_CALLS = {"backup": 4, "restore": 2, "forget": 1, "create-ns": 1, "delete-ns": 1,
                 "delete-group": 1, "list": 0, "move-group": 1, "move-ns": 5}
MOVES = ("move-group", "move-ns")


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
    consecutive backups of one group share most files (and hit the metadata cache)."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.counter = 0
        for i in range(10):
            self._write(f"s{i % 3}/f{i}.bin")
        (root / "empty").mkdir(parents=True, exist_ok=True)
        os.symlink("s0/f0.bin", root / "link")
        # One larger file that never changes: later backups reuse its chunks.
        (root / "big.bin").write_bytes(rng.randbytes(600_000))

    def _write(self, rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.rng.choice([0, 1, 100, 4096, 20_000, 65_543])
        path.write_bytes(self.rng.randbytes(size))
        if self.rng.random() < 0.2:
            path.chmod(self.rng.choice([0o600, 0o640, 0o755]))

    def mutate(self) -> None:
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

    def __init__(self, cfg: dict[str, Any], wid: int, moves_only: bool = False) -> None:
        self.cfg = cfg
        self.wid = wid
        self.rng = random.Random(f"{cfg['seed']}-{wid}")
        self.ds = Datastore.open(cfg["store"], sync_level=SyncLevel.NONE)
        self.namespaces = [BackupNamespace.parse(n) for n in cfg["namespaces"]]
        self.groups = [BackupGroup.parse(g) for g in cfg["groups"]]
        self.scratch = Path(cfg["scratch"]) / f"w{wid}"
        self.scratch.mkdir(parents=True)
        self.source = SourceTree(self.scratch / "src", self.rng)
        self.ledger = open(Path(cfg["ledgers"]) / f"w{wid}.jsonl", "a", buffering=1)  # noqa: SIM115
        self.seq = 0
        self.tops = list(cfg["tops"])
        every: dict[str, Callable[[], None]] = {
            "backup": self.op_backup, "restore": self.op_restore, "forget": self.op_forget,
            "list": self.op_list, "create-ns": self.op_create_ns,
            "delete-ns": self.op_delete_ns, "delete-group": self.op_delete_group,
            "move-group": self.op_move_group, "move-ns": self.op_move_ns,
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
                                OWNER, wait=wait)
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

    def run(self) -> None:
        deadline = float(self.cfg["deadline"])
        calls, weights = zip(*self.ops, strict=True)
        while time.time() < deadline:
            self.rng.choices(calls, weights)[0]()
        self.ledger.close()


def _move_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a move's result."""
    return {"method": result["method"], "groups": len(result["groups"]),
            "moved-snapshots": result["moved-snapshots"],
            "namespaces": [n["action"] for n in result["namespaces"]],
            "warnings": result["warnings"]}


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
    worker = Worker(cfg, int(argv[2]), moves_only="--moves-only" in argv[3:])
    with contextlib.suppress(KeyboardInterrupt):
        worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
