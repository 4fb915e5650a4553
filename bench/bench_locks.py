"""Cost of the lock-session API next to a bare open+flock+close, at namespace depth 1 and 7.

The locking design promises O(1) locks on the hot path whatever the namespace depth (goal 2).
This times taking and releasing the locks of

- a backup session: NS S, GW X, GA S, SN(base) S, SN(new) X, CS S   (6 locks)
- a snapshot read:  NS S, GA S, SN S                                 (3 locks)

as the median of 5 runs of N sessions, next to a loop of open+flock(LOCK_SH)+close on one
file. Extra rows show the task registry write (a session with an operation) and the order
checker, both off in the main rows (the checker is a test-suite setting).

    python bench/bench_locks.py [--iterations N] [--dir DIR]

The lock directory defaults to a fresh directory under /dev/shm (tmpfs, as /run is).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from chunkyard.datastore.locking import LockManager, Mode, set_order_checking
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace

S, X = Mode.SHARED, Mode.EXCLUSIVE
GROUP = BackupGroup.parse("host/web-01")
BASE = BackupDir(GROUP, 1_700_000_000)
NEW = BackupDir(GROUP, 1_700_086_400)


def namespace(depth: int) -> BackupNamespace:
    return BackupNamespace.parse("/".join(f"level{i}" for i in range(depth)))


def bare_loop(path: str) -> Callable[[int], None]:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC

    def run(n: int) -> None:
        for _ in range(n):
            fd = os.open(path, flags, 0o660)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            os.close(fd)
    return run


def backup_session(m: LockManager, ns: BackupNamespace, operation: str | None
                   ) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            with m.session(operation) as s:
                s.group_writer(ns, GROUP)
                s.snapshot(ns, BASE, S)
                s.snapshot(ns, NEW, X)
                s.chunk_store(S)
    return run


def read_session(m: LockManager, ns: BackupNamespace) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            with m.session() as s:
                s.snapshot(ns, BASE, S)
    return run


def median_us(variants: list[Callable[[int], None]], n: int, runs: int = 5) -> list[float]:
    """Median µs per iteration of each variant; runs are interleaved so that a noisy
    neighbour on the machine hits every variant alike."""
    for fn in variants:
        fn(min(n, 200))  # warm up: create the files, fill caches
    samples: list[list[float]] = [[] for _ in variants]
    for _ in range(runs):
        for i, fn in enumerate(variants):
            t0 = time.perf_counter()
            fn(n)
            samples[i].append((time.perf_counter() - t0) / n * 1e6)
    return [statistics.median(s) for s in samples]


class Checked:
    """A variant run with the order checker on."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn

    def __call__(self, n: int) -> None:
        set_order_checking(True)
        try:
            self.fn(n)
        finally:
            set_order_checking(False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", "-n", type=int, default=2000)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = ap.parse_args()
    n = args.iterations

    with tempfile.TemporaryDirectory(prefix="chunkyard-bench-locks-", dir=args.dir) as tmp:
        store = os.path.join(tmp, "store")
        os.mkdir(store)
        m = LockManager(os.path.join(tmp, "locks"), os.path.join(store, ".lock"))
        set_order_checking(False)
        shallow, deep = namespace(1), namespace(7)
        table: list[tuple[str, int, int, Callable[[int], None]]] = [
            ("bare open+flock+close", 0, 1, bare_loop(os.path.join(tmp, "bare"))),
            ("backup session", 1, 6, backup_session(m, shallow, None)),
            ("backup session", 7, 6, backup_session(m, deep, None)),
            ("snapshot read", 1, 3, read_session(m, shallow)),
            ("snapshot read", 7, 3, read_session(m, deep)),
            ("backup + task registry", 7, 6, backup_session(m, deep, "backup host/web-01")),
            ("backup, order checker on", 7, 6, Checked(backup_session(m, deep, None))),
        ]
        times = median_us([fn for *_, fn in table], n)
        rows = [(what, depth, locks, us) for (what, depth, locks, _), us in zip(
            table, times, strict=True)]
        bare = rows[0][3]

    print(f"lock directory on {args.dir or tempfile.gettempdir()}; "
          f"median of 5 runs of {n} iterations")
    print(f"{'what':<26} {'depth':>5} {'locks':>5} {'us/session':>11} {'us/lock':>8} "
          f"{'x bare':>7} {'x bare/lock':>11}")
    for what, depth, locks, us in rows:
        print(f"{what:<26} {depth or '-':>5} {locks:>5} {us:>11.1f} {us / locks:>8.1f} "
              f"{us / bare:>7.2f} {us / locks / bare:>11.2f}")


if __name__ == "__main__":
    main()
