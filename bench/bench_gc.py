"""Garbage collection over a million small chunks: mark and sweep next to bare-loop floors.

The data set (built once, reused by every repetition): a datastore made by
`Datastore.create` (all 65,536 prefix directories) holding --chunks referenced chunks of
--min-size..--max-size bytes of seeded random data (stored as uncompressed DataBlobs, so each
file takes one 4 KiB block), referenced by --snapshots snapshots (in --groups groups), each
with a real manifest and one `root.pxar.didx` of --chunks / --snapshots distinct chunks, plus
--garbage x --chunks unreferenced chunks whose atime (and mtime) is two days old, which the
sweep removes. Chunk files are written directly in the chunk store's layout (what
`ChunkStore.insert` would write, minus its temp file and rename) to keep the build short.

Every repetition times, in this order and on the same files:

- **stat floor** (the issue's floor): a bare C loop (`bench/floor_gc.c`, built with gcc -O2)
  that lstat()s every chunk file once, from a precomputed list of paths; the same loop in
  Python (`os.stat`) is shown beside it;
- **scan floor**: C, readdir of the 65,536 prefix directories and an lstat of every entry:
  the least a sweep does;
- **touch floor**: C, utimensat(atime = now, mtime omitted) of every referenced chunk once,
  in index order: the least a mark does;
- **GC**: `garbage_collection` as the CLI and the server call it (atime safety check off: it
  sleeps 1-2 s and is not per chunk), its two phases timed through its progress callback
  (the sweep reports its start): **mark** (walk, read and decode the indexes, touch every
  referenced chunk) and **sweep** (survey every prefix directory; remove the garbage: rename
  aside, re-stat, unlink);
- **GC again** right after (the garbage is gone): mark, and the sweep's cost per chunk kept
  without removals;
- **unlink floor**: C, the scan plus an unlink of every chunk whose atime is older than the
  cutoff (the garbage is recreated, untimed, before it).

The garbage is recreated (untimed, then synced: unlinking a file whose blocks are not yet
allocated is much cheaper than removing an old chunk) before each repetition. A repetition in
which the sweep or the unlink floor did not remove exactly the garbage (another process read
chunk files meanwhile: with relatime, reading a file whose atime is over a day old updates it)
is reported as disturbed and run again. `--cold` drops the page, dentry
and inode caches (`sync; echo 3 > /proc/sys/vm/drop_caches`, needs root) before every timed
step; by default the caches are warm (the data set fits in memory).

    python bench/bench_gc.py [--chunks N] [--garbage F] [--snapshots S] [--groups G]
                             [--min-size B] [--max-size B] [--runs R] [--cold]
                             [--profile] [--dir DIR] [--keep]

The datastore goes to DIR/gc-store (default bench/work, gitignored) and is removed at the end
unless --keep; a kept store whose parameters match is reused by the next run. Lock files go to
a fresh directory under /dev/shm.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chunkyard.datastore.chunk_store import PREFIX_COUNT
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.maintenance import gc
from chunkyard.formats.blob import encode_chunk
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace
from scratch_store import add_store_options, drop_caches, say, scratch_store

HERE = Path(__file__).resolve().parent
OWNER = Authid.parse("root@pam")
T0 = 1_700_000_000
DAY = 86400
ROOT = BackupNamespace()
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

# -- the data set ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Params:
    chunks: int
    garbage: int
    snapshots: int
    groups: int
    min_size: int
    max_size: int
    seed: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def chunk_stream(seed: int, count: int, lo: int, hi: int) -> Iterator[tuple[bytes, bytes, int]]:
    """(digest, encoded DataBlob, data size) of `count` seeded random chunks."""
    rng = random.Random(seed)
    for _ in range(count):
        data = rng.randbytes(rng.randint(lo, hi))
        digest, encoded = encode_chunk(data)
        yield digest, encoded, len(data)


def chunk_path(chunks_dir: str, digest: bytes) -> str:
    h = digest.hex()
    return f"{chunks_dir}/{h[:4]}/{h}"


def write_chunk(path: str, encoded: bytes) -> bool:
    """Create a chunk file; False if it exists (a duplicate digest)."""
    try:
        fd = os.open(path, WRITE_FLAGS, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, encoded)
    finally:
        os.close(fd)
    return True



def group_of(g: int) -> BackupGroup:
    return BackupGroup.parse(f"host/g{g:03d}")


def build(store: str, p: Params) -> None:
    """The datastore with referenced chunks, indexes, manifests (garbage comes later)."""
    t = time.perf_counter()
    say(f"building {store}: Datastore.create (65,536 prefix dirs) ...")
    ds = Datastore.create(store)
    chunks_dir = os.path.join(store, ".chunks")
    per_snap = p.chunks // p.snapshots
    snaps_per_group = -(-p.snapshots // p.groups)
    stream = chunk_stream(p.seed, p.chunks, p.min_size, p.max_size)
    for s in range(p.snapshots):
        count = per_snap if s < p.snapshots - 1 else p.chunks - per_snap * (p.snapshots - 1)
        ends: list[int] = []
        digests: list[bytes] = []
        end = 0
        for _ in range(count):
            digest, encoded, size = next(stream)
            write_chunk(chunk_path(chunks_dir, digest), encoded)
            end += size
            ends.append(end)
            digests.append(digest)
        group = group_of(s // snaps_per_group)
        snap = BackupDir(group, T0 + (s % snaps_per_group) * 3600)
        if s % snaps_per_group == 0:
            ds.make_group_dir(ROOT, group, OWNER)
        ds.make_snapshot_dir(ROOT, snap)
        index = DynamicIndex.from_chunks(ends, digests, uuid=s.to_bytes(16, "big"), ctime=T0)
        ds.write_index_file(ROOT, snap, "root.pxar.didx", index.encode())
        ds.write_manifest(ROOT, snap, BackupManifest(
            group.type.value, group.id, snap.time,
            [FileInfo.for_index("root.pxar.didx", index, "none")]))
        if (s + 1) % max(1, p.snapshots // 10) == 0 or s == p.snapshots - 1:
            say(f"  {s + 1}/{p.snapshots} snapshots, {(s + 1) * per_snap:,} chunks, "
                f"{time.perf_counter() - t:.0f} s")
    say("  sync ...")
    os.sync()
    say(f"built in {time.perf_counter() - t:.0f} s")


def garbage_chunks(p: Params) -> list[tuple[str, bytes]]:
    """(relative key, encoded) of the garbage chunks (a seed of their own)."""
    return [(f"{d.hex()[:4]}/{d.hex()}", enc)
            for d, enc, _ in chunk_stream(p.seed + 1, p.garbage, p.min_size, p.max_size)]


def make_garbage(chunks_dir: str, garbage: list[tuple[str, bytes]]) -> int:
    """Write the garbage chunks that are missing, with atime and mtime two days ago, and sync:
    unlinking a file whose pages are still being written back waits for the writeback (a
    first trial measured 0.5 ms per unlink), which is not what a GC of old chunks meets."""
    old = time.time_ns() - 2 * DAY * 1_000_000_000
    made = 0
    for key, encoded in garbage:
        path = f"{chunks_dir}/{key}"
        if write_chunk(path, encoded):
            made += 1
        os.utime(path, ns=(old, old))
    os.sync()
    return made


def referenced_paths(ds: Datastore) -> list[bytes]:
    """Every referenced chunk's path, in index order (each index once)."""
    out: list[bytes] = []
    chunks_dir = os.path.join(ds.path, ".chunks")
    for key in ds.find_index_files() or []:
        index = DynamicIndex.decode(ds.backend.read(key))
        out.extend(os.fsencode(chunk_path(chunks_dir, d)) for d in index.iter_digests())
    return out


