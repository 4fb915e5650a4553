"""Verify throughput next to bare read + SHA-256 loops over the same chunk files.

The data set: a datastore with --snapshots snapshots, each with a real manifest and one
`root.pxar.didx` over its own --chunks / --snapshots chunks of --min-mib..--max-mib MiB
(seeded) of mixed data, stored as PBS does (zstd level 1 DataBlobs): per 64 KiB segment, 40%
random bytes (incompressible), 30% random bytes over a 16-letter alphabet (about 2:1), 30%
slices of a pool of log-like text (about 3-4:1).

Each repetition times, over every chunk once:

- **verify**: `run_verify` of the root namespace (every snapshot; `ignore_verified=False`,
  so each repetition verifies everything again; PBS's default threads: --read-threads 1,
  --decode-threads 4): per chunk a stat (inode order), a read, the CRC, zstd decompression
  and SHA-256 of the decoded data, plus the per-snapshot lock, manifest and index checks and
  the `verify_state` write;
- **floor raw**: read the chunk file and SHA-256 its raw bytes;
- **floor decode**: read, zstd-decompress (one-shot, a per-thread context) and SHA-256 the
  decoded data;
- **floor decode+crc**: the same plus the CRC-32 of the payload: the least a PBS verify does.

The floors run in a thread pool of read + decode threads (what verify has), in inode order
as verify reads (the inodes are looked up untimed). Each step runs cold (`sync; echo 3 >
/proc/sys/vm/drop_caches` before it; needs root, skipped with a note otherwise) and warm (the
chunk files in the page cache); the order of the four steps rotates from one repetition to
the next.

    python bench/bench_verify.py [--chunks N] [--snapshots S] [--min-mib A] [--max-mib B]
                                 [--runs R] [--read-threads R] [--decode-threads D]
                                 [--floor-threads T] [--no-cold] [--dir DIR] [--keep]

The datastore goes to DIR/verify-store (default bench/work, gitignored), removed at the end
unless --keep (a kept store with the same sizes is reused). Lock files go under /dev/shm.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from chunkyard.datastore.chunk_store import SyncLevel
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.maintenance.verify import VerifyOptions, run_verify
from chunkyard.formats.blob import HEADER_SIZE, BlobKind, blob_kind, encode_chunk
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace
from scratch_store import add_store_options, drop_caches, say, scratch_store

HERE = Path(__file__).resolve().parent
OWNER = Authid.parse("root@pam")
T0 = 1_700_000_000
MIB = 1024 * 1024
SEGMENT = 64 * 1024
ROOT = BackupNamespace()
WORDS = ("GET", "POST", "/api2/json/nodes", "backup", "chunk", "index", "status", "ok",
         "error", "warning", "info", "debug", "upid", "task", "worker", "datastore", "verify",
         "garbage", "collection", "snapshot", "namespace", "group", "host", "vm", "ct", "200",
         "404", "500", "user", "root@pam", "token", "session", "elapsed", "ms", "bytes")


@dataclass(frozen=True)
class Params:
    chunks: int
    snapshots: int
    min_mib: float
    max_mib: float
    seed: int

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)



# -- the data set ----------------------------------------------------------------------------

def text_pool(rng: random.Random, size: int) -> bytes:
    lines = []
    n = 0
    while n < size:
        line = (f"2026-11-{rng.randint(1, 30):02d}T{rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z "
                + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
                + f" id={rng.getrandbits(32):08x}\n")
        lines.append(line)
        n += len(line)
    return "".join(lines).encode()[:size]


def mixed_chunk(rng: random.Random, size: int, pool: bytes, low: bytes) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        n = min(SEGMENT, left)
        kind = rng.random()
        if kind < 0.4:
            parts.append(rng.randbytes(n))
        elif kind < 0.7:
            parts.append(rng.randbytes(n).translate(low))
        else:
            at = rng.randrange(0, len(pool) - n)
            parts.append(pool[at:at + n])
        left -= n
    return b"".join(parts)


def build(store: str, p: Params) -> None:
    t = time.perf_counter()
    say(f"building {store} ...")
    ds = Datastore.create(store, sparse=True, sync_level=SyncLevel.NONE)
    rng = random.Random(p.seed)
    pool = text_pool(rng, 8 * MIB)
    low = bytes(b"abcdefghijklmnop"[i % 16] for i in range(256))
    per_snap = -(-p.chunks // p.snapshots)
    group = BackupGroup.parse("host/verify-bench")
    ds.make_group_dir(ROOT, group, OWNER)
    raw_bytes = disk_bytes = 0
    done = 0
    for s in range(p.snapshots):
        count = min(per_snap, p.chunks - done)
        ends: list[int] = []
        digests: list[bytes] = []
        end = 0
        for _ in range(count):
            size = rng.randint(int(p.min_mib * MIB), int(p.max_mib * MIB))
            data = mixed_chunk(rng, size, pool, low)
            digest, encoded = encode_chunk(data)
            ds.chunk_store.insert(digest, encoded)
            end += size
            ends.append(end)
            digests.append(digest)
            raw_bytes += size
            disk_bytes += len(encoded)
        done += count
        snap = BackupDir(group, T0 + s * 3600)
        ds.make_snapshot_dir(ROOT, snap)
        index = DynamicIndex.from_chunks(ends, digests, uuid=s.to_bytes(16, "big"), ctime=T0)
        ds.write_index_file(ROOT, snap, "root.pxar.didx", index.encode())
        ds.write_manifest(ROOT, snap, BackupManifest(
            group.type.value, group.id, snap.time,
            [FileInfo.for_index("root.pxar.didx", index, "none")]))
        say(f"  snapshot {s + 1}/{p.snapshots}: {done} chunks, {raw_bytes / MIB:,.0f} MiB "
            f"-> {disk_bytes / MIB:,.0f} MiB on disk, {time.perf_counter() - t:.0f} s")
    os.sync()
    say(f"built in {time.perf_counter() - t:.0f} s")


def chunk_files(ds: Datastore) -> tuple[list[str], int]:
    """Every referenced chunk's path in inode order (as verify reads), and the data bytes."""
    seen: dict[bytes, int] = {}
    for key in ds.find_index_files() or []:
        index = DynamicIndex.decode(ds.backend.read(key))
        for i, digest in enumerate(index.iter_digests()):
            start, end = index.chunk_range(i)
            seen[digest] = end - start
    base = os.path.join(ds.path, ".chunks")
    paths = [f"{base}/{d.hex()[:4]}/{d.hex()}" for d in seen]
    paths.sort(key=lambda path: os.stat(path).st_ino)
    return paths, sum(seen.values())


