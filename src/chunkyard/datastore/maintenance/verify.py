"""Verify snapshots with PBS's semantics (spec §10; PBS `src/backup/verify.rs`).

Per snapshot (§10.1):
1. NS S, GA S, SN S without waiting; busy: "SKIPPED ... could not acquire snapshot lock",
   which counts as success. A snapshot gone before or after locking is skipped the same way.
2. Load the manifest; a load error fails the snapshot and writes no state.
3. The re-verify filter (§10.2, `needs_verification`): filtered snapshots are skipped as
   "recently verified".
4. Every manifest file: `.blob` by CRC, raw size and SHA-256 against the manifest (unencrypted
   ones are also decoded); `.fidx`/`.didx` by (size, csum) against the manifest, then every
   distinct chunk it references, once per task: known-good chunks are skipped, known-corrupt
   ones count as an error again. A chunk must load (magic, CRC), have the crypt mode the
   index's file entry expects (a mismatch is an error, the chunk is still checked), and when
   unencrypted decode to data of the expected SHA-256 and length. A chunk that fails to load or
   decode is recorded as corrupt and renamed to `<digest>.<N>.bad` (§8.5) without snapshot
   locks, as PBS does: the rename is a single rename(2) in the chunk store, under the chunk's
   in-process lock; GC's sweep tolerates it (it keeps `.bad` files of referenced chunks).
5. MF X (waits up to 5 s) to write `unprotected.verify_state = {"upid", "state"}`; if that
   write fails the snapshot counts as failed.

Scope (§10.3): a namespace and its descendants down to `max_depth`, groups sorted by type,
then id (then namespace, where PBS's order is unspecified), `host/benchmark` left out; a group:
all snapshots newest first; or one snapshot. Chunks of one index are read in inode order
(PBS's default `chunk-order inode`) by `read_threads` reader threads (PBS default 1) and
checked by `decode_threads` decoder threads (PBS default 4); file reads, zstd, SHA-256 and CRC
release the GIL.

Where chunkyard differs on purpose: a chunk referenced twice by one index is read once (PBS may
read it twice when both references are in flight); a stored `verify_state` whose UPID does not
parse counts as no state (PBS: "error reading manifest", verify) — the same result.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockSession, Mode
from chunkyard.datastore.locking.tasks import new_task_upid
from chunkyard.errors import ChunkyardError, FormatError, InvalidName, NotFound
from chunkyard.formats.blob import blob_kind, decode_blob, verify_crc
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import BackupManifest, CryptMode, FileInfo
from chunkyard.names import (
    MAX_NAMESPACE_DEPTH,
    BackupDir,
    BackupGroup,
    BackupNamespace,
    BackupType,
    Upid,
)

log = logging.getLogger(__name__)

DAY = 86400
MAX_THREADS = 32
NO_INODE = 1 << 64  # chunks that cannot be stat'ed are read last (PBS: u64::MAX)
BENCHMARK_GROUP = BackupGroup(BackupType.HOST, "benchmark")

# PBS's worker types for the verify API (store/namespace, group, snapshot)
WORKER_TYPE_STORE = "verify"
WORKER_TYPE_GROUP = "verify_group"
WORKER_TYPE_SNAPSHOT = "verify_snapshot"


# -- options, results ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """`ignore_verified` (default true, as PBS's API and jobs) and `outdated_after` (days,
    None: never re-verify a verified snapshot) form the re-verify filter of §10.2."""

    ignore_verified: bool = True
    outdated_after: int | None = None
    read_threads: int = 1
    decode_threads: int = 4

    def __post_init__(self) -> None:
        oa = self.outdated_after
        if oa is not None and (not isinstance(oa, int) or isinstance(oa, bool) or oa < 0):
            raise InvalidName(f"outdated-after {oa!r} must be a number of days >= 0")
        for name, value in (("read threads", self.read_threads),
                            ("decode threads", self.decode_threads)):
            if not isinstance(value, int) or isinstance(value, bool) or \
                    not 1 <= value <= MAX_THREADS:
                raise InvalidName(f"{name} {value!r} must be 1..{MAX_THREADS}")


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class SkipReason(enum.StrEnum):
    BUSY = "busy"
    RECENTLY_VERIFIED = "recently verified"
    VANISHED = "vanished"


@dataclass(slots=True)
class SnapshotResult:
    """What happened to one snapshot: `errors` are the failed files' messages, `details`
    their chunk-level findings (corrupt chunks, renames), `log` the task log (PBS's wording)."""

    ns: BackupNamespace
    snapshot: BackupDir
    outcome: Outcome
    reason: SkipReason | None = None
    errors: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """PBS's result: skipped counts as success."""
        return self.outcome is not Outcome.FAILED

    def label(self) -> str:
        return ns_and_snapshot(self.ns, self.snapshot)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ns": str(self.ns), "backup-type": self.snapshot.group.type.value,
            "backup-id": self.snapshot.group.id, "backup-time": self.snapshot.time,
            "snapshot": str(self.snapshot), "result": str(self.outcome),
            "reason": None if self.reason is None else str(self.reason),
            "errors": list(self.errors), "details": list(self.details),
        }


