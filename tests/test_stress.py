"""Stress test with real processes: six OS processes (tests/stress_worker.py) run random
backups, restores, forgets, listings, namespace creates and deletes, group deletes, moves of
groups and namespaces (renames to absent targets and merges into existing ones, namespaces
with their children), prunes (of a group, or of a namespace tree; random keep options,
sometimes dry runs), verifies (of a namespace tree, a group or a snapshot) and garbage
collections on a small namespace tree, with random bounded waits, for the whole run.
Workers are killed with SIGKILL mid-operation and replaced: twice in the short mode (inside a
backup, and inside a move), every minute in the long mode (aimed in turn at a backup, a move,
a forget, a namespace delete, a namespace move, a GC, a group delete, a datastore prune and a
group move). A move is killed in its middle by a short-lived extra worker doing only moves
with CHUNKYARD_FAULT set (chunkyard.faults: it SIGKILLs itself after a step of the move, or at
another point of it); right after its death another process opens the datastore, as the next
user would, which completes the interrupted move if its locks are free (the final open
completes it otherwise).

GC for real. GC removes a chunk only if its atime is older than its cutoff (24 h 5 min by
default, 1 minute at least) and than the oldest running backup's start minus 5 minutes; a run
of seconds makes nothing that old. Ageing chunk files (atime into the past) while processes
run would make states no real run has: a running backup's chunks written or touched since
its start would look days old, and so would chunks GC's mark phase has just touched, and GC
would rightly remove them (its oldest-writer rule relies on exactly that). Ageing only the
chunks that are garbage "at that moment" has no such moment while backups deduplicate against
them and moves and prunes change what references them. So the run is cut into epochs (three
in the short mode, one per EPOCH_LONG seconds in the long mode); between two, every process
has ended (workers, movers, reopens), the independent checker runs, and the atime and mtime
of every file in the chunk store move AGE (2 days) back, as if everything so far had
happened two days earlier and the datastore had then been idle: a state real life produces.
Then a new set of workers starts; the operations of the new epoch all begin after the ageing,
so whatever they write or touch is newer than they are, as in life. One of them runs a GC
shortly after the start (any GC may be first), concurrently with backups, restores, prunes,
verifies and moves: it removes the chunks nothing referenced at the pause, and those that
the prunes, forgets and deletes of its own epoch orphan before it marks them. A GC after
that has nothing old left to remove (the first one's mark touched every live chunk), except
with the 1-minute cutoff in the long mode. A worker that takes over a slot (after a kill, or
in the next epoch) backs up the same source tree as its predecessors, and backups use 64 KiB
chunks: new backups deduplicate against aged chunks, garbage among them, while a GC sweeps
them (the sweep's rename-aside and the backups' touches race for real). Each backup also
writes fresh bytes (a stamp file), so every snapshot has chunks no other one shares: chunks
a wrong GC would lose, and the checks would notice. A GC that removed chunks is followed by
a verify of the whole datastore in the same worker.

Afterwards the ledgers are checked against the datastore:

- every operation ended in an outcome allowed for it; every refusal is a LockBusy whose
  message names the lock and its holders (worker pids, never the refused process itself); a
  lock order violation (CHUNKYARD_LOCKDEP=1 in every worker) or any other exception fails;
  no operation fails on a missing chunk;
- no operation waited past its bound: a refused one took at least its `wait` and at most
  `wait` per waiting lock call plus slack (plus MF's own 5 s, or the move journal's 10 s, if
  that was the lock), no single lock was waited for longer than its wait, and nothing took
  longer than its waits plus 20 s;
- a move that succeeded left no snapshot behind (no "kept group" warning); one that failed
  did so by a merge rule (MoveConflict, with its conflicts) or a missing source or target
  (NotFound "... does not exist"), never by something vanishing under its locks;
- snapshots are identified by their backup time (a shared counter makes times unique across
  all namespaces and groups); moves change only their namespace. Each snapshot's `Fate` is
  computed from the ledgers: every move, forget and delete that succeeded acted on it (if it
  was in its scope) at one moment between its begin and end lines, and so did a prune whose
  rows say it removed the snapshot (not kept, not skipped; a dry run removes nothing); a
  killed remover (a killed prune: of any snapshot of its scope) at most once before its kill,
  a killed move at any moments later or never (any later open may complete it); every order
  of overlapping operations is tried, which gives the places it may be in at the end, or
  that it may be (or surely is) gone;
- every snapshot a backup finished exists exactly once, in its group and in a namespace its
  fate allows; it is missing only if its fate allows that; a forget or prune that removed it
  found it where its fate allows; nothing else exists, and nothing is unfinished except what
  a killed backup (or a killed remover: directory removal is not atomic) left;
- a move refused (LockBusy), conflicting (MoveConflict) or not finding its source or target
  (NotFound) changed nothing: fates ignore it, so a snapshot it moved would be found where
  its fate does not allow;
- every finished snapshot restores to the bytes it was made from (both its archives);
- no verify fails a snapshot (nothing corrupts data here), except the unfinished leftover
  of a killed backup (its manifest does not load, as in PBS) and one a killed removal may
  have half removed; none finds a corrupt or missing chunk; busy snapshots are skipped;
- a prune skipped a snapshot only because it was locked by another worker, or gone;
- a GC was refused only by another GC (CS X), named in the refusal (or gone by the time the
  holders were read); no GC finds a bad chunk; one that ended before the first ageing
  removed nothing (nothing was old enough); some GC removed chunks, some prune snapshots;
- at the end of each epoch and of the run, the independent checker (tools/pbs_check.py
  --no-chunk-scan, written from the spec alone) finds no missing chunk and nothing else
  wrong (the test store is sparse: its missing prefix directories are ignored);
- the final open completes every interrupted move: no intent log is left;
- nothing stays locked: every lock can be taken exclusively at once, listing works, and a new
  backup into every group works, builds on the newest finished snapshot and restores.

`pytest tests/test_stress.py` runs the short mode (20 s of work, about 25-30 s in all);
`make stress` runs `--stress-seconds=600`. The counts of each operation and outcome are
printed (shown on failure, and always in `make stress`); CHUNKYARD_STRESS_SEED fixes the
random choices (the interleaving stays the scheduler's).
"""

from __future__ import annotations

import bisect
import heapq
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import RestoreRequest, run_restore
from chunkyard.datastore import queries
from chunkyard.datastore.chunk_store import SyncLevel
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import MOVE_INTENT_DIR
from chunkyard.datastore.locking import JOURNAL_WAIT, MANIFEST_WAIT, Mode
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.errors import NotFound
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from tests.stress_worker import (
    CHUNK_SIZE,
    META_ARCHIVE,
    MOVES,
    OWNER,
    PRUNES,
    WAITING_CALLS,
    SourceTree,
    allocate_backup_time,
    verify_snapshot,
)

