"""Local-mode backup: archives of a directory, an image or a small file into a new snapshot.

Follows the backup protocol's server-side rules (spec §11.6) in-process: the namespace must
exist, the group is created with its owner or the caller must own it, the base is the newest
finished snapshot unless its verification failed, the new time must be newer than the base,
and a backup that fails leaves no snapshot behind. Locks: NS(n) S, GW X, GA S, SN(base) S,
SN(new) X and CS S for the whole run; MF X for the manifest at the end.
"""

from __future__ import annotations

import os
import stat
import time
import uuid as uuidlib
from dataclasses import dataclass, field

from chunkyard.client.archive_stream import ArchiveStream, PreviousStream
from chunkyard.client.chunk_sink import ChunkSink, UploadStats
from chunkyard.client.metadata_cache import MetadataCache
from chunkyard.client.progress import NullReporter, Reporter
from chunkyard.client.tar_archive import write_tar
from chunkyard.client.tree import start_size_estimate
from chunkyard.datastore.datastore import Datastore, SnapshotInfo
from chunkyard.datastore.locking import LockSession, Mode
from chunkyard.errors import ChunkyardError, DatastoreError
from chunkyard.formats.blob import encode_blob
from chunkyard.formats.chunker import DEFAULT_AVG, FIXED_CHUNK_SIZE, Chunker, split_fixed
from chunkyard.formats.crypt import CryptConfig
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace, archive_kind

MAX_CONFIG_BLOB = 16 * 1024 * 1024
ALLOWED_CHUNK_SIZES = frozenset(1024 * k for k in (64, 128, 256, 512, 1024, 2048, 4096))


@dataclass(frozen=True)
class ArchiveSpec:
    """`NAME.tar:DIR`, `NAME.img:FILE` or `NAME.conf:FILE` as given on the command line."""

    name: str  # stored name, e.g. root.tar.didx
    source: str

    @classmethod
    def parse(cls, text: str) -> ArchiveSpec:
        name, sep, source = text.partition(":")
        if not sep or not source:
            raise ChunkyardError(f"backup source {text!r} is not of the form NAME.EXT:PATH")
        return cls(archive_kind(name), source)

    @property
    def kind(self) -> str:
        if self.name.endswith(".blob"):
            return "blob"
        if self.name.endswith(".fidx"):
            return "image"
        return "tar"


@dataclass
class ArchiveReport:
    name: str
    size: int
    entries: int = 0
    files_read: int = 0
    bytes_reused: int = 0
    chunks_reused: int = 0


@dataclass
class BackupResult:
    snapshot: BackupDir
    namespace: BackupNamespace
    archives: list[ArchiveReport]
    upload: UploadStats
    base: BackupDir | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class BackupRequest:
    namespace: BackupNamespace
    group: BackupGroup
    backup_time: int
    archives: list[ArchiveSpec]
    owner: Authid
    crypt: CryptConfig | None = None
    wait: float = 0.0
    chunk_size: int = DEFAULT_AVG  # average dynamic chunk size (PBS: --chunk-size)

    def __post_init__(self) -> None:
        if self.chunk_size not in ALLOWED_CHUNK_SIZES:
            raise ChunkyardError(
                f"chunk size {self.chunk_size} is not allowed: use 64, 128, 256, 512, 1024, "
                "2048 or 4096 KiB")


def _crypt_mode(crypt: CryptConfig | None) -> str:
    return "encrypt" if crypt is not None else "none"