# -- the floors ------------------------------------------------------------------------------

_local = threading.local()


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def read_file(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read()


def raw_sha(path: str) -> int:
    raw = read_file(path)
    hashlib.sha256(raw).digest()
    return len(raw)


def decode_sha(path: str, crc: bool = False) -> int:
    raw = read_file(path)
    payload = memoryview(raw)[HEADER_SIZE:]
    if crc:
        zlib.crc32(payload)
    data = _dctx().decompress(payload) if blob_kind(raw) is BlobKind.COMPRESSED else payload
    hashlib.sha256(data).digest()
    return len(raw)


def decode_crc_sha(path: str) -> int:
    return decode_sha(path, crc=True)


def floor(paths: list[str], work: Callable[[str], int], threads: int) -> int:
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(work, paths))


# -- driver ----------------------------------------------------------------------------------



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--chunks", type=int, default=800, help="default %(default)s")
    ap.add_argument("--snapshots", type=int, default=4, help="default %(default)s")
    ap.add_argument("--min-mib", type=float, default=1.0, help="chunk size (default %(default)s)")
    ap.add_argument("--max-mib", type=float, default=4.0, help="chunk size (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5, help="repetitions; medians are reported")
    ap.add_argument("--read-threads", type=int, default=1, help="verify's (default 1, as PBS)")
    ap.add_argument("--decode-threads", type=int, default=4,
                    help="verify's (default 4, as PBS)")
    ap.add_argument("--floor-threads", type=int, default=None,
                    help="the floors' pool (default: read + decode threads)")
    ap.add_argument("--no-cold", action="store_true", help="warm caches only")
    add_store_options(ap)
    args = ap.parse_args()

    p = Params(args.chunks, args.snapshots, args.min_mib, args.max_mib, args.seed)
    started = time.perf_counter()
    with scratch_store(args.dir, "verify-store", p.as_dict(), lambda path: build(path, p),
                       keep=args.keep) as store:
        bench(store, p, args)
    say(f"total {time.perf_counter() - started:.0f} s")


def bench(store: str, p: Params, args: argparse.Namespace) -> None:
    ds = Datastore.open(store)
    paths, data_bytes = chunk_files(ds)
    disk_bytes = sum(os.stat(path).st_size for path in paths)
    options = VerifyOptions(ignore_verified=False, read_threads=args.read_threads,
                            decode_threads=args.decode_threads)
    threads = args.floor_threads or args.read_threads + args.decode_threads
    modes = ["warm"]
    if not args.no_cold:
        if drop_caches():
            modes.insert(0, "cold")
        else:
            say("cannot drop caches (not root?): warm only")
    load = os.getloadavg()

    def verify() -> int:
        report = run_verify(ds, authid="root@pam", options=options)
        if not report.success or report.chunks_verified != len(paths) or \
                report.bytes_read != disk_bytes:
            raise SystemExit(f"unexpected verify result: {report.as_dict()['chunks']}")
        return report.bytes_read

    steps: list[tuple[str, Callable[[], int]]] = [
        ("verify", verify),
        ("floor raw", lambda: floor(paths, raw_sha, threads)),
        ("floor decode", lambda: floor(paths, decode_sha, threads)),
        ("floor decode+crc", lambda: floor(paths, decode_crc_sha, threads)),
    ]
    times: dict[tuple[str, str], list[float]] = {(m, s): [] for m in modes for s, _ in steps}
    for r in range(args.runs):
        for mode in modes:
            if mode == "warm":
                floor(paths, raw_sha, threads)  # untimed: every chunk file into the cache
            for name, fn in steps[r % len(steps):] + steps[:r % len(steps)]:  # rotated
                if mode == "cold":
                    drop_caches()
                t = time.perf_counter()
                n = fn()
                times[(mode, name)].append(time.perf_counter() - t)
                if n != disk_bytes:
                    raise SystemExit(f"{name} read {n} bytes, expected {disk_bytes}")
        say(f"run {r + 1}/{args.runs}: " + ", ".join(
            f"{m} {s} {v[-1]:.2f} s" for (m, s), v in times.items()))

    say("")
    say(f"verify of {len(paths)} chunks in {p.snapshots} snapshots: {data_bytes / MIB:,.0f} MiB "
        f"of data, {disk_bytes / MIB:,.0f} MiB on disk (ratio {data_bytes / disk_bytes:.2f}); "
        f"verify threads {args.read_threads} read + {args.decode_threads} decode, floors "
        f"{threads} threads; median of {args.runs}; load at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    say("")
    say("| caches | step | median s | min–max s | MiB/s on disk | MiB/s of data | chunks/s "
        "| verify × |")
    say("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        v = statistics.median(times[(mode, "verify")])
        for name, _ in steps:
            xs = times[(mode, name)]
            m = statistics.median(xs)
            label = f"**{name}**" if name == "verify" else name
            say(f"| {mode} | {label} | {m:.2f} | {min(xs):.2f}–{max(xs):.2f} | "
                f"{disk_bytes / MIB / m:,.0f} | {data_bytes / MIB / m:,.0f} | "
                f"{len(paths) / m:,.0f} | {'' if name == 'verify' else f'{v / m:.2f}'} |")


if __name__ == "__main__":
    main()