REPO = Path(__file__).resolve().parent.parent
WORKERS = 6
SHORT_SECONDS = 20.0
KILL_EVERY_LONG = 60.0
# The run is cut into epochs; between two, with every process gone, all chunks age (see the
# module docstring). The short mode has three epochs, the long mode one per EPOCH_LONG s.
SHORT_EPOCHS = 3
EPOCH_LONG = 120.0
AGE = 2 * 86400  # how far back each pause moves the chunks' atime and mtime
# What the kills try to interrupt, in turn; "move" is a mover killing itself mid-move
# (CHUNKYARD_FAULT), the others a worker caught at that operation. The short mode kills a
# backup in the first epoch and a move early in the second (while a GC sweeps aged chunks).
KILL_TARGETS = ["backup", "move", "forget", "delete-ns", "move-ns", "gc", "backup", "move",
                "delete-group", "prune-ds", "move-group"]
SHORT_KILLS = [(0.25, "backup"), (0.4, "move")]
# Where the self-killing mover dies (each leaves an intent log but "move.locked"); the
# n-th step counts every step the process ran, so a later move may be the one cut short.
MOVE_FAULTS = ["move.step@1", "move.step@1", "move.step@2", "move.intent-written",
               "move.synced", "move.cleaned", "move.locked"]
VICTIM_PATIENCE = 6.0  # a mover that has not killed itself by then is SIGKILLed mid-move
# Namespaces `<top>/<rest>` move to `<other top>/<rest>` (stress_worker), so they stay
# within tops x {"", "b", "b/c"}; "e/b" and "e/b/c" come only from moves.
TOPS = ["a", "d", "e"]
NAMESPACES = ["", "a", "a/b", "a/b/c", "d", "d/b", "e"]
# "g1" and "g1-x" share a prefix: deleting one must not touch the other's lock files.
GROUPS = ["host/g1", "host/g1-x", "vm/100"]
# Moves are about a fifth of the operations; prune, verify and GC a tenth.
WEIGHTS = {"backup": 34, "restore": 16, "forget": 14, "list": 7, "create-ns": 14,
           "delete-ns": 3, "delete-group": 4, "move-group": 13, "move-ns": 13,
           "prune-group": 3, "prune-ds": 1, "verify": 6, "gc": 2}
MAX_WAIT = 0.5
SLACK = 1.5  # scheduling slack of a refusal on a loaded 2-core machine
HANG = 20.0  # no operation, refused or not, may take longer than its waits plus this
GRACE = 30.0  # time for the workers to finish their last operation
# A lock's own fixed wait an operation may spend on top of its `wait`s: MF's 5 s, the move
# journal's 10 s; GC waits for JR and, on a group's last marking attempt, 10 s for GA S.
GC_GROUP_WAIT = 10.0
OWN_WAIT = {"move-group": JOURNAL_WAIT, "move-ns": JOURNAL_WAIT,
            "gc": JOURNAL_WAIT + GC_GROUP_WAIT}
