"""Throughput of the buzhash chunker next to a floor; standalone, not part of the tests.

    .venv/bin/python bench/bench_chunker.py [--size-mib 256] [--buffer-mib 8] [--runs 5]

Each row feeds the same random data, one call per buffer, and reports the median of the runs.

The floor is `bytes.count(b"x")`: CPython's cheapest C loop that looks at every byte (one
compare and one add per byte, no copy), driven the same way, one call per buffer. It is what
"only touching the data" costs when every byte is examined, so the ratio column reads as "the
chunker's per-byte work relative to a trivial byte loop". A memory-bandwidth floor (memcmp) runs
at tens of GB/s and would only say that neither is memory bound. SHA-256 is not a floor but a
context row: every chunk is hashed for its digest anyway, so it bounds what a faster chunker
could gain a backup.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import threading
import time
from collections.abc import Callable

from chunkyard.formats.chunker import CATALOG_AVG, DEFAULT_AVG, Chunker

MIB = 1024 * 1024


def timed(work: Callable[[], object], runs: int) -> float:
    """Median seconds of `runs` calls of work()."""
    durations = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="data per run")
    parser.add_argument("--buffer-mib", type=int, default=8, help="bytes per call")
    parser.add_argument("--runs", type=int, default=5, help="runs per row (median)")
    args = parser.parse_args()

    data = os.urandom(args.size_mib * MIB)
    step = args.buffer_mib * MIB
    view = memoryview(data)
    buffers = [view[i : i + step] for i in range(0, len(data), step)]

    def floor() -> None:
        # count() with bounds scans the slice in place, as boundaries() reads a memoryview
        for start in range(0, len(data), step):
            data.count(b"x", start, start + step)

    def chunk(avg: int) -> Callable[[], int]:
        def work() -> int:
            chunker = Chunker(avg)
            return sum(len(chunker.boundaries(buf)) for buf in buffers)

        return work

    def chunk_threads(avg: int, threads: int) -> Callable[[], None]:
        """Each thread chunks the whole data with its own chunker: aggregate bytes / time."""

        def work() -> None:
            workers = [threading.Thread(target=chunk(avg)) for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        return work

    def sha256() -> None:
        for buf in buffers:
            hashlib.sha256(buf).digest()

    size = len(data)
    two_threads = chunk_threads(DEFAULT_AVG, 2)
    rows: list[tuple[str, float]] = [
        ('floor: bytes.count(b"x")', size / timed(floor, args.runs)),
        ("boundaries(), avg 4 MiB", size / timed(chunk(DEFAULT_AVG), args.runs)),
        ("boundaries(), avg 512 KiB (catalog)", size / timed(chunk(CATALOG_AVG), args.runs)),
        ("boundaries(), avg 4 MiB, 2 threads", 2 * size / timed(two_threads, args.runs)),
        ("context: hashlib.sha256", size / timed(sha256, args.runs)),
    ]
    floor_rate = rows[0][1]
    print(f"{args.size_mib} MiB random data, {args.buffer_mib} MiB per call, median of {args.runs}")
    print(f"{'':38} {'MB/s':>9} {'vs floor':>9}")
    for name, rate in rows:
        print(f"{name:38} {rate / 1e6:9.0f} {rate / floor_rate:9.2f}")


if __name__ == "__main__":
    main()
