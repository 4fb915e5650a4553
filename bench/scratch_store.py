"""A benchmark's scratch datastore: built once, reused while its parameters match, removed at
the end unless kept; lock files in a private directory under /dev/shm. Shared by
bench_gc.py and bench_verify.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chunkyard.datastore.locking.lockfiles import LOCK_DIR_ENV

HERE = Path(__file__).resolve().parent
STAMP = "bench-params.json"


def say(msg: str) -> None:
    print(msg, flush=True)


def add_store_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--dir", type=Path, default=HERE / "work",
                    help="parent of the datastore (default bench/work)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the datastore (a later run with the same sizes reuses it)")


@contextmanager
def scratch_store(parent: Path, name: str, params: dict[str, Any],
                  build: Callable[[str], None], *, keep: bool) -> Iterator[str]:
    """The path of `parent/name`, built by `build(path)` unless a kept store with the same
    `params` is there."""
    store = str((parent / name).resolve())
    lock_dir = tempfile.mkdtemp(prefix=f"chunkyard-{name}-", dir="/dev/shm")
    os.environ[LOCK_DIR_ENV] = lock_dir
    stamp = Path(store, STAMP)
    try:
        if stamp.exists() and json.loads(stamp.read_text()) == params:
            say(f"reusing {store}")
        else:
            if os.path.exists(store):
                shutil.rmtree(store)
            build(store)
            stamp.write_text(json.dumps(params))
        yield store
    finally:
        shutil.rmtree(lock_dir, ignore_errors=True)
        if not keep and os.path.exists(store):
            say("removing the datastore ...")
            shutil.rmtree(store)


def drop_caches() -> bool:
    """sync, then drop the page, dentry and inode caches; False if not allowed (not root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