ALLOWED = {
    "backup": {"ok", "busy", "not-found", "stale-time"},
    "restore": {"ok", "busy", "not-found"},
    "forget": {"ok", "busy", "not-found"},
    "list": {"ok", "not-found"},
    "create-ns": {"ok", "busy", "not-found", "exists"},
    "delete-ns": {"ok", "busy", "not-found"},
    "delete-group": {"ok", "busy", "not-found"},
    "move-group": {"ok", "busy", "not-found", "conflict"},
    "move-ns": {"ok", "busy", "not-found", "conflict"},
    # a busy group fails prune_group; prune_datastore skips it (and busy snapshots) instead
    "prune-group": {"ok", "busy", "not-found"},
    "prune-ds": {"ok", "not-found"},
    "verify": {"ok", "not-found"},  # "ok" if it ran; each failed snapshot is judged apart
    "gc": {"ok", "busy"},  # busy: another GC runs
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
    how: str = "SIGKILL"


@dataclass
class Reopen:
    """A process that opened the datastore right after a move was cut short."""

    proc: subprocess.Popen[bytes]
    out: Path
    after: str  # what it followed
    result: dict[str, Any] | None = None
    done: bool = False  # waited for (at the end of its epoch)


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def bad(self, text: str) -> None:
        self.problems.append(text)


class StressRun:
    """Runs the worker processes and collects what they did."""

    def __init__(self, base: Path, seconds: float, kill_plan: list[tuple[float, str]],
                 seed: int, epochs: int = 1) -> None:
        self.base = base
        self.seconds = seconds
        self.kill_plan = kill_plan
        self.seed = seed
        self.epochs = epochs
        self.store = base / "store"
        self.ledgers = base / "ledgers"
        self.logs = base / "logs"
        self.counter = str(base / "time-counter")
        self.config = base / "config.json"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.pids: dict[int, int] = {}
        self.slots: dict[int, int] = {}  # worker -> the slot whose source tree it backs up
        self.kills: list[Kill] = []
        # movers meant to kill themselves mid-move: wid -> (process, started, fault)
        self.victims: dict[int, tuple[subprocess.Popen[bytes], float, str]] = {}
        self.reopens: list[Reopen] = []
        self.helper_pids: set[int] = set()  # reopeners: they take locks too
        self.report = Report()
        self.rng = random.Random(seed)
        self.next_wid = 0
        self.deadline = 0.0
        # each ageing: (when, in ns since the epoch; chunk files aged; seconds it took)
        self.ageings: list[tuple[int, int, float]] = []
        self.started_ns = 0
        self.checks: list[str] = []  # pbs_check's summaries, at the end of each epoch

    # -- processes ------------------------------------------------------------------------
    def spawn(self, fault: str | None = None, slot: int | None = None,
              gc_first: bool = False) -> int:
        """Start a worker backing up the source tree of `slot`; with `fault`, an extra one
        doing only moves that SIGKILLs itself at that fault point (CHUNKYARD_FAULT); with
        `gc_first`, one that starts with a GC."""
        wid = self.next_wid
        self.next_wid += 1
        slot = wid if slot is None else slot
        env = dict(os.environ, CHUNKYARD_LOCKDEP="1", PYTHONFAULTHANDLER="1")
        env.pop("CHUNKYARD_FAULT", None)
        argv = [sys.executable, "-W", "always::ResourceWarning", "-m", "tests.stress_worker",
                str(self.config), str(wid), f"--slot={slot}"]
        if gc_first:
            argv.append("--gc-first")
        if fault is not None:
            env["CHUNKYARD_FAULT"] = f"{fault}:kill"
            argv.append("--moves-only")
        with open(self.logs / f"w{wid}.out", "wb") as out, \
                open(self.logs / f"w{wid}.err", "wb") as err:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err)
        if fault is None:
            self.procs[wid] = proc
        else:
            self.victims[wid] = (proc, time.monotonic(), fault)
        self.pids[wid] = proc.pid
        self.slots[wid] = slot
        return wid

    def reopen(self, after: str) -> None:
        """Open the datastore in a new process, as the next user after a crash would."""
        out = self.logs / f"reopen-{len(self.reopens)}.out"
        env = dict(os.environ, CHUNKYARD_LOCKDEP="1", PYTHONFAULTHANDLER="1")
        env.pop("CHUNKYARD_FAULT", None)
        with open(out, "wb") as f, open(out.with_suffix(".err"), "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.stress_worker", "--reopen", str(self.store)],
                cwd=REPO, env=env, stdout=f, stderr=err)
        self.helper_pids.add(proc.pid)
        self.reopens.append(Reopen(proc, out, after))

    def _in_flight(self, wid: int) -> str | None:
        line = self._last_line(wid)
        found = re.search(r'"op":"([a-z-]+)"', line) if '"ev":"begin"' in line else None
        return found.group(1) if found else None

    def _catch(self, wids: list[int], targets: tuple[str, ...], seconds: float) -> int | None:
        """A worker among `wids` caught in the middle of one of `targets` within `seconds`."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for w in wids:
                line = self._last_line(w)
                if '"ev":"begin"' in line and any(f'"op":"{t}"' in line for t in targets):
                    return w
            time.sleep(0.001)
        return None

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
        within 5 s (else a random one), and start a replacement; "move" starts a mover
        that kills itself mid-move instead."""
        if target == "move":
            self.spawn(fault=self.rng.choice(MOVE_FAULTS), slot=1000 + self.next_wid)
            return
        caught = self._catch(sorted(self.procs), (target,), 5.0)
        wid = caught if caught is not None else self.rng.choice(sorted(self.procs))
        proc = self.procs.pop(wid)
        time.sleep(self.rng.uniform(0.0, 0.002))
        proc.kill()
        at = time.time_ns()
        proc.wait()
        in_flight = self._in_flight(wid)
        self.kills.append(Kill(wid, proc.pid, at, in_flight))
        self.spawn(slot=self.slots[wid])
        if in_flight in MOVES:
            self.reopen(f"the kill of w{wid} in {in_flight}")

    def watch_victims(self, final: bool = False) -> None:
        """Record the death of self-killing movers and reopen the datastore after each; one
        that has not died within VICTIM_PATIENCE (or by the end) is SIGKILLed mid-move."""
        for wid, (proc, started, fault) in list(self.victims.items()):
            if proc.poll() is None and (final or time.monotonic() > started + VICTIM_PATIENCE):
                caught = self._catch([wid], MOVES, 2.0)
                time.sleep(self.rng.uniform(0.0, 0.002))
                proc.kill()
                proc.wait()
                fault = f"SIGKILL after {fault} was not reached" + (
                    "" if caught is not None else " (no move caught in flight)")
            if proc.poll() is None:
                continue
            del self.victims[wid]
            at = time.time_ns()
            if proc.returncode != -signal.SIGKILL:
                self.report.bad(f"mover w{wid} (pid {proc.pid}, fault {fault}) exited with "
                                f"{proc.returncode}: {self.stderr_of(wid)[-2000:]}")
                continue
            in_flight = self._in_flight(wid)
            self.kills.append(Kill(wid, proc.pid, at, in_flight, fault))
            self.reopen(f"the death of mover w{wid} ({fault}) in {in_flight}")

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
        """The epochs, each with a fresh set of workers; between two, all chunks age."""
        length = self.seconds / self.epochs
        self.started_ns = time.time_ns()
        for epoch in range(self.epochs):
            if epoch:
                # what survived the epoch (and its GCs) lacks no chunk
                self.checks.append(check_no_missing_chunk(self.store, self.report))
                self.age_chunks()
            kills = [(t - epoch * length, target) for t, target in self.kill_plan
                     if epoch * length <= t < (epoch + 1) * length]
            self.run_epoch(epoch, length, kills)
        for wid in self.pids:
            err = self.stderr_of(wid)
            if "Traceback" in err or "was not closed" in err or "Exception ignored" in err:
                self.report.bad(f"worker w{wid} wrote to stderr: {err[-2000:]}")
            elif err.strip():
                self.report.notes.append(f"w{wid} stderr: {err.strip()[-300:]}")

    def run_epoch(self, epoch: int, seconds: float, kill_plan: list[tuple[float, str]]) -> None:
        start = time.time()
        self.deadline = start + 1.0 + seconds  # a second for the workers to start
        config = {"store": str(self.store), "deadline": self.deadline, "seed": self.seed,
                  "namespaces": NAMESPACES, "groups": GROUPS, "weights": WEIGHTS,
                  "tops": TOPS, "max_wait": MAX_WAIT, "counter": self.counter,
                  "ledgers": str(self.ledgers), "scratch": str(self.base / "scratch"),
                  "first_gc_after": round(self.rng.uniform(0.3, 1.2), 3)}
        self.config.write_text(json.dumps(config))
        for slot in range(WORKERS):
            # after an ageing, one worker runs a GC soon, while the others are at work
            self.spawn(slot=slot, gc_first=epoch > 0 and slot == 0)
        kills = [(start + 1.0 + t, target) for t, target in kill_plan]
        while time.time() < self.deadline - 1.0:
            self.watch_victims()
            for wid, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self.report.bad(f"worker w{wid} (pid {proc.pid}) exited early with "
                                    f"{proc.returncode}: {self.stderr_of(wid)[-2000:]}")
                    del self.procs[wid]
                    self.spawn(slot=self.slots[wid])
            if kills and time.time() >= kills[0][0]:
                self.kill_one(kills.pop(0)[1])
            time.sleep(0.05)
        self.watch_victims(final=True)
        self.stop()

    def stop(self) -> None:
        """Wait for this epoch's workers and reopens: afterwards no process uses the store."""
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
        self.procs.clear()
        for r in self.reopens:
            if r.done:
                continue
            r.done = True
            try:
                r.proc.wait(timeout=max(1.0, self.deadline + GRACE - time.time()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
            err = r.out.with_suffix(".err").read_text(errors="replace")
            if r.proc.returncode != 0 or "Traceback" in err:
                self.report.bad(f"the reopen after {r.after} failed ({r.proc.returncode}): "
                                f"{err[-2000:]}")
                continue
            r.result = json.loads(r.out.read_text())
            r.result["completed"] = err.count("completed the interrupted move")
            if err.strip():
                self.report.notes.append(f"reopen after {r.after}: {err.strip()[-300:]}")

    def age_chunks(self) -> None:
        """Move the atime and mtime of every file in the chunk store AGE seconds back, as if
        everything so far had happened that long ago; only while no process runs."""
        assert not self.procs and not self.victims and all(r.done for r in self.reopens)
        started = time.monotonic()
        aged = 0
        for directory, _, files in os.walk(self.store / ".chunks"):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                os.utime(path, ns=(st.st_atime_ns - AGE * 10**9, st.st_mtime_ns - AGE * 10**9))
                aged += 1
        self.ageings.append((time.time_ns(), aged, time.monotonic() - started))

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
        if op.op == "list" and op.outcome == "not-found" and op.detail["msg"] != (
                f"namespace '{BackupNamespace.parse(op.args['ns']).display()}' does not exist"):
            report.bad(f"{op.describe()}: a listing failed on something that vanished "
                       f"beneath it: {op.detail['msg']}")
        if op.op in MOVES and op.outcome == "not-found" and (
                "does not exist" not in op.detail["msg"] or "during the move" in op.detail["msg"]
                or MOVE_INTENT_DIR in op.detail["msg"]):
            report.bad(f"{op.describe()}: a move failed on something other than a missing "
                       f"source or target: {op.detail['msg']}")
        if op.op in MOVES and op.outcome == "ok" and any(
                w.startswith("kept group") for w in op.detail["warnings"]):
            report.bad(f"{op.describe()}: left snapshots behind under its locks: "
                       f"{op.detail['warnings']}")
        if op.outcome == "conflict" and not op.detail["conflicts"]:
            report.bad(f"{op.describe()}: a MoveConflict without conflicts: {op.detail}")
        if op.outcome == "not-found" and "chunk" in op.detail["msg"]:
            report.bad(f"{op.describe()}: a chunk is missing: {op.detail['msg']}")
        calls = WAITING_CALLS[op.op]
        own = OWN_WAIT.get(op.op, MANIFEST_WAIT)  # a lock's own fixed wait
        if op.elapsed > calls * op.wait + own + HANG:
            report.bad(f"{op.describe()}: took longer than any wait explains")
        if op.outcome != "busy":
            continue
        d = op.detail
        # A GC is refused by another one, named as such. The holders are read after the
        # refusal from /proc/locks, which lists every writer's shared byte too (never in
        # GC's way): when only those are named, the other GC ended in between.
        by_gc = any("garbage collection" in h["ops"] for h in d["holders"])
        gc_left = all(h["mode"] == "shared" for h in d["holders"])
        if op.op == "gc" and not (d["what"].startswith("chunk store") and (by_gc or gc_left)):
            report.bad(f"{op.describe()}: a GC refused by something other than another GC: "
                       f"{d['msg']}")
        lock_wait, extra = op.wait, 0.0
        if d["what"].startswith("manifest"):
            lock_wait = extra = MANIFEST_WAIT
        elif d["what"] == "move journal":
            lock_wait = extra = JOURNAL_WAIT
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


INF = float("inf")  # when a killed move ends: an open may complete it at any later time
GONE = None  # where a removed snapshot is


def _ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def place_keys(ns: BackupNamespace, group: str) -> list[tuple[str, ...]]:
    """The keys of the moves and removals that act on a snapshot of `group` in `ns`: its
    group, its namespace and each ancestor (the root: prunes of the whole datastore)."""
    return [("group", str(ns), group), ("ns", str(BackupNamespace()))] + [
        ("ns", str(a)) for a in [*ns.ancestors(), ns] if not a.is_root]


Place = tuple[BackupNamespace | None, bool]  # (namespace or GONE, possibly half removed)


@dataclass(frozen=True, eq=False)
class Act:
    """An operation that may change where a snapshot is: a move, or a removal of a group,
    of a namespace subtree or (a forget, or a prune that removed it) of the snapshot itself.

    It acts once, at one moment between its begin and end lines, if it succeeded (`must`);
    a killed removal acts at most once before its kill, maybe only half; a killed move acts
    at any moments from its begin on, again and again, or never (`repeat`: it died with its
    intent log, which any later open may complete, and the tree is unlocked meanwhile).
    A prune that ended is one removal per snapshot its rows say it removed; a killed one is
    a killed removal of its whole scope (group, or namespace subtree to its depth): it may
    have removed any of them. Refused, conflicting and failed operations changed nothing
    and are no Acts."""

    op: Op
    key: tuple[str, ...]
    source: BackupNamespace | None  # None: a forget
    target: BackupNamespace | None  # None: a removal
    group: str | None  # for group moves and deletes
    max_depth: int | None
    t0: int
    end: float
    must: bool
    repeat: bool
    found: tuple[str, str] | None = None  # a removal of one snapshot: where it was (ns, group)

    @classmethod
    def of(cls, op: Op) -> Act:
        a = op.args
        killed = op.outcome is None
        end: float = INF if killed and op.op in MOVES else op.end
        if op.op == "forget":
            return cls(op, ("forget", str(a["time"])), None, None, None, None, op.t0, end,
                       not killed, False, (a["ns"], a["group"]))
        source, group = _ns(a["ns"]), a.get("group")
        key = ("group", a["ns"], group) if group is not None else ("ns", a["ns"])
        target = _ns(a["target"]) if op.op in MOVES else None
        return cls(op, key, source, target, group, a.get("max_depth"), op.t0, end,
                   not killed, killed and op.op in MOVES)

    @classmethod
    def pruned(cls, op: Op, ns: str, group: str, snap_time: int) -> Act:
        """One snapshot a prune that ended removed, found in `ns`."""
        return cls(op, ("forget", str(snap_time)), None, None, None, None, op.t0, op.end,
                   True, False, (ns, group))

    @classmethod
    def all_of(cls, ops: list[Op]) -> list[Act]:
        """The Acts of every operation that may have moved or removed a snapshot."""
        acts: list[Act] = []
        for op in ops:
            if op.op in PRUNES and op.outcome == "ok":
                acts += [cls.pruned(op, *row) for row in op.detail["removed"]]
                continue
            killed_remover = op.op in REMOVERS + MOVES or (
                op.op in PRUNES and not op.args["dry_run"])
            if (op.killed_at is not None and killed_remover) or (
                    op.outcome == "ok" and op.op in REMOVERS + MOVES):
                acts.append(cls.of(op))
        return acts

    def acts_on(self, ns: BackupNamespace, group: str) -> bool:
        if self.source is None:
            return True
        if self.group is not None:
            return ns == self.source and group == self.group
        return self.source.contains(ns) and (
            self.max_depth is None or ns.depth - self.source.depth <= self.max_depth)

    def apply(self, place: Place, group: str) -> tuple[Place, ...]:
        ns, damaged = place
        if ns is None or not self.acts_on(ns, group):
            return (place,)
        if self.target is not None:
            assert self.source is not None
            return ((ns.rebase(self.source, self.target), damaged),)
        if self.must:
            return ((GONE, False),)
        return ((GONE, False), (ns, True))


class Acts:
    """Every Act, indexed by key (sorted by start), for streaming them in time order."""

    def __init__(self, acts: list[Act]) -> None:
        by_key: dict[tuple[str, ...], list[Act]] = defaultdict(list)
        for act in acts:
            by_key[act.key].append(act)
        self.by_key = {k: sorted(v, key=lambda a: a.t0) for k, v in by_key.items()}
        self.starts = {k: [a.t0 for a in v] for k, v in self.by_key.items()}
        # the longest a finished act ran; killed moves (end INF) are kept apart
        self.span = max((a.end - a.t0 for a in acts if a.end != INF), default=0)
        self.endless: dict[tuple[str, ...], list[Act]] = defaultdict(list)
        for act in acts:
            if act.end == INF:
                self.endless[act.key].append(act)
        # moves by key and by kind (target, depth), for `reach`
        self.kinds: dict[tuple[str, ...], dict[tuple[str, int | None],
                                               tuple[list[int], list[Act]]]] = {}
        for key, acts_of_key in self.by_key.items():
            for act in acts_of_key:
                if act.target is not None and act.end != INF:
                    t0s, ms = self.kinds.setdefault(key, {}).setdefault(
                        (str(act.target), act.max_depth), ([], []))
                    t0s.append(act.t0)
                    ms.append(act)

    def reach(self, ns: BackupNamespace, group: str, t: float) -> dict[BackupNamespace, float]:
        """Every namespace moves may have taken a snapshot of `group` made in `ns` from time
        `t` on, with the earliest time it could have got there (a cheap over-approximation:
        it picks the keys the exact `Fate` follows)."""
        first = {ns: t}
        heap: list[tuple[float, BackupNamespace]] = [(t, ns)]
        while heap:
            when, here = heapq.heappop(heap)
            if first[here] < when:
                continue
            for key in place_keys(here, group):
                options: list[tuple[float, Act]] = []
                for t0s, ms in self.kinds.get(key, {}).values():
                    if not ms[0].acts_on(here, group):
                        continue
                    i = bisect.bisect_left(t0s, when - self.span)
                    j = bisect.bisect_left(t0s, when)
                    early = next((m for m in ms[i:j] if m.end >= when), None)
                    if early is not None:  # begun before `when`, may act at `when`
                        options.append((when, early))
                    elif j < len(ms):
                        options.append((ms[j].t0, ms[j]))
                options += [(max(when, m.t0), m) for m in self.endless.get(key, [])
                            if m.target is not None and m.acts_on(here, group)]
                for at, m in options:
                    ((dst, _),) = m.apply((here, False), group)
                    assert dst is not None
                    if at < first.get(dst, INF):
                        first[dst] = at
                        heapq.heappush(heap, (at, dst))
        return first

    def stream(self, keys: set[tuple[str, ...]], start: float) -> Iterator[Act]:
        """The acts of `keys` that may act at `start` or later, by start time (lazily: a
        snapshot's fate is usually sealed long before the last of them)."""
        def of_key(key: tuple[str, ...]) -> Iterator[Act]:
            acts, t0s = self.by_key.get(key, []), self.starts.get(key, [])
            first = bisect.bisect_left(t0s, start - self.span)
            yield from (a for a in acts[:first] if a.end == INF)  # killed moves: endless
            for i in range(first, len(acts)):
                if acts[i].end >= start:
                    yield acts[i]

        return heapq.merge(*(of_key(k) for k in sorted(keys)), key=lambda a: a.t0)


class Fate:
    """Where one snapshot may be at the end, by trying every order in which the operations
    that could move or remove it may have acted (each at one moment of its run).

    A world is (place, acts that ran and acted already): between events, any running act
    that has not acted may act (in every order); when a finished act's end line comes, it
    has acted in every world. The snapshot appears, complete, at some moment of its backup's
    run (its locks keep every act off it until then, but another process may act on it
    before the backup's end line is written): acts begun before that end line may have acted
    before it existed, so they are optional. A world that lost the snapshot is GONE.
    """

    def __init__(self, made: Op, acts: Acts) -> None:
        self.made = made
        self.group: str = made.args["group"]
        self.origin = _ns(made.args["ns"])
        self.reach = acts.reach(self.origin, self.group, made.t0)
        self.removed_by: set[Act] = set()
        self.forget_hits: set[Act] = set()
        keys = {k for ns in self.reach for k in place_keys(ns, self.group)}
        forgets = ("forget", str(made.args["time"]))
        self.final = self._run(acts.stream(keys | {forgets}, made.t0), made.end)
        # A forget that succeeded found it where it was: in a world at that moment.
        self.forgot_elsewhere = [a for a in acts.by_key.get(forgets, [])
                                 if a.must and a not in self.forget_hits]

    def _run(self, stream: Iterator[Act], made_by: float) -> set[Place]:
        must: set[Act] = set()
        World = tuple[Place, frozenset[Act]]
        worlds: set[World] = {((self.origin, False), frozenset())}
        running: list[Act] = []
        ends: list[tuple[float, int, Act]] = []

        def close() -> None:
            frontier = list(worlds)
            while frontier:
                place, acted = frontier.pop()
                if place[0] is None:
                    continue
                for act in running:
                    if act in acted:
                        continue
                    for new in self._act(act, place):
                        nw = (new, frozenset() if new[0] is None else
                              acted if act.repeat else acted | {act})
                        if nw not in worlds:
                            worlds.add(nw)
                            frontier.append(nw)

        def finish(act: Act) -> None:
            nonlocal worlds
            close()
            if act in must:  # it acted in every world: where it has not yet, now
                forced: set[World] = set()
                for place, acted in worlds:
                    if act in acted or place[0] is None:
                        forced.add((place, acted))
                    else:
                        forced.update((new, frozenset() if new[0] is None else acted)
                                      for new in self._act(act, place))
                worlds = forced
            worlds = {(p, a - {act}) for p, a in worlds}
            running.remove(act)

        for n, act in enumerate(stream):
            while ends and ends[0][0] < act.t0:
                finish(heapq.heappop(ends)[2])
            if all(p[0] is None for p, _ in worlds):
                return {(GONE, False)}
            if act.must and act.t0 >= made_by:
                must.add(act)
            running.append(act)
            if act.end != INF:
                heapq.heappush(ends, (act.end, n, act))
        while ends:
            finish(heapq.heappop(ends)[2])
        close()
        return {p for p, _ in worlds}

    def _act(self, act: Act, place: Place) -> tuple[Place, ...]:
        if act.found is not None and act.must and place[0] == _ns(act.found[0]) \
                and act.found[1] == self.group:
            self.forget_hits.add(act)
        new = act.apply(place, self.group)
        if any(p[0] is None for p in new):
            self.removed_by.add(act)
        return new

    def places(self) -> set[BackupNamespace]:
        return {ns for ns, _ in self.final if ns is not None}

    def may_be_damaged(self, ns: BackupNamespace) -> bool:
        return (ns, True) in self.final

    @property
    def may_be_gone(self) -> bool:
        return (GONE, False) in self.final

    def removers(self) -> str:
        return "; ".join(a.op.describe() for a in sorted(self.removed_by,
                                                          key=lambda a: a.t0)[:3])


def list_everything(ds: Datastore) -> dict[int, list[tuple[str, str, bool]]]:
    """Backup time -> every (namespace, group, finished) that holds a snapshot of it."""
    found: dict[int, list[tuple[str, str, bool]]] = defaultdict(list)
    for ns in ds.iter_namespaces(BackupNamespace()):
        for group in ds.list_groups(ns):
            for info in ds.list_snapshots(ns, group):
                found[info.dir.time].append((str(ns), str(group), info.finished))
    return found


def check_snapshots(ds: Datastore, ops: list[Op], scratch: Path,
                    report: Report) -> tuple[int, int, dict[int, Fate]]:
    """The datastore against the ledgers; returns how many finished snapshots were restored,
    how many unfinished ones (left by kills) were found, and every snapshot's Fate."""
    backups = {op.args["time"]: op for op in ops if op.op == "backup"
               and (op.outcome == "ok" or op.killed_at is not None)}
    failed = {op.args["time"] for op in ops if op.op == "backup" and op.outcome not in
              (None, "ok")}
    every = Act.all_of(ops)
    acts = Acts(every)
    fates = {snap_time: Fate(made, acts) for snap_time, made in backups.items()}
    for act in every:
        if act.found is not None and act.must:
            snap_time = int(act.key[1])
            fate = fates.get(snap_time)
            if fate is None or fate.group != act.found[1] or fate.made.t0 > act.op.end:
                report.bad(f"{act.op.describe()}: removed snapshot {snap_time} of "
                           f"{act.found[1]} in '{act.found[0]}', which no backup made")
    for fate in fates.values():
        for act in fate.forgot_elsewhere:
            report.bad(f"{act.op.describe()}: removed {fate.made.describe()} in "
                       f"'{act.found[0] if act.found else '?'}', a namespace "
                       f"where it cannot have been (it may have been in "
                       f"{sorted(map(str, fate.reach))})")
    found = list_everything(ds)
    placed: dict[int, tuple[BackupNamespace, BackupGroup, bool]] = {}
    for snap_time, places in found.items():
        fate = fates.get(snap_time)
        if len(places) > 1:
            report.bad(f"snapshot time {snap_time} exists {len(places)} times: {places}")
        if fate is None:
            why = "a failed backup left it" if snap_time in failed else "no backup made it"
            report.bad(f"snapshot {snap_time} at {places}: {why}")
            continue
        made = fate.made
        ns, group, finished = _ns(places[0][0]), places[0][1], places[0][2]
        if group != fate.group:
            report.bad(f"{made.describe()}: its snapshot is in another group: {places}")
            continue
        if ns not in fate.places():
            removed = (f"; it was certainly removed by one of: {fate.removers()}"
                       if not fate.places() else "")
            report.bad(f"{made.describe()}: its snapshot is in '{ns}', but it can only be in "
                       f"{sorted(map(str, fate.places()))}{removed} (moves could take it to "
                       f"{sorted(map(str, fate.reach))})")
        placed[snap_time] = (ns, BackupGroup.parse(group), finished)
        if not finished and made.killed_at is None and not fate.may_be_damaged(ns):
            report.bad(f"{made.describe()}: left an unfinished snapshot")
    for snap_time, fate in fates.items():
        if snap_time not in found and fate.made.killed_at is None and not fate.may_be_gone:
            report.bad(f"{fate.made.describe()}: its finished snapshot is lost (it can only "
                       f"be in {sorted(map(str, fate.places()))})")
    restored = unfinished = 0
    for snap_time, (ns, bgroup, finished) in sorted(placed.items()):
        fate = fates[snap_time]
        made = fate.made
        snap = BackupDir(bgroup, snap_time)
        target = scratch / f"final-{snap_time}"
        try:
            if not finished:
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
                report.bad(f"{made.describe()}: restores {got} from '{ns}', not what was "
                           "backed up")
        except Exception as e:
            if fate.may_be_damaged(ns):
                report.notes.append(f"{made.describe()}: left half removed by a killed "
                                    f"removal: {type(e).__name__}: {e}")
            else:
                report.bad(f"{made.describe()}: final restore from '{ns}' failed: "
                           f"{type(e).__name__}: {e}")
        finally:
            shutil.rmtree(target, ignore_errors=True)
    moved = sum(1 for t, (ns, _, _) in placed.items() if str(ns) != fates[t].made.args["ns"])
    certain = sum(1 for f in fates.values() if len(f.final) == 1)
    report.notes.insert(0, f"{len(placed)} snapshots found, {moved} of them moved away from "
                        f"the namespace they were made in; the ledgers fix the fate (one place, "
                        f"or removed) of {certain} of {len(fates)} snapshots made")
    return restored, unfinished, fates


def check_maintenance(ops: list[Op], fates: dict[int, Fate], run: StressRun,
                      report: Report) -> tuple[str, int]:
    """Verify, prune and GC outcomes beyond their accounting (prune removals are Acts).

    - no verify fails a snapshot, except an unfinished one a killed backup left (its
      manifest does not load, as in PBS) and one a killed removal may have half removed;
      no chunk is ever found corrupt or missing (nothing corrupts chunks here);
    - a prune skips a snapshot only because it is locked (named holders) or gone;
    - no GC finds a bad chunk; one that ended before the first ageing, sooner after the start
      than its cutoff, removed nothing (nothing was old enough).

    Returns a line for the summary and how many chunks GCs removed."""
    for op in ops:
        if op.op == "verify" and op.outcome == "ok":
            d = op.detail
            if d["corrupt"] or d["renamed"]:
                report.bad(f"{op.describe()}: found {d['corrupt']} corrupt or missing chunk(s), "
                           f"renamed {d['renamed']}: {d['failed'][:3]}")
            for failed in d["failed"]:
                fate = fates.get(failed["time"])
                killed_backup = fate is not None and fate.made.killed_at is not None and all(
                    e.startswith("manifest load error") for e in failed["errors"])
                half_removed = fate is not None and any(
                    not a.must and a.target is None for a in fate.removed_by)
                if not (killed_backup or half_removed):
                    report.bad(f"{op.describe()}: verify failed {failed}")
        elif op.op in PRUNES and op.outcome == "ok":
            for row in op.detail["skipped"]:
                reason = row[3]
                if " is locked" in reason:
                    pids = {int(p) for p in re.findall(r"\bpid (\d+)", reason)}
                    if op.pid in pids or not pids <= set(run.pids.values()) | run.helper_pids:
                        report.bad(f"{op.describe()}: skipped {row[:3]} for a holder that is "
                                   f"itself or no worker: {reason}")
                elif "does not exist" not in reason:
                    report.bad(f"{op.describe()}: skipped {row[:3]}: {reason}")
        elif op.op == "gc" and op.outcome == "ok":
            d = op.detail
            if d["removed_bad"] or d["still_bad"]:
                report.bad(f"{op.describe()}: found bad chunks: {d}")
            first_ageing = run.ageings[0][0] if run.ageings else INF
            if op.end < first_ageing and d["removed_chunks"] and \
                    (op.end - run.started_ns) / 1e9 < op.args["cutoff"] * 60:
                report.bad(f"{op.describe()}: removed {d['removed_chunks']} chunks though "
                           f"none was older than its cutoff: {d}")
    return maintenance_summary(ops, run)


def maintenance_summary(ops: list[Op], run: StressRun) -> tuple[str, int]:
    def of(*kinds: str) -> list[Op]:
        return [op for op in ops if op.op in kinds]

    prunes = of(*PRUNES)
    pruned = [op for op in prunes if op.outcome == "ok"]
    removed = sum(len(op.detail["removed"]) for op in pruned)
    skipped = [row for op in pruned for row in op.detail["skipped"]]
    busy_rows = sum(1 for row in skipped if " is locked" in row[3])
    verifies = [op for op in of("verify") if op.outcome == "ok"]
    reasons: Counter[str] = Counter()
    for op in verifies:
        reasons.update(op.detail["skipped"])
    gcs = of("gc")
    gc_ok = [op for op in gcs if op.outcome == "ok"]
    gc_removed = sum(op.detail["removed_chunks"] for op in gc_ok)
    removing = sum(1 for op in gc_ok if op.detail["removed_chunks"])
    gc_gone = sum(1 for op in gcs if op.outcome == "busy" and not any(
        "garbage collection" in h["ops"] for h in op.detail["holders"]))
    ageings = ", ".join(f"{n} chunk files in {t:.2f} s" for _, n, t in run.ageings)
    line = (f"prunes: {len(prunes)} ran ({len(of('prune-group'))} of a group, "
            f"{len(of('prune-ds'))} of a namespace tree, "
            f"{sum(1 for op in prunes if op.args['dry_run'])} dry runs), "
            f"{sum(1 for op in prunes if op.outcome == 'busy')} refused, "
            f"{sum(1 for op in prunes if op.outcome is None)} killed; they removed {removed} "
            f"snapshots and skipped {len(skipped)} ({busy_rows} busy)\n"
            f"verifies: {len(of('verify'))} ran, {len(of('verify')) - len(verifies)} of them "
            f"found no namespace, group or snapshot to verify; snapshots "
            f"{sum(op.detail['ok'] for op in verifies)} ok, skipped {dict(reasons)}, "
            f"{sum(len(op.detail['failed']) for op in verifies)} failed (left by kills), "
            f"{sum(op.detail['chunks'] for op in verifies)} chunks verified\n"
            f"GCs: {len(gcs)} ran, {len(gc_ok)} of them to the end, "
            f"{sum(1 for op in gcs if op.outcome == 'busy')} refused by another GC ("
            f"{gc_gone} of them named no GC holder: it had ended before its holders were read), "
            f"{sum(1 for op in gcs if op.outcome is None)} killed; {removing} of them removed "
            f"{gc_removed} chunks ({sum(op.detail['removed_bytes'] for op in gc_ok)} bytes), "
            f"{sum(op.detail['pending_chunks'] for op in gc_ok)} pending; ageings: "
            f"{ageings or 'none'}")
    return line, gc_removed


def check_no_missing_chunk(store: Path, report: Report) -> str:
    """The independent checker (tools/pbs_check.py, written from the spec alone) finds every
    chunk an index references, and nothing else wrong. The test stores are sparse: its
    complaint about missing prefix directories is ignored. Returns its summary."""
    tool = REPO / "tools" / "pbs_check.py"
    result = subprocess.run([sys.executable, str(tool), "--no-chunk-scan", str(store)],
                            capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stdout.splitlines() if "prefix directories" not in line]
    if errors or result.returncode not in (0, 1):
        report.bad(f"pbs_check found {len(errors)} error(s) (exit {result.returncode}): "
                   + "\n".join(errors[:20]) + result.stderr[-2000:])
    summary = [line for line in result.stderr.splitlines() if line.startswith("pbs_check:")]
    ignored = len(result.stdout.splitlines()) - len(errors)
    return (summary[-1] if summary else "pbs_check: no summary") + (
        f" (the {ignored} about the sparse store's prefix directories ignored)")


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
                                           ArchiveSpec.parse(f"meta.conf:{meta}")], OWNER,
                    chunk_size=CHUNK_SIZE))
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
                if not op.detail["what"].startswith(("manifest", "move journal"))),
               default=0.0)
    lines.append(f"refusals: {len(busy)}, naming a holder pid: {named}, with its operation: "
                 f"{with_task}, by lock: {dict(locks)}, longest wait for one lock: "
                 f"{waited:.2f} s, most time past the waits: {over:.2f} s (slack {SLACK} s)")
    lines.append(move_summary(ops))
    for k in kills:
        how = "" if k.how == "SIGKILL" else f" (CHUNKYARD_FAULT {k.how})"
        lines.append(f"killed w{k.wid} (pid {k.pid}){how} in flight: "
                     f"{k.in_flight or 'unknown'}")
    return "\n".join(lines)