@dataclass(slots=True)
class VerifyReport:
    """The whole task: every snapshot's result and the chunk counts."""

    upid: str
    snapshots: list[SnapshotResult]
    chunks_verified: int
    chunks_corrupt: int
    renamed: list[str]
    bytes_read: int
    seconds: float

    @property
    def failed(self) -> list[SnapshotResult]:
        return [r for r in self.snapshots if r.outcome is Outcome.FAILED]

    @property
    def success(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        out = {"snapshots": len(self.snapshots)}
        for o in Outcome:
            out[str(o)] = sum(1 for r in self.snapshots if r.outcome is o)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "upid": self.upid, "result": "ok" if self.success else "failed",
            "counts": self.counts(),
            "chunks": {"verified": self.chunks_verified, "corrupt": self.chunks_corrupt,
                       "renamed": len(self.renamed), "bytes-read": self.bytes_read},
            "renamed-chunks": list(self.renamed),
            "duration": round(self.seconds, 3),
            "snapshots": [r.as_dict() for r in self.snapshots],
        }


class VerifyProgress(Protocol):
    """How a verify run reports progress; `read` may be called from reader threads."""

    def start(self, total_snapshots: int) -> None: ...

    def snapshot_done(self, done: int, result: SnapshotResult) -> None: ...

    def read(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    def start(self, total_snapshots: int) -> None:
        pass

    def snapshot_done(self, done: int, result: SnapshotResult) -> None:
        pass

    def read(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


def ns_and_snapshot(ns: BackupNamespace, snap: BackupDir) -> str:
    """PBS's `print_ns_and_snapshot`: `type/id/time`, prefixed by `ns/a/ns/b/` if not root."""
    return str(snap) if ns.is_root else "/".join([*ns.path_parts(), str(snap)])


# -- the re-verify filter (§10.2) ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VerifyState:
    upid: Upid
    state: str  # "ok" | "failed"


def parse_verify_state(value: object) -> VerifyState | None:
    """`unprotected.verify_state` as PBS deserializes it; None if absent, null or malformed
    (not an object, state not ok/failed, a UPID that does not parse)."""
    if not isinstance(value, dict):
        return None
    state, upid = value.get("state"), value.get("upid")
    if state not in ("ok", "failed") or not isinstance(upid, str):
        return None
    try:
        return VerifyState(Upid.parse(upid), state)
    except InvalidName:
        return None


def needs_verification(manifest: BackupManifest, options: VerifyOptions,
                       now: int | None = None) -> bool:
    """PBS's `verify_filter`: always with `ignore_verified` false; else when there is no
    (readable) verify state; else never without `outdated_after` (even after "failed");
    else when more than `outdated_after` whole days passed since the stored UPID's start."""
    if not options.ignore_verified:
        return True
    raw = manifest.unprotected.get("verify_state")
    if raw is None:
        return True
    state = parse_verify_state(raw)
    if state is None:
        log.warning("error reading manifest: malformed verify_state %r, verifying", raw)
        return True
    if options.outdated_after is None:
        return False
    diff = (int(time.time()) if now is None else now) - state.upid.starttime
    days = diff // DAY if diff >= 0 else -(-diff // DAY)  # Rust's truncating division
    return days > options.outdated_after


def last_verify_failed(manifest: BackupManifest) -> bool:
    """True if the manifest records a failed verification (§10.3: not a backup base)."""
    state = parse_verify_state(manifest.unprotected.get("verify_state"))
    return state is not None and state.state == "failed"


def verify_worker_id(store: str, ns: BackupNamespace, target: BackupGroup | BackupDir | None
                     ) -> tuple[str, str]:
    """PBS's (worker type, worker id) of a verify API call."""
    ns_path = "/".join(ns.path_parts())
    if isinstance(target, BackupDir):
        g = target.group
        return (WORKER_TYPE_SNAPSHOT,
                f"{store}:{ns_path}/{g.type.value}/{g.id}/{target.time:08X}")
    if isinstance(target, BackupGroup):
        return WORKER_TYPE_GROUP, f"{store}:{ns_path}/{target.type.value}/{target.id}"
    return WORKER_TYPE_STORE, store if ns.is_root else f"{store}:{ns_path}"


# -- the worker ---------------------------------------------------------------------------

class _IndexState:
    """Error count and log lines of one index, shared with the reader/decoder threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors = 0
        self.lines: list[str] = []

    def error(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.lines.append(message)

    def info(self, message: str) -> None:
        with self.lock:
            self.lines.append(message)


class VerifyWorker:
    """One verify task: the UPID it records and the chunks it has seen (good and corrupt),
    so each distinct chunk is read at most once. Use as a context manager (thread pools)."""

    def __init__(self, ds: Datastore, upid: Upid | str, options: VerifyOptions | None = None,
                 progress: VerifyProgress | None = None) -> None:
        self.ds = ds
        self.upid = str(upid)
        Upid.parse(self.upid)  # validated: it is written into manifests
        self.options = options or VerifyOptions()
        self.progress: VerifyProgress = progress or NullProgress()
        self._lock = threading.Lock()
        self.verified_chunks: set[bytes] = set()
        self.corrupt_chunks: set[bytes] = set()
        self.renamed: list[str] = []
        self.bytes_read = 0
        self._readers = ThreadPoolExecutor(self.options.read_threads, "verify-read")
        self._decoders = ThreadPoolExecutor(self.options.decode_threads, "verify-decode")
        # chunks read but not yet checked: bounds memory to a few chunks per thread
        self._slots = threading.BoundedSemaphore(
            self.options.read_threads + 2 * self.options.decode_threads)

    def __enter__(self) -> VerifyWorker:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._readers.shutdown(wait=True, cancel_futures=True)
        self._decoders.shutdown(wait=True, cancel_futures=True)

    # -- snapshots ----------------------------------------------------------------------

    def verify_snapshot(self, ns: BackupNamespace, snap: BackupDir) -> SnapshotResult:
        """Verify one snapshot under NS S, GA S, SN S (no waiting) and record the result."""
        result = SnapshotResult(ns, snap, Outcome.OK)
        where = f"{self.ds.name}:{ns_and_snapshot(ns, snap)}"
        if not self.ds.snapshot_exists(ns, snap):
            return self._skip(result, SkipReason.VANISHED,
                              f"SKIPPED: verify {where} - snapshot does not exist (anymore).")
        with self.ds.locks.session(f"verify {snap}", wait=0.0, task_id=self.upid) as session:
            try:
                session.snapshot(ns, snap, Mode.SHARED, wait=0.0)
            except LockBusy as e:
                return self._skip(result, SkipReason.BUSY,
                                  f"SKIPPED: verify {where} - could not acquire snapshot lock: "
                                  f"{e}")
            if not self.ds.snapshot_exists(ns, snap):
                return self._skip(result, SkipReason.VANISHED,
                                  f"SKIPPED: verify {where} - snapshot does not exist "
                                  "(anymore).")
            return self._verify_locked(session, result, where)

    @staticmethod
    def _skip(result: SnapshotResult, reason: SkipReason, line: str) -> SnapshotResult:
        result.outcome, result.reason = Outcome.SKIPPED, reason
        result.log.append(line)
        return result

    def _verify_locked(self, session: LockSession, result: SnapshotResult,
                       where: str) -> SnapshotResult:
        ns, snap = result.ns, result.snapshot
        try:
            manifest = self.ds.load_manifest(ns, snap)
        except ChunkyardError as e:
            result.outcome = Outcome.FAILED
            result.errors.append(f"manifest load error: {e}")
            result.log.append(f"verify {where} - manifest load error: {e}")
            return result
        if not needs_verification(manifest, self.options):
            return self._skip(result, SkipReason.RECENTLY_VERIFIED,
                              f"SKIPPED: verify {where} (recently verified)")
        result.log.append(f"verify {where}")
        for info in manifest.files:
            result.log.append(f"  check {info.filename}")
            findings: list[str] = []  # chunk-level errors and renames
            stats: list[str] = []
            try:
                self._verify_file(ns, snap, info, findings, stats)
            except (ChunkyardError, OSError) as e:
                result.log.extend(findings + stats)
                result.details.extend(findings)
                result.errors.append(f"{info.filename}: {e}")
                result.log.append(f"verify {where}/{info.filename} failed: {e}")
            else:
                result.log.extend(findings + stats)
        state = "ok" if not result.errors else "failed"
        try:
            with session.manifest(ns, snap):
                current = self.ds.load_manifest(ns, snap)
                current.unprotected["verify_state"] = {"upid": self.upid, "state": state}
                self.ds.write_manifest(ns, snap, current)
        except (ChunkyardError, OSError) as e:
            result.outcome = Outcome.FAILED
            result.errors.append(f"manifest update error: {e}")
            result.log.append(f"verify {where} - manifest update error: {e}")
            return result
        result.outcome = Outcome.OK if state == "ok" else Outcome.FAILED
        return result

    # -- files --------------------------------------------------------------------------

    def _verify_file(self, ns: BackupNamespace, snap: BackupDir, info: FileInfo,
                     findings: list[str], stats: list[str]) -> None:
        name = info.filename
        if name.endswith(".blob"):
            self._verify_blob(ns, snap, info)
        elif name.endswith((".fidx", ".didx")):
            index = self.ds.load_index(ns, snap, name)
            self._verify_index(index, info, findings, stats)
        else:
            raise FormatError(f"unknown archive type: {name}")

    def _verify_blob(self, ns: BackupNamespace, snap: BackupDir, info: FileInfo) -> None:
        raw = self.ds.read_file(ns, snap, info.filename)
        kind = blob_kind(raw)
        verify_crc(raw)  # what PBS's load_blob checks
        if len(raw) != info.size:
            raise FormatError(f"wrong size ({info.size} != {len(raw)})")
        if hashlib.sha256(raw).digest() != info.csum:
            raise FormatError("wrong index checksum")
        if not kind.encrypted:
            decode_blob(raw)

    def _verify_index(self, index: FixedIndex | DynamicIndex, info: FileInfo,
                      findings: list[str], stats: list[str]) -> None:
        if index.size != info.size:
            raise FormatError(f"wrong size ({info.size} != {index.size})")
        if index.csum() != info.csum:
            raise FormatError("wrong index checksum")
        encrypted = info.crypt_mode == CryptMode.ENCRYPT
        state = _IndexState()
        started = time.monotonic()
        todo = self._chunks_to_read(index, state)
        read_before = self.bytes_read
        self._check_chunks(todo, encrypted, state)
        elapsed = max(time.monotonic() - started, 1e-9)
        mib = (self.bytes_read - read_before) / (1024 * 1024)
        findings.extend(state.lines)
        stats.append(f"  verified {mib:.2f} MiB in {elapsed:.2f} seconds, speed "
                     f"{mib / elapsed:.2f} MiB/s ({state.errors} errors)")
        if state.errors:
            raise FormatError("chunks could not be verified")

    # -- chunks -------------------------------------------------------------------------

    def _chunks_to_read(self, index: FixedIndex | DynamicIndex,
                        state: _IndexState) -> list[tuple[bytes, int]]:
        """The index's distinct chunks not yet seen in this task, in inode order; a chunk
        already known to be corrupt counts as an error of this index."""
        todo: dict[bytes, int] = {}
        with self._lock:
            verified, corrupt = set(self.verified_chunks), set(self.corrupt_chunks)
        reported: set[bytes] = set()
        for i, digest in enumerate(index.iter_digests()):
            if digest in todo or digest in verified:
                continue
            if digest in corrupt:
                if digest not in reported:
                    reported.add(digest)
                    state.error(f"chunk {digest.hex()} was marked as corrupt")
                continue
            start, end = index.chunk_range(i)
            todo[digest] = end - start
        store = self.ds.chunk_store

        def inode(digest: bytes) -> int:
            try:
                return store.stat(digest).inode
            except (ChunkyardError, OSError):
                return NO_INODE

        keyed = [(inode(d), d, size) for d, size in todo.items()]
        keyed.sort(key=lambda t: t[0])
        return [(d, size) for _, d, size in keyed]

    def _check_chunks(self, todo: list[tuple[bytes, int]], encrypted: bool,
                      state: _IndexState) -> None:
        reads: list[Future[Future[None] | None]] = []
        try:
            for digest, size in todo:
                self._slots.acquire()
                try:
                    reads.append(self._readers.submit(
                        self._read_chunk, digest, size, encrypted, state))
                except BaseException:
                    self._slots.release()
                    raise
        finally:
            for fut in reads:  # wait for everything sent, even when interrupted
                checked = fut.result()
                if checked is not None:
                    checked.result()

    def _read_chunk(self, digest: bytes, size: int, encrypted: bool,
                    state: _IndexState) -> Future[None] | None:
        try:
            raw = self.ds.chunk_store.load(digest)
        except (ChunkyardError, OSError) as e:
            self._slots.release()
            self._mark_corrupt(digest, f"can't verify chunk, load failed - {e}", state)
            return None
        try:
            with self._lock:
                self.bytes_read += len(raw)
            self.progress.read(len(raw))
            return self._decoders.submit(self._check_chunk, raw, digest, size, encrypted, state)
        except BaseException:
            self._slots.release()
            raise

    def _check_chunk(self, raw: bytes, digest: bytes, size: int, encrypted: bool,
                     state: _IndexState) -> None:
        try:
            try:
                kind = blob_kind(raw)
                if kind.encrypted:
                    verify_crc(raw)
                    data = b""
                else:
                    data = decode_blob(raw)  # checks the CRC too
            except FormatError as e:
                self._mark_corrupt(digest, f"can't verify chunk, load failed - {e}", state)
                return
            if kind.encrypted != encrypted:
                state.error(
                    f"chunk {digest.hex()}: chunk crypt mode "
                    f"{'encrypt' if kind.encrypted else 'none'} does not match index crypt "
                    f"mode {'encrypt' if encrypted else 'none'}")
            if not kind.encrypted:
                if hashlib.sha256(data).digest() != digest:
                    self._mark_corrupt(
                        digest, f"chunk {digest.hex()}: detected chunk with wrong digest.", state)
                    return
                if len(data) != size:
                    self._mark_corrupt(
                        digest, f"chunk {digest.hex()}: detected chunk with wrong length "
                        f"({size} != {len(data)})", state)
                    return
            with self._lock:
                self.verified_chunks.add(digest)
        finally:
            self._slots.release()

    def _mark_corrupt(self, digest: bytes, message: str, state: _IndexState) -> None:
        with self._lock:
            self.corrupt_chunks.add(digest)
        state.error(message)
        try:
            new = self.ds.chunk_store.rename_corrupt(digest)
        except (ChunkyardError, OSError) as e:
            state.info(f"could not rename corrupt chunk {digest.hex()} - {e}")
            return
        if new is not None:
            with self._lock:
                self.renamed.append(new)
            state.info(f"corrupt chunk renamed to {new}")


# -- scope and the task -------------------------------------------------------------------

def plan_snapshots(ds: Datastore, ns: BackupNamespace,
                   target: BackupGroup | BackupDir | None = None,
                   max_depth: int | None = None) -> list[tuple[BackupNamespace, BackupDir]]:
    """What a verify of `target` (or of `ns` and its descendants) covers, in PBS's order.

    Listing takes no locks (as PBS): each snapshot is checked again under its lock. The
    namespace, group or snapshot named must exist (NotFound).
    """
    ds.require_namespace(ns)
    if isinstance(target, BackupDir):
        ds.require_snapshot(ns, target)
        return [(ns, target)]
    if isinstance(target, BackupGroup):
        ds.require_group(ns, target)
        return list(_group_snapshots(ds, ns, target))
    depth = MAX_NAMESPACE_DEPTH if max_depth is None else max_depth
    groups: list[tuple[BackupGroup, BackupNamespace]] = []
    for child in ds.iter_namespaces(ns, depth):
        try:
            found = ds.list_groups(child)
        except NotFound:  # removed meanwhile
            continue
        groups.extend((g, child) for g in found if g != BENCHMARK_GROUP)
    groups.sort()
    out: list[tuple[BackupNamespace, BackupDir]] = []
    for group, child in groups:
        out.extend(_group_snapshots(ds, child, group))
    return out


def _group_snapshots(ds: Datastore, ns: BackupNamespace,
                     group: BackupGroup) -> Iterator[tuple[BackupNamespace, BackupDir]]:
    try:
        infos = ds.list_snapshots(ns, group)
    except NotFound:  # removed meanwhile (PBS: "unable to list backups", not a failure)
        return
    for info in reversed(infos):  # newest first
        yield ns, info.dir


def run_verify(ds: Datastore, *, authid: str, ns: BackupNamespace | None = None,
               target: BackupGroup | BackupDir | None = None, max_depth: int | None = None,
               options: VerifyOptions | None = None, progress: VerifyProgress | None = None,
               upid: Upid | None = None,
               on_result: Callable[[SnapshotResult], None] | None = None) -> VerifyReport:
    """One verify task over `target` (a snapshot or group in `ns`) or over `ns` and its
    descendants. Its UPID (PBS's worker type and id unless given) is recorded in every
    verified manifest; the report says which snapshots failed."""
    ns = BackupNamespace.root() if ns is None else ns
    if upid is None:
        wtype, wid = verify_worker_id(ds.name, ns, target)
        upid = new_task_upid(wtype, wid, authid)
    started = time.monotonic()
    plan = plan_snapshots(ds, ns, target, max_depth)
    prog: VerifyProgress = progress or NullProgress()
    results: list[SnapshotResult] = []
    with VerifyWorker(ds, upid, options, prog) as worker:
        prog.start(len(plan))
        try:
            for done, (snap_ns, snap) in enumerate(plan, 1):
                result = worker.verify_snapshot(snap_ns, snap)
                results.append(result)
                prog.snapshot_done(done, result)
                if on_result is not None:
                    on_result(result)
        finally:
            prog.finish()
        return VerifyReport(
            upid=str(upid), snapshots=results, chunks_verified=len(worker.verified_chunks),
            chunks_corrupt=len(worker.corrupt_chunks), renamed=list(worker.renamed),
            bytes_read=worker.bytes_read, seconds=time.monotonic() - started)


__all__ = [
    "NullProgress",
    "Outcome",
    "SkipReason",
    "SnapshotResult",
    "VerifyOptions",
    "VerifyProgress",
    "VerifyReport",
    "VerifyState",
    "VerifyWorker",
    "last_verify_failed",
    "needs_verification",
    "parse_verify_state",
    "plan_snapshots",
    "run_verify",
    "verify_worker_id",
]
