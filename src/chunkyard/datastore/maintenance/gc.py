"""Garbage collection with PBS's semantics (spec §8): atime check, mark, sweep, `.gc-status`.

Phase 1 touches (atime, mtime kept) every chunk an index references; phase 2 removes chunk
files whose atime is older than `min_atime`. Locks: CS X (byte 0 of `.lock`: one GC at a
time, while backups in other processes go on, see `locking.chunk_store_lock`) and JR X while
the move journal is drained; no namespace, group or snapshot locks (locking.md).

Where chunkyard differs, on purpose:
- backups run in other processes, so a duplicate insert can touch a chunk the sweep has just
  judged unused; the sweep therefore renames a candidate to `<digest>.sweep` first and looks
  at its atime again before unlinking (rename it back if it was touched). A backup touching
  it after the rename finds no file and writes the chunk anew (`ChunkStore.insert`).
- the oldest writer is the oldest backup of any process (their CS bytes in `/proc/locks`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chunkyard.datastore.backend import EntryKind, Stat
from chunkyard.datastore.chunk_scan import ChunkScan, is_chunk_name
from chunkyard.datastore.chunk_store import PREFIX_COUNT, SWEEP_SUFFIX, chunk_key
from chunkyard.datastore.datastore import ZERO_CHUNK_SIZE, Datastore
from chunkyard.datastore.layout import CHUNKS_DIR, GC_STATUS_FILE, snapshot_key
from chunkyard.datastore.locking import LockBusy, LockSession, Mode
from chunkyard.datastore.moves import journal
from chunkyard.errors import ChunkyardError, DatastoreError, FormatError, NotFound
from chunkyard.faults import fault_point
from chunkyard.formats.blob import encode_chunk
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.names import BackupGroup, BackupNamespace

log = logging.getLogger("chunkyard.gc")

DEFAULT_CUTOFF_MINUTES = 1445          # 24 h 5 min: relatime updates at least daily
WRITER_MARGIN = 300                    # seconds below the oldest writer's start
DEFAULT_CACHE_CAPACITY = 1024 * 1024   # digests (PBS's gc-cache-capacity)
GROUP_RETRIES = 10                     # then the group is locked for the last attempt
STATUS_FILE_MODE = 0o644
_BAD = re.compile(r"([0-9a-f]{64})\.([0-9])\.bad")

Progress = Callable[[str, int, int], None]   # (phase, done, total)
AbortCheck = Callable[[], None]              # raises to stop GC (a task's abort request)
_GC_MUTEX = threading.Lock()                 # one GC per process (PBS's gc_mutex)


@dataclass
class GcStatus:
    """PBS's `GarbageCollectionStatus` (`.gc-status`, kebab-case keys)."""

    upid: str | None = None
    index_file_count: int = 0
    index_data_bytes: int = 0
    disk_bytes: int = 0
    disk_chunks: int = 0
    removed_bytes: int = 0
    removed_chunks: int = 0
    pending_bytes: int = 0
    pending_chunks: int = 0
    removed_bad: int = 0
    still_bad: int = 0
    cache_stats: dict[str, int] = field(default_factory=lambda: {"hits": 0, "misses": 0})

    def to_json(self) -> dict[str, Any]:
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, raw: bytes) -> GcStatus:
        """Parse `.gc-status`; anything malformed gives the default (as PBS)."""
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                return cls()
            status = cls()
            for key, value in obj.items():
                name = key.replace("-", "_")
                if name == "upid" and (value is None or isinstance(value, str)):
                    status.upid = value
                elif name == "cache_stats" and isinstance(value, dict):
                    status.cache_stats = {k: int(value.get(k, 0)) for k in ("hits", "misses")}
                elif name in cls.__dataclass_fields__ and isinstance(value, int) and \
                        not isinstance(value, bool):
                    setattr(status, name, value)
            return status
        except (ValueError, TypeError):
            return cls()

    def summary(self) -> list[str]:
        """The task log's closing lines (spec §8.6)."""
        lines = [f"Removed garbage: {_human(self.removed_bytes)}",
                 f"Removed chunks: {self.removed_chunks}"]
        if self.removed_bad:
            lines.append(f"Removed bad chunks: {self.removed_bad}")
        if self.still_bad:
            lines.append(f"Leftover bad chunks: {self.still_bad}")
        lines += [f"Pending removals: {_human(self.pending_bytes)} "
                  f"(in {self.pending_chunks} chunks)",
                  f"Original data usage: {_human(self.index_data_bytes)}",
                  f"On-Disk usage: {_human(self.disk_bytes)}"
                  + (f" ({self.disk_bytes * 100 / self.index_data_bytes:.2f}%)"
                     if self.index_data_bytes else ""),
                  f"On-Disk chunks: {self.disk_chunks}"]
        if self.disk_bytes:
            lines.append(f"Deduplication factor: "
                         f"{self.index_data_bytes / self.disk_bytes:.2f}")
        if self.disk_chunks:
            lines.append(f"Average chunk size: {_human(self.disk_bytes / self.disk_chunks)}")
        return lines


