"""Local-mode restore of one archive of a snapshot, under NS S, GA S and SN S until the last
byte is written (also when writing to standard output)."""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from chunkyard.client.progress import NullReporter, Reporter
from chunkyard.client.tar_extract import TarExtractor
from chunkyard.datastore.chunk_store import ChunkStore
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import Mode
from chunkyard.errors import ChunkyardError, CryptError, FormatError, NotFound
from chunkyard.formats.blob import decode_blob, decode_chunk
from chunkyard.formats.crypt import CryptConfig
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import BackupManifest, FileInfo
from chunkyard.names import BackupDir, BackupNamespace, archive_kind

READ_AHEAD = 8


@dataclass
class RestoreRequest:
    namespace: BackupNamespace
    snapshot: BackupDir
    archive: str
    target: str  # a directory for .tar, a file otherwise; "-" is standard output
    crypt: CryptConfig | None = None
    wait: float = 0.0


@dataclass
class RestoreResult:
    archive: str
    bytes: int
    files: int = 0
    warnings: list[str] = field(default_factory=list)


def iter_chunks(store: ChunkStore, index: DynamicIndex | FixedIndex,
                crypt: CryptConfig | None, workers: int = 3) -> Iterator[bytes]:
    """The archive's bytes, chunk by chunk, loaded and verified on worker threads."""

    def load(i: int) -> bytes:
        digest = index.digest(i)
        start, end = index.chunk_range(i)
        return decode_chunk(store.load(digest), digest, crypt=crypt, expected_size=end - start)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restore") as pool:
        pending: deque[Future[bytes]] = deque()
        count = index.chunk_count
        submitted = 0
        try:
            while submitted < count or pending:
                while submitted < count and len(pending) < READ_AHEAD:
                    pending.append(pool.submit(load, submitted))
                    submitted += 1
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _resolve_archive(manifest: BackupManifest, archive: str) -> FileInfo:
    name = archive_kind(archive)
    for info in manifest.files:
        if info.filename == name:
            return info
    available = ", ".join(f.filename for f in manifest.files) or "none"
    raise NotFound(f"archive {name!r} is not in the snapshot (archives: {available})")


def _check_crypt(manifest: BackupManifest, info: FileInfo, crypt: CryptConfig | None) -> None:
    if info.crypt_mode == "encrypt" and crypt is None:
        raise CryptError(f"archive {info.filename!r} is encrypted: give --keyfile")
    if crypt is not None and manifest.signature is not None:
        fingerprint = manifest.unprotected.get("key-fingerprint")
        if fingerprint is not None and fingerprint != crypt.fingerprint_str():
            raise CryptError(
                f"wrong key: the snapshot was made with key {fingerprint}, "
                f"not {crypt.fingerprint_str()}")
        manifest.verify_signature(crypt)


def _open_output(target: str) -> tuple[BinaryIO, bool]:
    if target == "-":
        return sys.stdout.buffer, False
    try:
        return open(target, "xb"), True
    except FileExistsError:
        raise ChunkyardError(f"restore target {target!r} already exists") from None
    except OSError as e:
        raise ChunkyardError(f"cannot create {target!r}: {e.strerror}") from None


def run_restore(ds: Datastore, req: RestoreRequest,
                reporter: Reporter | None = None) -> RestoreResult:
    reporter = reporter or NullReporter()
    with ds.locks.session(operation=f"restore {req.snapshot}", wait=req.wait) as session:
        session.snapshot(req.namespace, req.snapshot, Mode.SHARED)
        manifest = ds.load_manifest(req.namespace, req.snapshot)
        info = _resolve_archive(manifest, req.archive)
        _check_crypt(manifest, info, req.crypt)
        if info.filename.endswith(".blob"):
            raw = ds.read_file(req.namespace, req.snapshot, info.filename)
            if len(raw) != info.size or FileInfo.for_blob(info.filename, raw,
                                                          info.crypt_mode).csum != info.csum:
                raise FormatError(f"blob {info.filename!r} does not match its manifest entry")
            data = decode_blob(raw, crypt=req.crypt)
            return RestoreResult(info.filename, _write_out(req.target, [data], NullReporter()))
        index = ds.load_index(req.namespace, req.snapshot, info.filename)
        if index.csum() != info.csum or index.size != info.size:
            raise FormatError(f"index {info.filename!r} does not match its manifest entry")
        reporter.start(info.filename, index.size)
        chunks = iter_chunks(ds.chunk_store, index, req.crypt)
        if info.filename.endswith(".tar.didx") and req.target != "-":
            return _extract(chunks, req.target, info.filename, reporter)
        try:
            return RestoreResult(info.filename, _write_out(req.target, chunks, reporter))
        finally:
            reporter.finish()


def _write_out(target: str, pieces: Iterable[bytes], reporter: Reporter) -> int:
    """Write the pieces to the file `target` (created, never overwritten) or to stdout."""
    out, close = _open_output(target)
    written = 0
    try:
        for data in pieces:
            out.write(data)
            written += len(data)
            reporter.advance(len(data))
        out.flush()
    except BrokenPipeError:
        raise ChunkyardError("output closed before the archive was written") from None
    finally:
        if close:
            out.close()
    return written


def _extract(chunks: Iterator[bytes], target: str, name: str,
             reporter: Reporter) -> RestoreResult:
    if os.path.exists(target) and not os.path.isdir(target):
        raise ChunkyardError(f"restore target {target!r} is not a directory")
    extractor = TarExtractor(target)
    total = 0
    try:
        for data in chunks:
            extractor.feed(data)
            total += len(data)
            reporter.advance(len(data))
        stats = extractor.finish()
    except OSError as e:
        extractor.abort()
        raise ChunkyardError(f"restore into {target!r} failed: {e}") from None
    except BaseException:
        extractor.abort()
        raise
    finally:
        reporter.finish()
    for warning in stats.warnings:
        reporter.warn(warning)
    return RestoreResult(name, total, stats.files, stats.warnings)