def all_paths(chunks_dir: str) -> list[str]:
    out: list[str] = []
    for i in range(PREFIX_COUNT):
        prefix = f"{chunks_dir}/{i:04x}"
        out.extend(f"{prefix}/{name}" for name in sorted(os.listdir(prefix)))
    return out


# -- the floors ------------------------------------------------------------------------------

FLOOR_SRC = HERE / "floor_gc.c"


def build_floor(work: Path) -> Path:
    """Compile bench/floor_gc.c (gcc -O2) into the work directory."""
    exe = work / "floor_gc"
    if not exe.exists() or exe.stat().st_mtime < FLOOR_SRC.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(FLOOR_SRC)], check=True)
    return exe


def c_floor(exe: Path, *args: str) -> tuple[float, int]:
    """(seconds, count) of one C floor loop, as the program timed it."""
    out = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout
    count, seconds = out.split()
    return float(seconds), int(count)


def python_stat(paths: list[str]) -> tuple[float, int]:
    stat = os.stat
    t = time.perf_counter()
    for path in paths:
        stat(path, follow_symlinks=False)
    return time.perf_counter() - t, len(paths)


# -- GC, as the CLI and the server call it ---------------------------------------------------

def run_gc(ds: Datastore, profile: cProfile.Profile | None = None
           ) -> tuple[float, float, gc.GcStatus]:
    """(mark seconds, sweep seconds, status) of one `garbage_collection`; the sweep's first
    progress report (at its start) divides the phases."""
    sweep_start: list[float] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "sweep" and not sweep_start:
            sweep_start.append(time.perf_counter())

    options = gc.GcOptions(atime_safety_check=False)
    if profile is not None:
        profile.enable()
    t0 = time.perf_counter()
    status = gc.garbage_collection(ds, options=options, progress=progress)
    t2 = time.perf_counter()
    if profile is not None:
        profile.disable()
    return sweep_start[0] - t0, t2 - sweep_start[0], status