def move_summary(ops: list[Op]) -> str:
    """How many moves ran and how they ended; how often a mover refused another operation."""
    moves = [op for op in ops if op.op in MOVES]
    c = Counter(op.outcome or "killed" for op in moves)
    methods = Counter(op.detail["method"] for op in moves if op.outcome == "ok")
    with_children = sum(1 for op in moves if op.op == "move-ns" and op.outcome == "ok"
                        and len(op.detail["namespaces"]) > 1)
    by_mover = sum(1 for op in ops if op.outcome == "busy" and op.op not in MOVES and any(
        any(t.startswith("move ") for t in h["ops"]) for h in op.detail["holders"]))
    return (f"moves: {len(moves)} ran ({sum(1 for op in moves if op.op == 'move-group')} "
            f"group, {sum(1 for op in moves if op.op == 'move-ns')} namespace), {c['ok']} "
            f"succeeded ({methods['rename']} renames, {methods['merge']} merges, "
            f"{with_children} namespace moves with children), {c['busy']} refused, "
            f"{c['conflict']} conflicted, {c['not-found']} found no source or target, "
            f"{c['killed']} killed; {by_mover} other operations refused by a mover")


def final_open(run: StressRun, report: Report) -> tuple[Datastore, str]:
    """Open the datastore once every process is gone: it must complete every move that was
    cut short (no intent log is left). Returns it and a line for the summary."""
    intent_dir = run.store / MOVE_INTENT_DIR
    before = sorted(os.listdir(intent_dir)) if intent_dir.exists() else []
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("chunkyard.moves")
    logger.addHandler(handler)
    try:
        ds = Datastore.open(str(run.store), sync_level=SyncLevel.NONE)
    finally:
        logger.removeHandler(handler)
    if intent_dir.exists():
        left = {n: (intent_dir / n).read_text(errors="replace")[:600]
                for n in sorted(os.listdir(intent_dir))}
        report.bad(f"the final open left the move intent dir {MOVE_INTENT_DIR} ({left}); it "
                   f"logged: {logged}")
    interrupted = [k for k in run.kills if k.in_flight in MOVES]
    reopened = [r.result for r in run.reopens if r.result is not None]
    completed = sum(r["completed"] for r in reopened)
    from_logs = sum(run.stderr_of(w).count("completed the interrupted move")
                    for w in run.pids)
    after = sorted(os.listdir(intent_dir)) if intent_dir.exists() else []
    return ds, (f"interrupted moves: {len(interrupted)} killed mid-move; the reopens after "
                f"them found {sum(len(r['before']) for r in reopened)} intent log(s) and "
                f"completed {completed}, workers' opens completed {from_logs}, the final open "
                f"found {len(before)} and completed {len(set(before) - set(after))}"
                + (f" (it logged: {logged})" if logged else ""))


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
        kill_plan = [(t, KILL_TARGETS[i % len(KILL_TARGETS)]) for i, t in enumerate(
            t for t in (30.0 + KILL_EVERY_LONG * i for i in range(1000))
            if t < stress_seconds - 10)]
    else:
        kill_plan = [(stress_seconds * at, target) for at, target in SHORT_KILLS]
    epochs = max(2, round(stress_seconds / EPOCH_LONG)) if long_mode else SHORT_EPOCHS
    run = StressRun(tmp_path, stress_seconds, kill_plan, seed, epochs)
    run.setup()
    started = time.monotonic()
    run.run()
    ops = run.load_ops()
    report = run.report
    check_outcomes(ops, set(run.pids.values()) | run.helper_pids, report)
    ds, recovery = final_open(run, report)
    check_nothing_locked(ds, report)
    restored, unfinished, fates = check_snapshots(ds, ops, tmp_path / "scratch", report)
    maintenance, gc_removed = check_maintenance(ops, fates, run, report)
    later = check_later_backups(ds, tmp_path / "scratch", run.counter, report)
    checked = [*run.checks, check_no_missing_chunk(run.store, report)]

    table = count_table(ops, run.kills)
    summary = (f"stress: seed {seed}, {stress_seconds:.0f} s, {len(run.pids)} worker processes "
               f"({WORKERS} at a time), {len(ops)} operations, {restored} snapshots restored "
               f"at the end ({unfinished} unfinished left by kills), {later} later backups, "
               f"{time.monotonic() - started:.1f} s\n"
               f"{table}\n{maintenance}\n{recovery}\n"
               + "\n".join(f"{'at the end' if i == len(checked) - 1 else f'epoch {i + 1}'}"
                           f": {line}" for i, line in enumerate(checked)))
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
    assert any(k.in_flight in MOVES for k in run.kills), \
        f"no kill caught a move in flight: {run.kills}"
    assert restored > 0, "no snapshot survived to be restored at the end"
    assert gc_removed > 0, "no GC removed a chunk"
    assert any(op.detail["removed"] for op in ops if op.op in PRUNES and op.outcome == "ok"), \
        "no prune removed a snapshot"


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