def load_status(ds: Datastore) -> GcStatus:
    try:
        return GcStatus.from_json(ds.backend.read(GC_STATUS_FILE))
    except NotFound:
        return GcStatus()


@dataclass
class GcOptions:
    """PBS's datastore tuning for GC."""

    atime_safety_check: bool = True
    atime_cutoff_minutes: int = DEFAULT_CUTOFF_MINUTES
    cache_capacity: int = DEFAULT_CACHE_CAPACITY


def garbage_collection(ds: Datastore, *, upid: str | None = None,
                       options: GcOptions | None = None,
                       progress: Progress | None = None,
                       check_abort: AbortCheck | None = None) -> GcStatus:
    """Run both phases and write `.gc-status`; LockBusy if another GC runs.

    `check_abort` is called before every index and every chunk directory; whatever it
    raises ends GC there (as PBS's worker abort does): everything removed so far was
    garbage, nothing is half-removed, and `.gc-status` keeps the last complete run."""
    options = options or GcOptions()
    if not 1 <= options.atime_cutoff_minutes <= 2 ** 31 // 60:
        raise DatastoreError(f"atime cutoff {options.atime_cutoff_minutes} min out of range")
    if not _GC_MUTEX.acquire(blocking=False):
        raise DatastoreError("garbage collection is already running in this process")
    try:
        with ds.locks.session("garbage collection", task_id=upid) as session:
            session.chunk_store(Mode.EXCLUSIVE)
            return _run(ds, session, upid, options, progress or _no_progress,
                        check_abort or _no_abort)
    finally:
        _GC_MUTEX.release()


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


def _no_abort() -> None:
    pass


def _run(ds: Datastore, session: LockSession, upid: str | None, options: GcOptions,
         progress: Progress, check_abort: AbortCheck) -> GcStatus:
    phase1_start = time.time()
    oldest_writer = ds.locks.oldest_shared_lock_time() or phase1_start
    if options.atime_safety_check:
        check_atime_updates(ds, check_abort)
    min_atime = phase1_start - options.atime_cutoff_minutes * 60
    if oldest_writer < min_atime:
        min_atime = oldest_writer - WRITER_MARGIN
    status = GcStatus(upid=upid)
    with ChunkScan.open(ds.backend) as scan:
        log.info("Start GC phase1 (mark used chunks)")
        Marker(ds, session, status, scan, options.cache_capacity, progress, check_abort).run()
        fault_point("gc.marked")
        log.info("Start GC phase2 (sweep unused chunks)")
        sweep(ds, scan, status, int(min_atime), int(oldest_writer), progress, check_abort)
    ds.backend.write_atomic(GC_STATUS_FILE, json.dumps(status.to_json(),
                                                       separators=(",", ":")).encode(),
                            mode=STATUS_FILE_MODE)
    for line in status.summary():
        log.info("%s", line)
    return status


# -- the atime safety check (§8.3) -------------------------------------------------------

def check_atime_updates(ds: Datastore, check_abort: AbortCheck = _no_abort) -> None:
    """Refuse to collect on a filesystem where touching a chunk does not move its atime."""
    digest, encoded = encode_chunk(bytes(ZERO_CHUNK_SIZE))
    ds.chunk_store.insert(digest, encoded)
    key = chunk_key(digest)
    for _ in range(2):
        time.sleep(1.0)
        check_abort()
        before = ds.backend.stat(key)
        ds.backend.touch_atime(key)
        after = ds.backend.stat(key)
        if after.inode != before.inode:
            continue  # replaced meanwhile (a concurrent insert): once more
        if after.atime_ns > before.atime_ns:
            return
        break
    raise DatastoreError(
        f"access time safety check failed on {ds.path}: touching a chunk did not update its "
        "atime (mounted with an atime mode that ignores explicit updates?); aborting GC")


# -- phase 1: mark (§8.2) ----------------------------------------------------------------