# -- driver ----------------------------------------------------------------------------------



def timed(fn: Callable[[], int], cold: bool) -> tuple[float, int]:
    if cold:
        drop_caches()
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def fmt_rate(n: int, s: float) -> str:
    return f"{n / s / 1000:,.0f}k/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--chunks", type=int, default=1_000_000,
                    help="referenced chunks (default %(default)s)")
    ap.add_argument("--garbage", type=float, default=0.1,
                    help="unreferenced old chunks, as a fraction of --chunks (default %(default)s)")
    ap.add_argument("--snapshots", type=int, default=100, help="default %(default)s")
    ap.add_argument("--groups", type=int, default=10, help="default %(default)s")
    ap.add_argument("--min-size", type=int, default=64, help="chunk bytes (default %(default)s)")
    ap.add_argument("--max-size", type=int, default=256, help="chunk bytes (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported")
    ap.add_argument("--cold", action="store_true",
                    help="drop caches before every timed step (root)")
    ap.add_argument("--profile", action="store_true",
                    help="one more GC under cProfile; print where mark and sweep spend time")
    add_store_options(ap)
    args = ap.parse_args()

    p = Params(args.chunks, int(args.chunks * args.garbage), args.snapshots, args.groups,
               args.min_size, args.max_size, args.seed)
    started = time.perf_counter()
    with scratch_store(args.dir, "gc-store", p.as_dict(), lambda path: build(path, p),
                       keep=args.keep) as store:
        bench(store, p, args)
    say(f"total {time.perf_counter() - started:.0f} s")


STEPS = {
    "stat": "floor: lstat every chunk (C)",
    "pystat": "lstat every chunk (Python os.stat loop)",
    "scan": "floor: readdir + lstat (C; the least a sweep does)",
    "touch": "floor: utimensat referenced (C; the least a mark does)",
    "unlink": "floor: readdir + lstat + unlink garbage (C)",
    "mark": "**GC mark**",
    "sweep": "**GC sweep** (removes the garbage)",
    "mark-again": "**GC mark**, again",
    "sweep-clean": "**GC sweep**, nothing to remove",
}