def test_fate_tries_every_order() -> None:
    """The model behind the stress test's accounting, on hand-made ledgers."""
    group = "host/g1"

    def op(kind: str, t0: int, t1: int, outcome: str | None = "ok", **args: Any) -> Op:
        made = Op(0, 0, 0, kind, args, 0.0, t0)
        if outcome is None:
            made.killed_at = t1
        else:
            made.t1, made.outcome = t1, outcome
        return made

    def places(*others: Op, made: Op | None = None) -> set[str]:
        made = made or op("backup", 0, 10, ns="a", group=group, time=1)
        fate = Fate(made, Acts([Act.of(o) for o in others]))
        return {"GONE" if ns is None else str(ns) + ("~" if damaged else "")
                for ns, damaged in fate.final}

    a_to_d = op("move-ns", 20, 30, ns="a", target="d")
    assert places() == {"a"}
    assert places(a_to_d) == {"d"}
    assert places(op("move-ns", 5, 30, ns="a", target="d")) == {"a", "d"}  # before it existed?
    assert places(op("move-ns", 5, 8, ns="a", target="d")) == {"a", "d"}  # before its end line
    assert places(op("move-ns", -5, -1, ns="a", target="d")) == {"a"}
    assert places(a_to_d, op("move-group", 25, 35, ns="a", group=group, target="e")) == \
        {"d", "e"}  # either order
    assert places(op("move-ns", 20, 30, None, ns="a", target="d")) == {"a", "d"}  # killed
    # killed long before: completed by any later open
    assert places(op("move-ns", 20, 30, ns="a", target="e"),
                  op("move-ns", -900, -800, None, ns="a", target="d")) == {"d", "e"}
    assert places(a_to_d, op("delete-ns", 40, 50, ns="d")) == {"GONE"}
    assert places(a_to_d, op("delete-ns", 25, 50, ns="a")) == {"GONE", "d"}
    assert places(op("delete-group", 20, 30, None, ns="a", group=group)) == \
        {"GONE", "a", "a~"}  # a killed delete: maybe not, maybe half
    assert places(a_to_d, op("move-ns", 40, 50, ns="d", target="e"),
                  op("move-ns", 60, 70, ns="e", target="a")) == {"a"}
    deep = op("backup", 0, 10, ns="a/b", group=group, time=1)
    assert places(op("move-ns", 20, 30, ns="a", target="d", max_depth=0), made=deep) == {"a/b"}
    assert places(op("move-ns", 20, 30, ns="a", target="d", max_depth=1), made=deep) == {"d/b"}
    wrong = op("forget", 40, 50, ns="a", group=group, time=1)
    fate = Fate(op("backup", 0, 10, ns="a", group=group, time=1),
                Acts([Act.of(a_to_d), Act.of(wrong)]))
    assert [a.op for a in fate.forgot_elsewhere] == [wrong]  # it was in 'd' by then

    def prune(kind: str, t0: int, t1: int, outcome: str | None = "ok",
              removed: tuple[str, ...] = (), **args: Any) -> Op:
        made = op(kind, t0, t1, outcome, dry_run=False, **args)
        made.detail = {"removed": [[ns, group, 1] for ns in removed]}
        return made

    def pruned(*prunes: Op) -> set[str]:
        made = op("backup", 0, 10, ns="a", group=group, time=1)
        fate = Fate(made, Acts(Act.all_of([a_to_d, *prunes])))
        assert not fate.forgot_elsewhere
        return {"GONE" if ns is None else str(ns) + ("~" if damaged else "")
                for ns, damaged in fate.final}

    # rows say what a prune removed; one that did not name it changed nothing
    assert pruned(prune("prune-group", 40, 50, removed=("d",), ns="d", group=group)) == \
        {"GONE"}
    assert pruned(prune("prune-ds", 40, 50, removed=("d",), ns="", max_depth=None)) == \
        {"GONE"}
    assert pruned(prune("prune-ds", 40, 50, ns="", max_depth=None)) == {"d"}
    assert pruned(prune("prune-ds", 25, 50, removed=("a",), ns="a", max_depth=0)) == \
        {"GONE"}  # before the move
    # a killed prune may have removed (half) anything in its scope, and nothing outside
    assert pruned(prune("prune-ds", 40, 50, None, ns="", max_depth=None)) == \
        {"GONE", "d", "d~"}
    assert pruned(prune("prune-ds", 40, 50, None, ns="", max_depth=0)) == {"d"}
    assert pruned(prune("prune-group", 40, 50, None, ns="a", group=group)) == {"d"}
    misplaced = prune("prune-group", 40, 50, removed=("a",), ns="a", group=group)
    fate = Fate(op("backup", 0, 10, ns="a", group=group, time=1),
                Acts(Act.all_of([a_to_d, misplaced])))
    assert [a.op for a in fate.forgot_elsewhere] == [misplaced]