class Marker:
    """Touch every chunk of every index: by namespace tree, then the unexpected ones the walk
    found, then the move journal."""

    def __init__(self, ds: Datastore, session: LockSession, status: GcStatus, scan: ChunkScan,
                 cache_capacity: int, progress: Progress,
                 check_abort: AbortCheck = _no_abort) -> None:
        self.ds = ds
        self.scan = scan
        self.session = session
        self.status = status
        self.cache: OrderedDict[bytes, None] = OrderedDict()
        self.capacity = max(0, cache_capacity)
        self.progress = progress
        self.check_abort = check_abort
        self.seen: set[str] = set()

    def run(self) -> None:
        walked = self.ds.find_index_files() or []
        fault_point("gc.listed")
        total = len(walked)
        for ns in self.ds.iter_namespaces(BackupNamespace()):
            try:
                groups = self.ds.list_groups(ns)
            except NotFound:
                continue  # removed (or moved) meanwhile: the journal covers moves
            for group in groups:
                self._mark_group(ns, group)
                self.progress("mark", len(self.seen), total)
        for key in sorted(set(walked) - self.seen):
            if self._mark_index(key):
                log.warning("unexpected index file %s outside of expected directory scheme",
                            key)
        drained = journal.drain(self.ds, self.session, self._mark_journaled)
        if not drained.truncated:
            log.warning("move journal kept for the next GC: %s", "; ".join(drained.failures))
        self.progress("mark", len(self.seen), max(total, len(self.seen)))

    def _mark_group(self, ns: BackupNamespace, group: BackupGroup) -> None:
        for attempt in range(GROUP_RETRIES + 1):
            guard = None
            if attempt == GROUP_RETRIES:  # the last try under GA S, as PBS's group lock
                try:
                    guard = self.session.group(ns, group, Mode.SHARED, wait=10.0)
                except LockBusy as e:
                    raise DatastoreError(f"cannot mark group {group}: {e}") from None
            try:
                try:
                    snaps = list(reversed(self.ds.list_snapshots(ns, group)))  # newest first
                except NotFound:
                    return
                if attempt == 0:
                    fault_point("gc.group-listed")
                restart = False
                # Up to the newest finished snapshot, a vanished index means the group changed
                # under us (pruned, while a backup that was still running when we listed may
                # have finished on it as its base, reusing its chunks untouched): re-list.
                newest_finished = next((i for i, info in enumerate(snaps) if info.finished),
                                       len(snaps))
                for i, info in enumerate(snaps):
                    prefix = snapshot_key(ns, info.dir)
                    for name in info.files:
                        if not name.endswith((".fidx", ".didx")):
                            continue
                        if not self._mark_index(f"{prefix}/{name}") and i <= newest_finished:
                            restart = True
                            break
                    if restart:
                        break
                if not restart:
                    return
            finally:
                if guard is not None:
                    guard.release()
        raise DatastoreError(f"group {group} in '{ns.display()}' kept changing during GC")

    def _mark_journaled(self, key: str) -> None:
        if not self._mark_index(key, strict=True):
            raise NotFound(f"{key} vanished")

    def _mark_index(self, key: str, *, strict: bool = False) -> bool:
        """Touch the chunks of one index; False if it vanished. Corrupt indexes are logged
        (or raised when `strict`) and skipped: their chunks cannot be known."""
        self.check_abort()
        self.seen.add(key)
        try:
            raw = self.ds.backend.read(key)
        except NotFound:
            return False
        try:
            index = FixedIndex.decode(raw) if key.endswith(".fidx") else DynamicIndex.decode(raw)
        except FormatError as e:
            if strict:
                raise
            log.warning("cannot read index %s: %s", key, e)
            return True
        self.status.index_file_count += 1
        self.status.index_data_bytes += index.size
        for digest in self.scan.touch(self._uncached(index.digest_list())):
            self._missing(digest)
        return True

    def _uncached(self, digests: list[bytes]) -> list[bytes]:
        """The digests not touched lately (PBS's LRU digest cache), now remembered."""
        cache, capacity, stats = self.cache, self.capacity, self.status.cache_stats
        if not capacity:
            stats["misses"] += len(digests)
            return digests
        out = []
        for digest in digests:
            if digest in cache:
                cache.move_to_end(digest)
            else:
                cache[digest] = None
                out.append(digest)
        stats["hits"] += len(digests) - len(out)
        stats["misses"] += len(out)
        for _ in range(len(cache) - capacity):
            cache.popitem(last=False)
        return out

    def _missing(self, digest: bytes) -> None:
        """Keep the `.bad` copies of a missing chunk alive while it is referenced."""
        key = chunk_key(digest)
        for n in range(10):
            with contextlib.suppress(NotFound):
                self.ds.backend.touch_atime(f"{key}.{n}.bad")
        log.warning("unable to access non-existent chunk %s, required by an index",
                    digest.hex())


# -- phase 2: sweep (§8.4) ---------------------------------------------------------------

