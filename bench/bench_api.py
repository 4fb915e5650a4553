"""The HTTP API under load: 50 concurrent clients listing and downloading from a real
`chunkyard serve` (plain HTTP on loopback), with and without maintenance running.

Set-up (untimed): a data directory with the embedded default store `store1` holding the
namespaces root, `a`, `a/b`, `c`, `m`, `m/x` (--groups groups spread over these six, each with
three real small backups made by `run_backup`: a 32 KiB random file and a text file) and
`prune` (5 groups x 4 snapshots); an API token `admin@pbs!tok` with Admin on `/`. Then the
server runs as a subprocess (`--sparse-datastore --auth-failure-delay 0`).

Clients: one separate process runs --clients asyncio tasks, each with its own
`httpx.AsyncClient` (one keep-alive connection), in a closed loop without think time: pick a
request at random, send it, read the whole body, record (kind, status, latency), repeat. The
mix (weights): `groups` 20, `snapshots` 20 (half of them filtered to one group), `namespace`
10, `files` 10, `download` 30 (the manifest `index.json.blob` or the index `root.tar.didx`,
raw), `download-decoded` 10 (the tar reassembled from its chunks, ~40 KiB). Targets come from
the catalogue made at set-up; the client process's CPU time is measured (os.times) so one can
tell whether the client side was the bottleneck.

Conditions, each for --seconds after a short warm-up, alternated in order between runs:

- **baseline**: the clients alone;
- **maintenance**: a driver process (its own connection, ticket auth, task status polled every
  100 ms) loops, waiting for each task to end: move namespace `m` -> `m2`; move group `c`:G0
  -> `a`; prune-datastore ns=`prune` keep-last=1 (not a dry run); move `m2` -> `m`; move the
  group back; GC; then refills `prune` with 3 new snapshots per group (run_backup in the driver
  process, outside the API, as a backup client would). It stops starting steps at the end of
  the phase and always moves things back, so every phase starts from the same layout.

Expected 404s: a request naming `m`, `m/x`, `m2` or the moving group while it is elsewhere
gets 404 (PBS does the same); these are counted as "races", separately from errors. Every
other non-200 answer, every transport error and every truncated body is an error.

Authentication (--auth, default both): `token` sends `Authorization: PBSAPIToken=...` on
every request (as the issue asks); `ticket` sends the `PBSAuthCookie` of a login. They differ
a lot because verifying a token secret is an scrypt hash (N=2^14) on every request.

    python bench/bench_api.py [--seconds S] [--runs N] [--clients C] [--groups G]
                              [--auth token,ticket] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.config import ConfigDir
from chunkyard.config.accounts import create_token
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.names import Authid, BackupGroup, BackupNamespace, BackupType
from chunkyard.server.state import DataDir, ensure_defaults

HERE = Path(__file__).resolve().parent
PASSWORD = "correct horse battery"
API = "/api2/json"
STORE = "store1"
DS = f"{API}/admin/datastore/{STORE}"
OWNER = Authid.parse("root@pam")
T0 = 1_700_000_000
LISTED_NS = ["", "a", "a/b", "c", "m", "m/x"]
MOVING_NS = {"m", "m/x", "m2", "m2/x"}
PRUNE_GROUPS = 5
CTX = multiprocessing.get_context("fork")
KINDS = ["groups", "snapshots", "namespace", "files", "download", "download-decoded"]
WEIGHTS = [20, 20, 10, 10, 30, 10]


def ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def group_of(i: int) -> BackupGroup:
    return BackupGroup([BackupType.HOST, BackupType.CT, BackupType.VM][i % 3], f"g{i}")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


# -- set-up ---------------------------------------------------------------------------------

def make_tree(path: Path, seed: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.bin").write_bytes(random.Random(seed).randbytes(32 * 1024))
    (path / "notes.txt").write_text(f"tree {seed}\n" * 50)


def do_backup(ds: Datastore, tree: Path, namespace: str, group: BackupGroup, when: int) -> None:
    req = BackupRequest(namespace=ns(namespace), group=group, backup_time=when,
                        archives=[ArchiveSpec.parse(f"root.tar:{tree}")], owner=OWNER)
    run_backup(ds, req)


@dataclass
class Catalog:
    snapshots: list[tuple[str, BackupGroup, int]]  # (ns, group, backup time)
    moving_group: BackupGroup  # in `c`, moved to `a` and back


def prepare(data: Path, work: Path, groups: int) -> tuple[str, Catalog]:
    """The data directory; returns the token (`authid:secret`) and the catalogue."""
    ensure_defaults(DataDir(str(data)), sparse=True,
                    environ={"CHUNKYARD_ADMIN_PASSWORD": PASSWORD})
    cfg = ConfigDir(data / "etc")
    cfg.update_acl(lambda acl: acl.insert("/", "admin@pbs!tok", "Admin", True))
    secret = create_token(cfg, Authid.parse("admin@pbs!tok"))
    ds = Datastore.open(str(data / STORE))
    for name in ("a", "a/b", "c", "m", "m/x", "prune"):
        create_namespace(ds, ns(name))
    snaps: list[tuple[str, BackupGroup, int]] = []
    for i in range(groups):
        tree = work / "trees" / f"g{i}"
        where = LISTED_NS[i % len(LISTED_NS)]
        for k in range(3):
            make_tree(tree, i * 10 + k)
            do_backup(ds, tree, where, group_of(i), T0 + 3600 * k)
            snaps.append((where, group_of(i), T0 + 3600 * k))
    for i in range(PRUNE_GROUPS):
        tree = work / "trees" / f"p{i}"
        for k in range(4):
            make_tree(tree, 100_000 + i * 10 + k)
            do_backup(ds, tree, "prune", group_of(i), T0 + 3600 * k)
    moving = group_of(LISTED_NS.index("c"))
    return f"admin@pbs!tok:{secret}", Catalog(snaps, moving)


# -- the server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data: Path, out: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [sys.executable, "-m", "chunkyard.cli.main", "serve", "--data-dir", str(data),
            "--http", "--listen", f"127.0.0.1:{port}", "--sparse-datastore",
            "--auth-failure-delay", "0"]
    env = {**os.environ, "CHUNKYARD_ADMIN_PASSWORD": PASSWORD}
    with open(out, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}: {out.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {out.read_text()}")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (and its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def login(base: str) -> tuple[str, str]:
    r = httpx.post(base + API + "/access/ticket",
                   data={"username": "admin@pbs", "password": PASSWORD}, timeout=30)
    r.raise_for_status()
    data = r.json()["data"]
    return data["ticket"], data["CSRFPreventionToken"]


# -- the clients ----------------------------------------------------------------------------

# kind, status (0: transport error, -1: truncated body), seconds, volatile, start (monotonic)
Sample = tuple[str, int, float, bool, float]
Step = tuple[str, float, float, str]  # maintenance step, start, end (monotonic), exit status


def request_for(rng: random.Random, cat: Catalog) -> tuple[str, str, dict[str, Any], bool]:
    """(kind, path, params, volatile): volatile = may 404 because a move is under way."""
    kind = rng.choices(KINDS, WEIGHTS)[0]
    if kind in ("groups", "snapshots", "namespace"):
        where = rng.choice([*LISTED_NS, "prune"])
        volatile = where in MOVING_NS
        if kind == "namespace":
            return kind, f"{DS}/namespace", {"parent": where}, volatile
        if kind == "groups":
            return kind, f"{DS}/groups", {"ns": where}, volatile
        params: dict[str, Any] = {"ns": where}
        if rng.random() < 0.5:
            group = rng.choice([s for s in cat.snapshots[:60] if s[0] == where]
                               or cat.snapshots[:1])[1]
            params.update({"backup-type": group.type.value, "backup-id": group.id})
            volatile = volatile or (where == "c" and group == cat.moving_group)
        return kind, f"{DS}/snapshots", params, volatile
    where, group, when = rng.choice(cat.snapshots)
    volatile = where in MOVING_NS or (where == "c" and group == cat.moving_group)
    params = {"ns": where, "backup-type": group.type.value, "backup-id": group.id,
              "backup-time": when}
    if kind == "files":
        return kind, f"{DS}/files", params, volatile
    if kind == "download":
        params["file-name"] = rng.choice(["index.json.blob", "root.tar.didx"])
        return kind, f"{DS}/download", params, volatile
    params["file-name"] = "root.tar.didx"
    return kind, f"{DS}/download-decoded", params, volatile


async def one_client(seed: int, base: str, headers: dict[str, str], cookies: dict[str, str],
                     cat: Catalog, deadline: float, out: list[Sample]) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base, headers=headers, cookies=cookies,
                                 limits=limits, timeout=60) as client:
        while time.monotonic() < deadline:
            kind, path, params, volatile = request_for(rng, cat)
            started = time.monotonic()
            t = time.perf_counter()
            try:
                r = await client.get(path, params=params)
                await r.aread()
                status = r.status_code
                if status == 200 and "content-length" in r.headers and \
                        len(r.content) != int(r.headers["content-length"]):
                    status = -1  # truncated body
            except httpx.HTTPError:
                status = 0
            out.append((kind, status, time.perf_counter() - t, volatile, started))


def client_process(conn: multiprocessing.connection.Connection, base: str,
                   auth: dict[str, Any], cat: Catalog, clients: int, warmup: float,
                   seconds: float, seed: int) -> None:
    async def main() -> list[Sample]:
        out: list[Sample] = []
        start = time.monotonic()
        await asyncio.gather(*(one_client(seed * 1000 + i, base, auth["headers"],
                                          auth["cookies"], cat, start + warmup, [])
                               for i in range(clients)))
        conn.send("measuring")
        await asyncio.gather(*(one_client(seed * 1000 + 500 + i, base, auth["headers"],
                                          auth["cookies"], cat,
                                          time.monotonic() + seconds, out)
                               for i in range(clients)))
        return out

    t0 = os.times()
    w0 = time.monotonic()
    samples = asyncio.run(main())
    t1 = os.times()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    conn.send((samples, cpu / (time.monotonic() - w0)))


# -- the maintenance driver -----------------------------------------------------------------

def driver_process(conn: multiprocessing.connection.Connection, base: str, data: Path,
                   work: Path, cat: Catalog, stop_at: float, seed: int) -> None:
    ticket, csrf = login(base)
    client = httpx.Client(base_url=base, cookies={"PBSAuthCookie": ticket},
                          headers={"CSRFPreventionToken": csrf}, timeout=60)
    ds = Datastore.open(str(data / STORE))
    tasks: list[Step] = []
    g = cat.moving_group
    gparams = {"backup-type": g.type.value, "backup-id": g.id}

    def task(step: str, path: str, params: dict[str, Any]) -> None:
        t = time.monotonic()
        r = client.post(DS + path, data=params)
        if r.status_code != 200:
            tasks.append((step, t, time.monotonic(), f"HTTP {r.status_code}: {r.text}"))
            return
        upid = r.json()["data"]
        while True:
            s = client.get(f"{API}/nodes/localhost/tasks/{upid}/status").json()["data"]
            if s["status"] == "stopped":
                break
            time.sleep(0.1)
        tasks.append((step, t, time.monotonic(), s["exitstatus"]))

    refill = 0

    def refill_prune() -> None:
        nonlocal refill
        t = time.monotonic()
        refill += 1
        when = 2_000_000_000 + seed * 100_000 + refill * 10  # newer than all before
        for i in range(PRUNE_GROUPS):
            tree = work / "trees" / f"p{i}"
            for k in range(3):
                make_tree(tree, seed * 1_000_000 + refill * 100 + i * 10 + k)
                do_backup(ds, tree, "prune", group_of(i), when + k)
        tasks.append(("refill prune", t, time.monotonic(), "OK"))

    steps: list[Callable[[], None]] = [
        lambda: task("move-namespace", "/move-namespace", {"ns": "m", "target-ns": "m2"}),
        lambda: task("move-group", "/move-group", {"ns": "c", "target-ns": "a", **gparams}),
        lambda: task("prune-datastore", "/prune-datastore",
                     {"ns": "prune", "keep-last": 1, "dry-run": "false"}),
        lambda: task("move-namespace", "/move-namespace", {"ns": "m2", "target-ns": "m"}),
        lambda: task("move-group", "/move-group", {"ns": "a", "target-ns": "c", **gparams}),
        lambda: task("gc", "/gc", {}),
        refill_prune,
    ]
    conn.recv()  # the clients are measuring
    t0 = os.times()
    w0 = time.monotonic()
    i = 0
    while time.monotonic() < stop_at or i % len(steps) in (1, 2, 3, 4):  # move back
        t = time.monotonic()
        try:
            steps[i % len(steps)]()
        except Exception as e:  # reported as a failed step; the loop goes on
            tasks.append((f"step {i % len(steps)}", t, time.monotonic(), repr(e)))
        i += 1
    t1 = os.times()
    cpu = (t1.user - t0.user) + (t1.system - t0.system)
    conn.send((tasks, cpu / (time.monotonic() - w0)))


# -- one phase, runs, report ----------------------------------------------------------------

@dataclass
class Phase:
    samples: list[Sample]
    seconds: float
    client_cpu: float
    server_cpu: float
    driver_cpu: float
    tasks: list[Step]


def run_phase(base: str, server_pid: int, auth: dict[str, Any], cat: Catalog,
              maintenance: bool, args: argparse.Namespace, data: Path, work: Path,
              seed: int) -> Phase:
    warmup = 2.0
    parent, child = CTX.Pipe()
    cproc = CTX.Process(target=client_process, args=(child, base, auth, cat, args.clients,
                                                     warmup, args.seconds, seed))
    cproc.start()
    child.close()  # a dead child ends recv() with EOFError instead of a hang
    assert parent.recv() == "measuring"
    s0, w0 = proc_cpu(server_pid), time.monotonic()
    dproc = None
    if maintenance:
        dparent, dchild = CTX.Pipe()
        dproc = CTX.Process(target=driver_process,
                            args=(dchild, base, data, work, cat, time.monotonic() + args.seconds,
                                  seed))
        dproc.start()
        dchild.close()
        dparent.send("go")
    samples, client_cpu = parent.recv()
    server_cpu = (proc_cpu(server_pid) - s0) / (time.monotonic() - w0)
    cproc.join()
    tasks: list[Step] = []
    driver_cpu = 0.0
    if dproc is not None:
        tasks, driver_cpu = dparent.recv()
        dproc.join()
    return Phase(samples, args.seconds, client_cpu, server_cpu, driver_cpu, tasks)


def summarize(phase: Phase) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for kind in [*KINDS, "all"]:
        mine = [s for s in phase.samples if kind in ("all", s[0])]
        ok = [s[2] * 1000 for s in mine if s[1] == 200]
        races = sum(1 for s in mine if s[1] == 404 and s[3])
        errors = len(mine) - len(ok) - races
        rows[kind] = {"n": len(mine), "rate": len(mine) / phase.seconds,
                      "p50": pct(ok, 0.50), "p95": pct(ok, 0.95), "p99": pct(ok, 0.99),
                      "max": max(ok, default=float("nan")), "races": races,
                      "errors": errors}
    return rows


def by_step(phases: list[Phase]) -> dict[str, tuple[float, float, int]]:
    buckets: dict[str, list[float]] = {}
    for phase in phases:
        spans = sorted((start, end, step) for step, start, end, _ in phase.tasks)
        for _, status, secs, _, started in phase.samples:
            if status != 200:
                continue
            step = next((name for a, b, name in spans if a <= started < b), "between steps")
            buckets.setdefault(step, []).append(secs * 1000)
    return {k: (pct(v, 0.5), pct(v, 0.99), len(v)) for k, v in sorted(buckets.items())}


def error_detail(phases: list[Phase]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for phase in phases:
        for kind, status, _, volatile, _ in phase.samples:
            if status == 200 or (status == 404 and volatile):
                continue
            key = f"{kind} {status}{' (volatile target)' if volatile else ''}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def report(label: str, phases: list[Phase]) -> None:
    per_run = [summarize(p) for p in phases]
    print(f"\n### {label} — median over {len(phases)} run(s); latency of 200s in ms\n")
    print("| kind | req/s | p50 | p95 | p99 | max | 404 races | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in [*KINDS, "all"]:
        def med(key: str, rows: list[dict[str, dict[str, float]]] = per_run,
                k: str = kind) -> float:
            return statistics.median(r[k][key] for r in rows)
        races = sum(int(r[kind]["races"]) for r in per_run)
        errors = sum(int(r[kind]["errors"]) for r in per_run)
        name = f"**{kind}**" if kind == "all" else kind
        print(f"| {name} | {med('rate'):.1f} | {med('p50'):.1f} | {med('p95'):.1f} | "
              f"{med('p99'):.1f} | {med('max'):.0f} | {races} | {errors} |")
    print(f"\n(404 races and errors: totals over the runs; requests: "
          f"{sum(len(p.samples) for p in phases)})")
    cpu = (f"CPU, median (fraction of one core): clients "
           f"{statistics.median(p.client_cpu for p in phases):.2f}, server "
           f"{statistics.median(p.server_cpu for p in phases):.2f}")
    if any(p.tasks for p in phases):
        cpu += f", driver {statistics.median(p.driver_cpu for p in phases):.2f}"
    print(cpu)
    tasks = [t for p in phases for t in p.tasks]
    if tasks:
        steps: dict[str, list[float]] = {}
        for step, start, end, _ in tasks:
            steps.setdefault(step, []).append((end - start) * 1000)
        print("maintenance steps (count, median ms, max ms): " + "; ".join(
            f"{k} {len(v)}, {statistics.median(v):.0f}, {max(v):.0f}"
            for k, v in steps.items()))
        failed = [t for t in tasks if t[3] != "OK"]
        print(f"maintenance steps not OK: {len(failed)}")
        for step, _, _, status in failed[:10]:
            print(f"  {step}: {status}")
    if tasks:
        print("latency (ms) of requests by the maintenance step running when they started "
              "(p50 / p99, n): " + "; ".join(
                  f"{k} {v[0]:.0f} / {v[1]:.0f}, {v[2]}" for k, v in by_step(phases).items()))
    detail = error_detail(phases)
    if detail:
        print("errors by kind and status (0 = transport error, -1 = truncated body): "
              + ", ".join(f"{k}: {v}" for k, v in sorted(detail.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--groups", type=int, default=120)
    parser.add_argument("--auth", default="token,ticket")
    parser.add_argument("--dir", default=str(HERE / "work"))
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="api-", dir=args.dir))
    data, work = root / "data", root / "work"
    t = time.monotonic()
    token, cat = prepare(data, work, args.groups)
    print(f"set-up: {args.groups} groups, {len(cat.snapshots)} snapshots + "
          f"{PRUNE_GROUPS * 4} to prune, {time.monotonic() - t:.1f} s")
    proc, base = start_server(data, root / "server.out")
    try:
        ticket, _ = login(base)
        auths = {"token": {"headers": {"Authorization": f"PBSAPIToken={token}"},
                           "cookies": {}},
                 "ticket": {"headers": {}, "cookies": {"PBSAuthCookie": ticket}}}
        results: dict[tuple[str, bool], list[Phase]] = {}
        seed = 1
        for run in range(args.runs):
            for name in args.auth.split(","):
                order = [False, True] if run % 2 == 0 else [True, False]
                for maintenance in order:
                    seed += 1
                    phase = run_phase(base, proc.pid, auths[name], cat, maintenance,
                                      args, data, work, seed)
                    results.setdefault((name, maintenance), []).append(phase)
                    s = summarize(phase)["all"]
                    what = "maintenance" if maintenance else "baseline"
                    print(f"run {run + 1} {name:6} {what:11} {s['rate']:.0f} req/s p50 "
                          f"{s['p50']:.1f} p99 {s['p99']:.1f} ms,"
                          f" races {s['races']:.0f}, errors {s['errors']:.0f}", flush=True)
        for (name, maintenance), phases in results.items():
            report(f"{name} auth, {'maintenance' if maintenance else 'baseline'}", phases)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        output = (root / "server.out").read_text()
        tracebacks = output.count("Traceback")
        print(f"\nserver exit code {code}; tracebacks in its output: {tracebacks}; "
              f"'internal error' lines: {output.count('internal error')}")
        if tracebacks:
            print(output[-4000:])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
