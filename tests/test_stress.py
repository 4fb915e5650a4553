"""Stress test with real processes: six OS processes (tests/stress_worker.py) run random
backups, restores, forgets, listings, namespace creates and deletes and group deletes on a
small namespace tree, with random bounded waits, for the whole run. Workers are killed with
SIGKILL mid-operation and replaced: once in the short mode (inside a backup), every minute in
the long mode (aimed in turn at a backup, a forget, a namespace delete and a group delete).

Afterwards the ledgers are checked against the datastore:

- every operation ended in an outcome allowed for it; every refusal is a LockBusy whose
  message names the lock and its holders (worker pids, never the refused process itself); a
  lock order violation (CHUNKYARD_LOCKDEP=1 in every worker) or any other exception fails;
- no operation waited past its bound: a refused one took at least its `wait` and at most
  `wait` per waiting lock call plus slack (plus MF's own 5 s if MF was the lock), no single
  lock was waited for longer than its wait, and nothing took longer than its waits plus 20 s;
- every snapshot a backup finished exists exactly once, in its namespace and group, unless a
  forget of it, or a delete of its group or of its namespace (or an ancestor), may have run
  after the backup started; it is gone if such a delete or forget started after the backup
  finished; nothing else exists, and nothing is unfinished except what a killed backup (or
  a killed remover: directory removal is not atomic) left;
- every finished snapshot restores to the bytes it was made from (both its archives);
- nothing stays locked: every lock can be taken exclusively at once, listing works, and a new
  backup into every group works, builds on the newest finished snapshot and restores.

`pytest tests/test_stress.py` runs the short mode (20 s of work, about 25 s in all);
`make stress` runs `--stress-seconds=600`. The counts of each operation and outcome are
printed (shown on failure, and always in `make stress`); CHUNKYARD_STRESS_SEED fixes the
random choices (the interleaving stays the scheduler's).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore import queries
from chunkyard.datastore.chunk_store import SyncLevel
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import MANIFEST_WAIT, Mode
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.errors import NotFound
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from tests.stress_worker import (
    META_ARCHIVE,
    OWNER,
    WAITING_CALLS,
    SourceTree,
    allocate_backup_time,
    verify_snapshot,
)

REPO = Path(__file__).resolve().parent.parent
WORKERS = 6
SHORT_SECONDS = 20.0
KILL_EVERY_LONG = 60.0
# What the kills try to interrupt, in turn (the short mode kills once: a backup).
KILL_TARGETS = ["backup", "forget", "delete-ns", "backup", "delete-group"]
NAMESPACES = ["", "a", "a/b", "a/b/c", "d"]
# "g1" and "g1-x" share a prefix: deleting one must not touch the other's lock files.
GROUPS = ["host/g1", "host/g1-x", "vm/100"]
WEIGHTS = {"backup": 34, "restore": 16, "forget": 14, "list": 7, "create-ns": 14,
           "delete-ns": 5, "delete-group": 4}
MAX_WAIT = 0.5
SLACK = 1.5  # scheduling slack of a refusal on a loaded 2-core machine
HANG = 20.0  # no operation, refused or not, may take longer than its waits plus this
GRACE = 30.0  # time for the workers to finish their last operation
ALLOWED = {
    "backup": {"ok", "busy", "not-found", "stale-time"},
    "restore": {"ok", "busy", "not-found"},
    "forget": {"ok", "busy", "not-found"},
    "list": {"ok", "not-found"},
    "create-ns": {"ok", "busy", "not-found", "exists"},
    "delete-ns": {"ok", "busy", "not-found"},
    "delete-group": {"ok", "busy", "not-found"},
}
REMOVERS = ("forget", "delete-ns", "delete-group")


@dataclass
class Op:
    """One operation from a ledger: ended (`outcome` set) or in flight when its worker died."""

    wid: int
    pid: int
    seq: int
    op: str
    args: dict[str, Any]
    wait: float
    t0: int
    t1: int | None = None
    outcome: str | None = None
    detail: Any = None
    killed_at: int | None = None  # in flight when the worker was killed at this time

    @property
    def end(self) -> int:
        """When it ended, or when its worker was killed."""
        end = self.t1 if self.t1 is not None else self.killed_at
        assert end is not None
        return end

    @property
    def elapsed(self) -> float:
        return (self.end - self.t0) / 1e9

    def describe(self) -> str:
        args = {k: v for k, v in self.args.items() if k != "meta_sha"}
        return (f"w{self.wid} (pid {self.pid}) #{self.seq} {self.op} {args} wait={self.wait} "
                f"-> {self.outcome or 'killed'} after {self.elapsed:.2f} s")


@dataclass
class Kill:
    wid: int
    pid: int
    at: int
    in_flight: str | None = None


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def bad(self, text: str) -> None:
        self.problems.append(text)


def _key(op: Op) -> tuple[str, str, int]:
    return op.args["ns"], op.args["group"], op.args["time"]


class StressRun:
    """Runs the worker processes and collects what they did."""

    def __init__(self, base: Path, seconds: float, kill_times: list[float], seed: int) -> None:
        self.base = base
        self.seconds = seconds
        self.kill_times = kill_times
        self.seed = seed
        self.store = base / "store"
        self.ledgers = base / "ledgers"
        self.logs = base / "logs"
        self.counter = str(base / "time-counter")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.pids: dict[int, int] = {}
        self.kills: list[Kill] = []
        self.report = Report()
        self.rng = random.Random(seed)
        self.next_wid = 0
        self.deadline = 0.0

    # -- processes ------------------------------------------------------------------------
    def spawn(self) -> None:
        wid = self.next_wid
        self.next_wid += 1
        env = dict(os.environ, CHUNKYARD_LOCKDEP="1", PYTHONFAULTHANDLER="1")
        with open(self.logs / f"w{wid}.out", "wb") as out, \
                open(self.logs / f"w{wid}.err", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-W", "always::ResourceWarning", "-m", "tests.stress_worker",
                 str(self.base / "config.json"), str(wid)],
                cwd=REPO, env=env, stdout=out, stderr=err)
        self.procs[wid] = proc
        self.pids[wid] = proc.pid

    def _last_line(self, wid: int) -> str:
        path = self.ledgers / f"w{wid}.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                lines = f.read().splitlines()
        except OSError:
            return ""
        return lines[-1].decode(errors="replace") if lines else ""

    def kill_one(self, target: str) -> None:
        """SIGKILL a worker in the middle of a `target` operation if one is caught at it
        within 5 s (else a random one), and start a replacement."""
        until = time.monotonic() + 5.0
        wid = self.rng.choice(sorted(self.procs))
        while time.monotonic() < until:
            caught = [w for w in self.procs if '"ev":"begin"' in (line := self._last_line(w))
                      and f'"op":"{target}"' in line]
            if caught:
                wid = caught[0]
                break
            time.sleep(0.001)
        proc = self.procs.pop(wid)
        time.sleep(self.rng.uniform(0.0, 0.002))
        proc.kill()
        at = time.time_ns()
        proc.wait()
        line = self._last_line(wid)
        found = re.search(r'"op":"([a-z-]+)"', line) if '"ev":"begin"' in line else None
        self.kills.append(Kill(wid, proc.pid, at, found.group(1) if found else None))
        self.spawn()

    def stderr_of(self, wid: int) -> str:
        try:
            return (self.logs / f"w{wid}.err").read_text(errors="replace")
        except OSError:
            return ""

    # -- the run --------------------------------------------------------------------------
    def setup(self) -> None:
        for d in (self.ledgers, self.logs, self.base / "scratch"):
            d.mkdir(parents=True)
        ds = Datastore.create(str(self.store), sparse=True)
        for name in NAMESPACES[1:]:
            create_namespace(ds, BackupNamespace.parse(name))

    def run(self) -> None:
        start = time.time()
        self.deadline = start + 1.0 + self.seconds  # a second for the workers to start
        config = {"store": str(self.store), "deadline": self.deadline, "seed": self.seed,
                  "namespaces": NAMESPACES, "groups": GROUPS, "weights": WEIGHTS,
                  "max_wait": MAX_WAIT, "counter": self.counter,
                  "ledgers": str(self.ledgers), "scratch": str(self.base / "scratch")}
        (self.base / "config.json").write_text(json.dumps(config))
        for _ in range(WORKERS):
            self.spawn()
        kills = [start + 1.0 + t for t in self.kill_times]
        while time.time() < self.deadline - 1.0:
            for wid, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self.report.bad(f"worker w{wid} (pid {proc.pid}) exited early with "
                                    f"{proc.returncode}: {self.stderr_of(wid)[-2000:]}")
                    del self.procs[wid]
                    self.spawn()
            if kills and time.time() >= kills[0]:
                kills.pop(0)
                self.kill_one(KILL_TARGETS[len(self.kills) % len(KILL_TARGETS)])
            time.sleep(0.05)
        self.stop()

    def stop(self) -> None:
        for wid, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, self.deadline + GRACE - time.time()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # faulthandler: dump its stacks
                time.sleep(1.0)
                proc.kill()
                proc.wait()
                self.report.bad(f"worker w{wid} (pid {proc.pid}) did not stop within "
                                f"{GRACE} s of the deadline: {self.stderr_of(wid)[-4000:]}")
                continue
            if proc.returncode != 0:
                self.report.bad(f"worker w{wid} exited with {proc.returncode}: "
                                f"{self.stderr_of(wid)[-2000:]}")
        for wid in self.pids:
            err = self.stderr_of(wid)
            if "Traceback" in err or "was not closed" in err or "Exception ignored" in err:
                self.report.bad(f"worker w{wid} wrote to stderr: {err[-2000:]}")
            elif err.strip():
                self.report.notes.append(f"w{wid} stderr: {err.strip()[-300:]}")

    # -- ledgers --------------------------------------------------------------------------
    def load_ops(self) -> list[Op]:
        killed = {k.wid: k for k in self.kills}
        ops: list[Op] = []
        for wid, pid in sorted(self.pids.items()):
            path = self.ledgers / f"w{wid}.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            open_ops: dict[int, Op] = {}
            for i, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                except ValueError:
                    if wid in killed and i == len(lines) - 1:
                        continue  # cut short by the kill
                    raise
                if rec["ev"] == "begin":
                    op = Op(wid, pid, rec["seq"], rec["op"], rec["args"], rec["wait"], rec["t0"])
                    open_ops[op.seq] = op
                    ops.append(op)
                else:
                    op = open_ops.pop(rec["seq"])
                    op.t1, op.outcome, op.detail = rec["t1"], rec["outcome"], rec["detail"]
            for op in open_ops.values():
                if wid in killed:
                    op.killed_at = killed[wid].at
                else:
                    self.report.bad(f"operation without an end: {op.describe()}")
        return ops


# -- checks ---------------------------------------------------------------------------------

def check_outcomes(ops: list[Op], all_pids: set[int], report: Report) -> None:
    """Allowed outcomes, clean refusals naming their holders, bounded waits."""
    for op in ops:
        if op.outcome is None:
            continue
        if op.outcome not in ALLOWED[op.op]:
            trace = op.detail.get("traceback", "") if isinstance(op.detail, dict) else ""
            report.bad(f"{op.describe()}: {op.detail.get('type') if op.detail else ''} "
                       f"{op.detail.get('msg') if op.detail else ''}\n{trace}")
            continue
        gone = f"namespace '{BackupNamespace.parse(op.args['ns']).display()}' does not exist"
        if op.op == "list" and op.outcome == "not-found" and op.detail["msg"] != gone:
            report.bad(f"{op.describe()}: a listing failed on something that vanished "
                       f"beneath it: {op.detail['msg']}")
        calls = WAITING_CALLS[op.op]
        if op.elapsed > calls * op.wait + MANIFEST_WAIT + HANG:
            report.bad(f"{op.describe()}: took longer than any wait explains")
        if op.outcome != "busy":
            continue
        d = op.detail
        lock_wait = MANIFEST_WAIT if d["what"].startswith("manifest") else op.wait
        extra = MANIFEST_WAIT if d["what"].startswith("manifest") else 0.0
        if " is locked" not in d["msg"] or not d["msg"].startswith(d["what"]):
            report.bad(f"{op.describe()}: unclear refusal {d['msg']!r}")
        for h in d["holders"]:
            if h["pid"] == op.pid:
                report.bad(f"{op.describe()}: refused by its own process: {d['msg']}")
            elif h["pid"] not in all_pids:
                report.bad(f"{op.describe()}: names a holder that is no worker: {d['msg']}")
        if d["waited"] > lock_wait + SLACK:
            report.bad(f"{op.describe()}: waited {d['waited']:.2f} s for {d['what']}, "
                       f"its bound is {lock_wait} s")
        if op.elapsed < op.wait - 0.05:
            report.bad(f"{op.describe()}: refused before its wait of {op.wait} s was over")
        if op.elapsed > calls * op.wait + extra + SLACK:
            report.bad(f"{op.describe()}: a refusal after {op.elapsed:.2f} s exceeds "
                       f"{calls} x {op.wait} s + slack")


class Removals:
    """Every forget and delete that succeeded or was cut short by a kill, indexed by what it
    removes (a snapshot, a group, a namespace subtree), for three questions about a backup's
    snapshot: may one have removed it, did one surely remove it, and may a killed one have
    left it half removed (directory removal is not atomic, in PBS neither)."""

    def __init__(self, removers: list[Op]) -> None:
        self.latest_end: dict[tuple[str, ...], Op] = {}
        self.latest_ok_start: dict[tuple[str, ...], Op] = {}
        self.latest_killed: dict[tuple[str, ...], Op] = {}
        for rem in removers:
            if rem.op == "forget":
                scope: tuple[str, ...] = ("forget", *map(str, _key(rem)))
            elif rem.op == "delete-group":
                scope = ("group", rem.args["ns"], rem.args["group"])
            else:
                scope = ("ns", rem.args["ns"])
            self._keep(self.latest_end, scope, rem, lambda op: op.end)
            if rem.outcome == "ok":
                self._keep(self.latest_ok_start, scope, rem, lambda op: op.t0)
            if rem.killed_at is not None:
                self._keep(self.latest_killed, scope, rem, lambda op: op.end)

    @staticmethod
    def _keep(index: dict[tuple[str, ...], Op], scope: tuple[str, ...], rem: Op,
              when: Callable[[Op], int]) -> None:
        old = index.get(scope)
        if old is None or when(old) < when(rem):
            index[scope] = rem

    @staticmethod
    def scopes(made: Op) -> list[tuple[str, ...]]:
        ns, group, snap_time = _key(made)
        parsed = BackupNamespace.parse(ns)
        return [("forget", ns, group, str(snap_time)), ("group", ns, group)] + [
            ("ns", str(a)) for a in [*parsed.ancestors(), parsed] if not a.is_root]

    def _after(self, index: dict[tuple[str, ...], Op], made: Op) -> Op | None:
        for s in self.scopes(made):
            rem = index.get(s)
            if rem is not None and rem.end >= made.t0:
                return rem
        return None

    def may_have_removed(self, made: Op) -> bool:
        """Some removal of it ended after the backup began."""
        return self._after(self.latest_end, made) is not None

    def may_have_damaged(self, made: Op) -> Op | None:
        """A removal of it killed after the backup began."""
        return self._after(self.latest_killed, made)

    def surely_removed(self, made: Op) -> Op | None:
        """A removal of it that succeeded and began after the backup ended."""
        for s in self.scopes(made):
            rem = self.latest_ok_start.get(s)
            if rem is not None and rem.t0 > made.end:
                return rem
        return None


def list_everything(ds: Datastore) -> dict[int, list[tuple[str, str, bool]]]:
    """Backup time -> every (namespace, group, finished) that holds a snapshot of it."""
    found: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
    for ns in ds.iter_namespaces(BackupNamespace()):
        for group in ds.list_groups(ns):
            for info in ds.list_snapshots(ns, group):
                found[info.dir.time].append((str(ns), str(group), info.finished))
    return found


def check_snapshots(ds: Datastore, ops: list[Op], scratch: Path,
                    report: Report) -> tuple[int, int]:
    """The datastore against the ledgers; returns how many finished snapshots were restored
    and how many unfinished ones (left by kills) were found."""
    backups = {op.args["time"]: op for op in ops if op.op == "backup"
               and (op.outcome == "ok" or op.killed_at is not None)}
    failed = {op.args["time"] for op in ops if op.op == "backup" and op.outcome not in
              (None, "ok")}
    removers = [op for op in ops if op.op in REMOVERS
                and (op.outcome == "ok" or op.killed_at is not None)]
    for rem in removers:
        if rem.op == "forget" and rem.outcome == "ok":
            made = backups.get(rem.args["time"])
            if made is None or _key(made) != _key(rem) or made.t0 > rem.end:
                report.bad(f"{rem.describe()}: forgot a snapshot no backup made")
    removals = Removals(removers)
    found = list_everything(ds)
    for snap_time, places in found.items():
        made = backups.get(snap_time)
        if len(places) > 1:
            report.bad(f"snapshot time {snap_time} exists {len(places)} times: {places}")
        if made is None:
            why = "a failed backup left it" if snap_time in failed else "no backup made it"
            report.bad(f"snapshot {snap_time} at {places}: {why}")
            continue
        if places[0][:2] != _key(made)[:2]:
            report.bad(f"{made.describe()}: its snapshot is at {places}")
        if not places[0][2] and made.killed_at is None and not removals.may_have_damaged(made):
            report.bad(f"{made.describe()}: left an unfinished snapshot")
    for snap_time, made in backups.items():
        present = snap_time in found
        certain = removals.surely_removed(made)
        if certain is not None and present:
            report.bad(f"{made.describe()}: survived {certain.describe()}")
        if not present and made.killed_at is None and not removals.may_have_removed(made):
            report.bad(f"{made.describe()}: its finished snapshot is lost")
    restored = unfinished = 0
    for snap_time, places in sorted(found.items()):
        made = backups.get(snap_time)
        if made is None or places[0][:2] != _key(made)[:2]:
            continue
        ns, group = BackupNamespace.parse(places[0][0]), BackupGroup.parse(places[0][1])
        snap = BackupDir(group, snap_time)
        target = scratch / f"final-{snap_time}"
        try:
            if not places[0][2]:
                unfinished += 1
                try:
                    run_restore(ds, RestoreRequest(ns, snap, META_ARCHIVE, str(target / "m")))
                    report.bad(f"{made.describe()}: its unfinished snapshot restored")
                except NotFound:
                    pass
                continue
            got = verify_snapshot(ds, ns, snap, target, 0.0)
            restored += 1
            if got["meta_sha"] != made.args["meta_sha"] or got["token"] != made.args["token"]:
                report.bad(f"{made.describe()}: restores {got}, not what was backed up")
        except Exception as e:
            killer = removals.may_have_damaged(made)
            if killer is not None:
                report.notes.append(f"{made.describe()}: left half removed by the kill of "
                                    f"{killer.describe()}: {type(e).__name__}: {e}")
            else:
                report.bad(f"{made.describe()}: final restore failed: {type(e).__name__}: {e}")
        finally:
            shutil.rmtree(target, ignore_errors=True)
    return restored, unfinished


def check_nothing_locked(ds: Datastore, report: Report) -> None:
    """With every worker gone, each lock must be free at once (locks die with processes)."""
    try:
        with ds.locks.session("stress: final lock check", wait=0.0) as s:
            s.namespace_subtree_exclusive(BackupNamespace(), ds.list_child_namespaces)
        for ns in ds.iter_namespaces(BackupNamespace()):
            for group in ds.list_groups(ns):
                with ds.locks.session("stress: final lock check", wait=0.0) as s:
                    s.group_writer(ns, group)
                    s.group(ns, group, Mode.EXCLUSIVE)
                for info in ds.list_snapshots(ns, group):
                    with ds.locks.session("stress: final lock check", wait=0.0) as s:
                        s.snapshot(ns, info.dir, Mode.EXCLUSIVE)
                        s.manifest(ns, info.dir, wait=0.0)
        with ds.locks.session("stress: final lock check", wait=0.0) as s:
            s.chunk_store(Mode.EXCLUSIVE)
    except Exception as e:
        report.bad(f"a lock is still held after every worker ended: {type(e).__name__}: {e}")


def check_later_backups(ds: Datastore, base: Path, counter: str, report: Report) -> int:
    """A new backup into every group of every namespace works, on the newest finished base,
    and restores; listings work. Returns how many backups were made."""
    for ns in ds.iter_namespaces(BackupNamespace()):
        queries.group_list(ds, ns)
        queries.snapshot_list(ds, ns)
    source = SourceTree(base / "final-src", random.Random(0))
    made = 0
    for ns in ds.iter_namespaces(BackupNamespace()):
        for name in GROUPS:
            group = BackupGroup.parse(name)
            newest = ds.last_finished_snapshot(ns, group) if ds.group_exists(ns, group) else None
            source.mutate()
            meta = base / "final-meta.conf"
            snap_time = allocate_backup_time(counter)
            meta.write_text(json.dumps({"token": "final", "ns": str(ns), "group": name,
                                        "time": snap_time, "state": _state(source.root)}))
            try:
                result = run_backup(ds, BackupRequest(
                    ns, group, snap_time, [ArchiveSpec.parse(f"root.tar:{source.root}"),
                                           ArchiveSpec.parse(f"meta.conf:{meta}")], OWNER))
                expected = newest.dir if newest else None
                if result.base != expected:
                    report.bad(f"final backup into {name} in '{ns}' built on {result.base}, "
                               f"not on the newest finished snapshot {expected}")
                verify_snapshot(ds, ns, result.snapshot, base / f"final-check-{snap_time}", 0.0)
                made += 1
            except Exception as e:
                report.bad(f"final backup into {name} in '{ns}' failed: "
                           f"{type(e).__name__}: {e}")
    return made


def _state(root: Path) -> dict[str, Any]:
    from tests.helpers import tree_state
    from tests.stress_worker import normalise

    return normalise(tree_state(root))


def count_table(ops: list[Op], kills: list[Kill]) -> str:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for op in ops:
        counts[op.op][op.outcome or "killed"] += 1
    outcomes = sorted({o for c in counts.values() for o in c})
    lines = [f"{'operation':<13}" + "".join(f"{o:>11}" for o in outcomes) + f"{'total':>8}"]
    for name in WEIGHTS:
        c = counts.get(name, Counter())
        lines.append(f"{name:<13}" + "".join(f"{c[o]:>11}" for o in outcomes)
                     + f"{sum(c.values()):>8}")
    busy = [op for op in ops if op.outcome == "busy"]
    named = sum(1 for op in busy if op.detail["holders"])
    with_task = sum(1 for op in busy if any(h["ops"] for h in op.detail["holders"]))
    locks = Counter(op.detail["what"].split(" ")[0] for op in busy)
    waited = max((op.detail["waited"] for op in busy), default=0.0)
    over = max((op.elapsed - WAITING_CALLS[op.op] * op.wait for op in busy
                if not op.detail["what"].startswith("manifest")), default=0.0)
    lines.append(f"refusals: {len(busy)}, naming a holder pid: {named}, with its operation: "
                 f"{with_task}, by lock: {dict(locks)}, longest wait for one lock: "
                 f"{waited:.2f} s, most time past the waits: {over:.2f} s (slack {SLACK} s)")
    for k in kills:
        lines.append(f"killed w{k.wid} (pid {k.pid}) in flight: {k.in_flight or 'unknown'}")
    return "\n".join(lines)


# -- the test -------------------------------------------------------------------------------

@pytest.fixture
def stress_seconds(request: pytest.FixtureRequest) -> float:
    value = request.config.getoption("--stress-seconds")
    if value is None:
        return SHORT_SECONDS
    # The long mode outlives the suite's default timeout: this marker is read at call time.
    request.node.add_marker(pytest.mark.timeout(float(value) + 600, func_only=True),
                            append=False)
    return float(value)


@pytest.mark.slow
@pytest.mark.timeout(200, func_only=True)
def test_stress_real_processes(tmp_path: Path, stress_seconds: float,
                               capsys: pytest.CaptureFixture[str]) -> None:
    seed = int(os.environ.get("CHUNKYARD_STRESS_SEED", str(time.time_ns() % 1_000_000)))
    long_mode = stress_seconds > SHORT_SECONDS
    if long_mode:
        kill_times = [t for t in (30.0 + KILL_EVERY_LONG * i for i in range(1000))
                      if t < stress_seconds - 10]
    else:
        kill_times = [stress_seconds * 0.4]
    run = StressRun(tmp_path, stress_seconds, kill_times, seed)
    run.setup()
    started = time.monotonic()
    run.run()
    ops = run.load_ops()
    report = run.report
    check_outcomes(ops, set(run.pids.values()), report)
    ds = Datastore.open(str(run.store), sync_level=SyncLevel.NONE)
    check_nothing_locked(ds, report)
    restored, unfinished = check_snapshots(ds, ops, tmp_path / "scratch", report)
    later = check_later_backups(ds, tmp_path / "scratch", run.counter, report)

    table = count_table(ops, run.kills)
    summary = (f"stress: seed {seed}, {stress_seconds:.0f} s, {len(run.pids)} worker processes "
               f"({WORKERS} at a time), {len(ops)} operations, {restored} snapshots restored "
               f"at the end ({unfinished} unfinished left by kills), {later} later backups, "
               f"{time.monotonic() - started:.1f} s\n"
               f"{table}")
    for note in report.notes:
        summary += f"\nnote: {note}"
    print(summary)
    if long_mode and not os.environ.get("PYTEST_XDIST_WORKER"):
        with capsys.disabled():
            print("\n" + summary)

    assert not report.problems, (
        f"{len(report.problems)} problem(s) (seed {seed}):\n"
        + "\n".join(report.problems[:40]))
    ran = Counter(op.op for op in ops if op.outcome == "ok")
    assert all(ran[name] > 0 for name in WEIGHTS), f"an operation never succeeded: {ran}"
    busy = Counter(op.op for op in ops if op.outcome == "busy")
    assert sum(busy.values()) >= 5 and len(busy) >= 3, f"too little contention: {busy}"
    assert any(k.in_flight for k in run.kills), \
        f"no kill caught an operation in flight: {run.kills}"
    assert restored > 0, "no snapshot survived to be restored at the end"


@pytest.mark.timeout(60)
def test_listing_skips_groups_that_vanish_meanwhile(tmp_path: Path) -> None:
    """Listing takes no locks and must skip entries deleted beneath it (queries' contract):
    another process backs a group up and deletes it again while this one lists."""
    ds = Datastore.create(str(tmp_path / "store"), sparse=True)
    churn = subprocess.Popen(
        [sys.executable, "-m", "tests.stress_worker", "--churn", str(tmp_path / "store"), "",
         "host/churn", "2.5", str(tmp_path / "src")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    failures: Counter[str] = Counter()
    listings = 0
    while churn.poll() is None:
        listings += 1
        for name, call in (("snapshot_list", queries.snapshot_list),
                           ("group_list", queries.group_list)):
            try:
                call(ds, BackupNamespace())
            except NotFound as e:
                failures[f"{name}: {e}"] += 1
    out, err = churn.communicate()
    assert churn.returncode == 0, err.decode(errors="replace")
    cycles = int(out)
    assert cycles > 10, f"the group was created and deleted only {cycles} times"
    assert not failures, f"{sum(failures.values())} of {listings} listings failed: {failures}"