def sweep(ds: Datastore, scan: ChunkScan, status: GcStatus, min_atime: int,
          oldest_writer: int, progress: Progress, check_abort: AbortCheck = _no_abort) -> None:
    """Survey each prefix directory in one pass (chunks in use are only counted); judge
    each candidate again under its chunk lock before it goes; `.bad`, `.using` and `.sweep`
    files as §8.4 and `_finish_interrupted_sweep` say."""
    for i in range(PREFIX_COUNT):
        check_abort()
        if i % 256 == 0:
            progress("sweep", i, PREFIX_COUNT)
        name = f"{i:04x}"
        try:
            survey = scan.survey(name, min_atime, oldest_writer)
        except NotFound:
            continue
        status.disk_chunks += survey.disk_chunks
        status.disk_bytes += survey.disk_bytes
        status.pending_chunks += survey.pending_chunks
        status.pending_bytes += survey.pending_bytes
        prefix = f"{CHUNKS_DIR}/{name}"
        for candidate in survey.candidates:
            _sweep_one(ds, status, f"{prefix}/{candidate}", bytes.fromhex(candidate), False,
                       min_atime, oldest_writer)
        for other in survey.others:
            _sweep_other(ds, status, prefix, other, min_atime, oldest_writer)
    progress("sweep", PREFIX_COUNT, PREFIX_COUNT)


def _sweep_other(ds: Datastore, status: GcStatus, prefix: str, name: str, min_atime: int,
                 oldest_writer: int) -> None:
    if len(name) == 70 and _BAD.fullmatch(name):
        _sweep_one(ds, status, f"{prefix}/{name}", bytes.fromhex(name[:64]), True,
                   min_atime, oldest_writer)
    elif name.endswith(".using") and is_chunk_name(name[:64]):
        with contextlib.suppress(NotFound):
            ds.backend.remove(f"{prefix}/{name}")
    elif name.endswith(SWEEP_SUFFIX) and is_chunk_name(name[:64]):
        _finish_interrupted_sweep(ds, f"{prefix}/{name[:64]}")


def _stat(ds: Datastore, key: str) -> Stat | None:
    try:
        st = ds.backend.stat(key)
    except NotFound:
        return None
    return st if st.kind == EntryKind.FILE else None


def _sweep_one(ds: Datastore, status: GcStatus, key: str, digest: bytes, bad: bool,
               min_atime: int, oldest_writer: int) -> None:
    with ds.chunk_store.chunk_lock(digest):
        st = _stat(ds, key)
        if st is None:
            return
        atime = st.atime_ns // 1_000_000_000
        if atime >= min_atime:
            if atime < oldest_writer:
                if bad:
                    status.still_bad += 1
                else:
                    status.pending_chunks += 1
                status.pending_bytes += st.size
            elif bad:
                status.still_bad += 1
            else:
                status.disk_chunks += 1
                status.disk_bytes += st.size
            return
        fault_point("gc.remove-candidate")
        if bad:
            _unlink(ds, key)
            status.removed_bad += 1
            status.removed_bytes += st.size
            return
        if _remove_unless_touched(ds, key, min_atime):
            status.removed_chunks += 1
            status.removed_bytes += st.size
        else:
            status.disk_chunks += 1
            status.disk_bytes += st.size


def _remove_unless_touched(ds: Datastore, key: str, min_atime: int) -> bool:
    """Rename the chunk aside, look at its atime again, then unlink it or put it back.

    A backup in another process that deduplicated against this chunk touched it either
    before the rename (seen here: put back) or after (its touch fails and it writes the
    chunk anew), so a chunk a finished backup relies on is never lost.
    """
    aside = key + SWEEP_SUFFIX
    try:
        ds.backend.rename(key, aside)
    except NotFound:
        return False
    st = _stat(ds, aside)
    if st is not None and st.atime_ns // 1_000_000_000 >= min_atime:
        _restore_aside(ds, aside, key)
        return False
    _unlink(ds, aside)
    return True


def _restore_aside(ds: Datastore, aside: str, key: str) -> None:
    try:
        ds.backend.rename(aside, key, no_replace=True)
    except ChunkyardError:  # a backup wrote the chunk anew meanwhile: the same content
        _unlink(ds, aside)


def _finish_interrupted_sweep(ds: Datastore, key: str) -> None:
    """A GC killed between its rename and its unlink: the chunk was judged unused, unless a
    backup touched it just before; put it back if its name is free, else drop it."""
    _restore_aside(ds, key + SWEEP_SUFFIX, key)


def _unlink(ds: Datastore, key: str) -> None:
    try:
        ds.backend.remove(key)
    except NotFound:
        return
    except ChunkyardError as e:
        raise DatastoreError(f"GC aborted: cannot remove {key}: {e}") from None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