class _BackupRun:
    def __init__(self, ds: Datastore, req: BackupRequest, reporter: Reporter) -> None:
        self.ds = ds
        self.req = req
        self.reporter = reporter
        self.snapshot = BackupDir(req.group, req.backup_time)
        self.warnings: list[str] = []

    def base_snapshot(self) -> SnapshotInfo | None:
        """The newest finished snapshot, unless its last verification failed (§10.3)."""
        info = self.ds.last_finished_snapshot(self.req.namespace, self.req.group)
        if info is None:
            return None
        try:
            manifest = self.ds.load_manifest(self.req.namespace, info.dir)
        except ChunkyardError:
            return None
        state = manifest.unprotected.get("verify_state")
        if isinstance(state, dict) and state.get("state") == "failed":
            return None
        return info

    def previous_manifest(self, base: SnapshotInfo | None) -> BackupManifest | None:
        """The base manifest, if its chunks can be referenced (same encryption key)."""
        if base is None:
            return None
        manifest = self.ds.load_manifest(self.req.namespace, base.dir)
        ours = self.req.crypt.fingerprint_str() if self.req.crypt is not None else None
        if manifest.unprotected.get("key-fingerprint") != ours:
            return None
        return manifest

    def known_chunks(self, base: SnapshotInfo, manifest: BackupManifest) -> set[bytes]:
        known: set[bytes] = set()
        for info in manifest.files:
            if info.filename.endswith((".didx", ".fidx")):
                try:
                    index = self.ds.load_index(self.req.namespace, base.dir, info.filename)
                except ChunkyardError:
                    continue
                known.update(index.digest_list())
        return known

    def run(self, session: LockSession) -> BackupResult:
        req, ds = self.req, self.ds
        started = time.monotonic()
        session.group_writer(req.namespace, req.group)
        session.group(req.namespace, req.group, Mode.SHARED)
        ds.require_namespace(req.namespace)
        owner = ds.make_group_dir(req.namespace, req.group, req.owner)
        if owner != req.owner:
            raise DatastoreError(
                f"backup owner check failed: group {req.group} belongs to {owner}, not {req.owner}")
        base = self.base_snapshot()
        if base is not None and base.dir.time >= req.backup_time:
            raise DatastoreError(
                f"backup time {self.snapshot.time_string} must be newer than the last backup "
                f"{base.dir.time_string}")
        if base is not None:
            session.snapshot(req.namespace, base.dir, Mode.SHARED)
        session.snapshot(req.namespace, self.snapshot, Mode.EXCLUSIVE)
        ds.make_snapshot_dir(req.namespace, self.snapshot)
        try:
            chunk_lock = session.chunk_store(Mode.SHARED)
            prev_manifest = self.previous_manifest(base)
            known = self.known_chunks(base, prev_manifest) if base and prev_manifest else set()
            sink = ChunkSink(ds.chunk_store, req.crypt, known)
            reports: list[ArchiveReport] = []
            files: list[FileInfo] = []
            try:
                for spec in req.archives:
                    info, report = self.backup_archive(spec, sink, base, prev_manifest)
                    files.append(info)
                    reports.append(report)
            finally:
                sink.close()
            chunk_lock.release()
            self.write_manifest(session, files, sink.stats)
        except BaseException:
            ds.remove_snapshot_dir(req.namespace, self.snapshot, force=True)
            raise
        return BackupResult(self.snapshot, req.namespace, reports, sink.stats,
                            base.dir if base else None, time.monotonic() - started,
                            self.warnings)

    # -- archives -------------------------------------------------------------------------
    def backup_archive(self, spec: ArchiveSpec, sink: ChunkSink, base: SnapshotInfo | None,
                       prev: BackupManifest | None) -> tuple[FileInfo, ArchiveReport]:
        if spec.kind == "blob":
            return self.backup_blob(spec)
        if spec.kind == "image":
            return self.backup_image(spec, sink, base, prev)
        return self.backup_tar(spec, sink, base, prev)

    def _previous_index(self, base: SnapshotInfo | None, prev: BackupManifest | None,
                        name: str) -> DynamicIndex | FixedIndex | None:
        if base is None or prev is None or name not in {f.filename for f in prev.files}:
            return None
        try:
            return self.ds.load_index(self.req.namespace, base.dir, name)
        except ChunkyardError as e:
            self.warnings.append(f"previous index {name} unusable, not reusing it: {e}")
            return None

    def backup_tar(self, spec: ArchiveSpec, sink: ChunkSink, base: SnapshotInfo | None,
                   prev: BackupManifest | None) -> tuple[FileInfo, ArchiveReport]:
        req = self.req
        previous = self._previous_index(base, prev, spec.name)
        cache = MetadataCache.for_archive(self.ds.identity, str(req.namespace), str(req.group),
                                          spec.name)
        cached = {}
        previous_stream = None
        if isinstance(previous, DynamicIndex) and base is not None:
            previous_stream = PreviousStream(previous.end_list(), previous.digest_list())
            cached = cache.load(base.dir.time, previous.csum())
        estimate = previous.size if previous is not None else None
        self.reporter.start(f"{spec.name}", estimate)
        if estimate is None and self.reporter.wants_estimate:
            start_size_estimate(spec.source, self.reporter.set_total)
        stream = ArchiveStream(Chunker(req.chunk_size), sink, previous_stream,
                               progress=self.reporter.advance)
        result = write_tar(spec.source, stream, cached)
        ends, digests = stream.finish()
        self.reporter.finish()
        for warning in result.warnings + stream.warnings:
            self.reporter.warn(warning)
        self.warnings.extend(result.warnings + stream.warnings)
        index = DynamicIndex.from_chunks(ends, digests, uuid=uuidlib.uuid4().bytes,
                                         ctime=int(time.time()))
        self.ds.write_index_file(req.namespace, self.snapshot, spec.name, index.encode())
        cache.save(req.backup_time, index.csum(), result.cache)
        info = FileInfo(spec.name, _crypt_mode(req.crypt), index.size, index.csum())
        return info, ArchiveReport(spec.name, index.size, result.entries, result.files_read,
                                   stream.stats.bytes_reused, stream.stats.chunks_reused)

    def backup_image(self, spec: ArchiveSpec, sink: ChunkSink, base: SnapshotInfo | None,
                     prev: BackupManifest | None) -> tuple[FileInfo, ArchiveReport]:
        req = self.req
        fd = _open_source(spec.source)
        try:
            st = os.fstat(fd)
            if stat.S_ISBLK(st.st_mode):
                size = os.lseek(fd, 0, os.SEEK_END)
                os.lseek(fd, 0, os.SEEK_SET)
            elif stat.S_ISREG(st.st_mode):
                size = st.st_size
            else:
                raise ChunkyardError(f"{spec.source!r} is neither a file nor a block device")
            if size == 0:
                raise ChunkyardError(f"image {spec.source!r} is empty (PBS needs at least 1 byte)")
            previous = self._previous_index(base, prev, spec.name)
            cache = MetadataCache.for_archive(self.ds.identity, str(req.namespace),
                                              str(req.group), spec.name)
            fingerprint = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
            reused = False
            self.reporter.start(spec.name, size)
            if (isinstance(previous, FixedIndex) and base is not None and previous.size == size
                    and stat.S_ISREG(st.st_mode)):
                cached = cache.load(base.dir.time, previous.csum())
                if cached.get("image", (None,))[0] == fingerprint:
                    digests = previous.digest_list()
                    reused = True
                    self.reporter.advance(size)
            if not reused:
                futures = []
                for start, end in split_fixed(size):
                    futures.append(sink.submit(_read_exact(fd, end - start, spec.source)))
                    self.reporter.advance(end - start)
                digests = [f.result()[0] for f in futures]
            self.reporter.finish()
        finally:
            os.close(fd)
        index = FixedIndex.from_chunks(size, FIXED_CHUNK_SIZE, digests,
                                       uuid=uuidlib.uuid4().bytes, ctime=int(time.time()))
        self.ds.write_index_file(req.namespace, self.snapshot, spec.name, index.encode())
        if stat.S_ISREG(st.st_mode):
            cache.save(req.backup_time, index.csum(), {"image": (fingerprint, 0, size)})
        info = FileInfo(spec.name, _crypt_mode(req.crypt), index.size, index.csum())
        report = ArchiveReport(spec.name, size, 1, 0 if reused else 1)
        if reused:
            report.bytes_reused, report.chunks_reused = size, len(digests)
        return info, report

    def backup_blob(self, spec: ArchiveSpec) -> tuple[FileInfo, ArchiveReport]:
        fd = _open_source(spec.source)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ChunkyardError(f"{spec.source!r} is not a regular file")
            if st.st_size > MAX_CONFIG_BLOB:
                raise ChunkyardError(
                    f"{spec.source!r} is {st.st_size} bytes; a .blob archive holds at most "
                    f"16 MiB (use NAME.img for larger files)")
            data = _read_exact(fd, st.st_size, spec.source)
        finally:
            os.close(fd)
        raw = encode_blob(data, compress=True, crypt=self.req.crypt)
        self.ds.write_blob_file(self.req.namespace, self.snapshot, spec.name, raw)
        info = FileInfo.for_blob(spec.name, raw, _crypt_mode(self.req.crypt))
        return info, ArchiveReport(spec.name, len(data), 1, 1)

    # -- manifest ---------------------------------------------------------------------------
    def write_manifest(self, session: LockSession, files: list[FileInfo],
                       stats: UploadStats) -> None:
        req = self.req
        manifest = BackupManifest(
            backup_type=req.group.type.value, backup_id=req.group.id,
            backup_time=req.backup_time, files=files, unprotected={}, signature=None)
        if req.crypt is not None:
            manifest.unprotected["key-fingerprint"] = req.crypt.fingerprint_str()
            manifest.sign(req.crypt)
        manifest.unprotected["chunk_upload_stats"] = stats.as_manifest_stats()
        guard = session.manifest(req.namespace, self.snapshot)
        try:
            self.ds.write_manifest(req.namespace, self.snapshot, manifest)
            self.ds.sync_after_backup()
        finally:
            guard.release()


def _open_source(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ChunkyardError(f"cannot open {path!r}: {e.strerror}") from None


def _read_exact(fd: int, n: int, name: str) -> bytes:
    parts: list[bytes] = []
    remaining = n
    while remaining:
        data = os.read(fd, remaining)
        if not data:
            raise ChunkyardError(f"{name!r} shrank while it was read")
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def run_backup(ds: Datastore, req: BackupRequest,
               reporter: Reporter | None = None) -> BackupResult:
    """Create one snapshot holding every requested archive, under the backup's locks."""
    if not req.archives:
        raise ChunkyardError("nothing to back up: give at least one NAME.EXT:PATH")
    names = [a.name for a in req.archives]
    if len(set(names)) != len(names):
        raise ChunkyardError("archive names must be unique within a snapshot")
    run = _BackupRun(ds, req, reporter or NullReporter())
    with ds.locks.session(operation=f"backup {req.group}", wait=req.wait) as session:
        return run.run(session)