def bench(store: str, p: Params, args: argparse.Namespace) -> None:
    ds = Datastore.open(store)
    chunks_dir = os.path.join(store, ".chunks")
    exe = build_floor(args.dir)
    t = time.perf_counter()
    garbage = garbage_chunks(p)
    made = make_garbage(chunks_dir, garbage)
    refs = referenced_paths(ds)
    paths = all_paths(chunks_dir)
    all_list = args.dir / "gc-all-paths.txt"
    ref_list = args.dir / "gc-referenced-paths.txt"
    all_list.write_text("".join(f"{path}\n" for path in paths))
    ref_list.write_bytes(b"".join(path + b"\n" for path in refs))
    say(f"prepared in {time.perf_counter() - t:.0f} s: {len(paths):,} chunk files "
        f"({len(refs):,} referenced, {len(garbage):,} garbage, {made:,} written now)")
    load = os.getloadavg()
    rows: dict[str, list[float]] = {k: [] for k in STEPS}
    counts: dict[str, int] = {}

    def step(name: str, fn: Callable[[], tuple[float, int]]) -> float:
        if args.cold:
            drop_caches()
        seconds, counts[name] = fn()
        return seconds

    def gc_step(removed: int) -> tuple[float, float, int, bool]:
        """(mark s, sweep s, chunk files swept, as expected)."""
        if args.cold:
            drop_caches()
        mark_s, sweep_s, status = run_gc(ds)
        kept = status.disk_chunks + status.pending_chunks
        # + 1: the 4 MiB zero chunk Datastore.create inserts (PBS does too), unreferenced
        ok = status.removed_chunks == removed and kept == len(refs) + 1 and \
            status.index_file_count == p.snapshots
        if not ok:
            say(f"  unexpected GC result: {status}")
        return mark_s, sweep_s, status.removed_chunks + kept, ok

    def garbage_left() -> int:
        return sum(os.path.exists(f"{chunks_dir}/{key}") for key, _ in garbage)

    runs = retries = 0
    while runs < args.runs:
        one: dict[str, float] = {}
        make_garbage(chunks_dir, garbage)
        one["stat"] = step("stat", lambda: c_floor(exe, "stat", str(all_list)))
        one["pystat"] = step("pystat", lambda: python_stat(paths))
        one["scan"] = step("scan", lambda: c_floor(exe, "scan", chunks_dir))
        one["touch"] = step("touch", lambda: c_floor(exe, "touch", str(ref_list)))
        one["mark"], one["sweep"], counts["sweep"], ok = gc_step(len(garbage))
        counts["mark"] = counts["mark-again"] = len(refs)
        one["mark-again"], one["sweep-clean"], counts["sweep-clean"], ok_clean = gc_step(0)
        make_garbage(chunks_dir, garbage)
        cutoff = int(time.time()) - gc.DEFAULT_CUTOFF_MINUTES * 60
        one["unlink"] = step("unlink", functools.partial(c_floor, exe, "unlink", chunks_dir,
                                                         str(cutoff)))
        ok_floor = garbage_left() == 0
        line = ", ".join(f"{k} {one[k]:.2f} s" for k in STEPS)
        if not (ok and ok_clean and ok_floor):
            # Another process reading chunk files (a backup, grep -r, rsync of the tree)
            # updates their atime (relatime: it was older than a day), so the sweep keeps
            # garbage it should remove and its time means nothing: once more.
            retries += 1
            say(f"disturbed, not counted: {line}")
            if retries > args.runs:
                raise SystemExit("too many disturbed repetitions")
            continue
        runs += 1
        for k, v in one.items():
            rows[k].append(v)
        say(f"run {runs}/{args.runs}: {line}")
    report(rows, counts, p, args, load, len(garbage))
    if args.profile:
        make_garbage(chunks_dir, garbage)
        profile_gc(ds)


def report(rows: dict[str, list[float]], counts: dict[str, int], p: Params,
           args: argparse.Namespace, load: tuple[float, float, float], garbage: int) -> None:
    med = {k: statistics.median(v) for k, v in rows.items()}
    per = {k: med[k] / counts[k] * 1e6 for k in med}  # µs per chunk
    say("")
    say(f"GC over {counts['sweep']:,} chunk files ({counts['mark']:,} referenced, "
        f"{garbage:,} garbage), {p.snapshots} snapshots, "
        f"{'cold' if args.cold else 'warm'} caches, median of {args.runs}; "
        f"load at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    say("")
    say("| step | chunks | median s | min–max s | µs/chunk | rate |")
    say("|---|---:|---:|---:|---:|---:|")
    for k, label in STEPS.items():
        say(f"| {label} | {counts[k]:,} | {med[k]:.2f} | {min(rows[k]):.2f}–"
            f"{max(rows[k]):.2f} | {per[k]:.2f} | {fmt_rate(counts[k], med[k])} |")
    say("")
    say("Ratios of µs per chunk (medians). Target: mark and sweep within 2× of the stat floor; "
        "the removals themselves (unlink) are compared with the unlink floor.")
    say("")
    say("| phase | × stat floor (C) | × its own floor | target ≤ 2× stat floor |")
    say("|---|---:|---:|---|")
    for k, own in (("mark", "touch"), ("mark-again", "touch"), ("sweep-clean", "scan"),
                   ("sweep", "unlink")):
        ratio = per[k] / per["stat"]
        own_name = STEPS[own].removeprefix("floor: ").split(" (")[0]
        verdict = "MET" if ratio <= 2 else "MISSED"
        if k == "sweep":
            verdict = "n/a: unlink-bound, see its own floor"
        say(f"| {STEPS[k]} | {ratio:.2f} | {per[k] / per[own]:.2f} ({own_name}) | {verdict} |")


def profile_gc(ds: Datastore) -> None:
    profile = cProfile.Profile()
    mark_s, sweep_s, _ = run_gc(ds, profile)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(16)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    say(f"\ncProfile of one more GC (mark {mark_s:.1f} s, sweep {sweep_s:.1f} s under the "
        "profiler), by own time:")
    say("\n".join(lines[start:]))


if __name__ == "__main__":
    main()
