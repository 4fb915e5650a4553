"""GC's passes over every chunk file: atime updates in batches and one-pass surveys of a
prefix directory.

A Python loop costs more per chunk than the system call it makes, so on a local backend both
run in C (`_chunkfs.c`) with the GIL released, on a file descriptor of `.chunks` held for the
whole pass (GC holds the chunk-store lock meanwhile). Other backends get the same results
from the generic `StorageBackend` calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from chunkyard.datastore import _chunkfs
from chunkyard.datastore.backend import EntryKind, StorageBackend
from chunkyard.datastore.chunk_store import DIGEST_SIZE, chunk_key
from chunkyard.datastore.layout import CHUNKS_DIR
from chunkyard.errors import DatastoreError, NotFound

_HEX = frozenset("0123456789abcdef")
# utimensat dirties each inode: it costs about twice a stat, in the kernel, and scales over
# cores; the native loop splits large batches over this many threads.
TOUCH_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass
class Survey:
    """One prefix directory: the chunk files in use (atime at or after `min_atime`), split at
    `oldest_writer` into on-disk and pending ones; the candidates for removal (names of
    chunk files with an older atime); every other name, for the caller to judge."""

    disk_chunks: int = 0
    disk_bytes: int = 0
    pending_chunks: int = 0
    pending_bytes: int = 0
    candidates: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)


def is_chunk_name(name: str) -> bool:
    return len(name) == 64 and _HEX.issuperset(name)


class ChunkScan:
    """Open with `ChunkScan.open(backend)`; valid until the context ends."""

    def __init__(self, backend: StorageBackend, dirfd: int | None) -> None:
        self._backend = backend
        self._dirfd = dirfd

    @classmethod
    @contextmanager
    def open(cls, backend: StorageBackend) -> Iterator[ChunkScan]:
        path = backend.local_path(CHUNKS_DIR)
        if path is None:
            yield cls(backend, None)
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise DatastoreError(f"cannot open {path!r}: {e.strerror}") from None
        try:
            yield cls(backend, fd)
        finally:
            os.close(fd)

    def touch(self, digests: list[bytes]) -> list[bytes]:
        """Set each chunk's atime to now (mtime kept, as `StorageBackend.touch_atime`);
        the digests whose chunk file does not exist (on up to TOUCH_THREADS threads)."""
        if self._dirfd is None:
            missing = []
            for digest in digests:
                try:
                    self._backend.touch_atime(chunk_key(digest))
                except NotFound:
                    missing.append(digest)
            return missing
        buffer = b"".join(digests)
        if len(buffer) != DIGEST_SIZE * len(digests):
            raise DatastoreError("chunk digests must be 32 bytes each")
        try:
            return [digests[i] for i in _chunkfs.touch_atimes(self._dirfd, buffer,
                                                                 TOUCH_THREADS)]
        except OSError as e:
            raise DatastoreError(
                f"cannot update the access time of {CHUNKS_DIR}/{e.filename}: {e.strerror}"
            ) from None

    def survey(self, prefix: str, min_atime: int, oldest_writer: int) -> Survey:
        """One pass over `.chunks/<prefix>` (NotFound if it is missing)."""
        if self._dirfd is None:
            return self._survey_generic(prefix, min_atime, oldest_writer)
        try:
            counts = _chunkfs.survey_dir(self._dirfd, prefix, min_atime, oldest_writer)
        except FileNotFoundError:
            raise NotFound(f"{CHUNKS_DIR}/{prefix} is missing") from None
        except OSError as e:
            raise DatastoreError(f"cannot list {CHUNKS_DIR}/{prefix}: {e.strerror}") from None
        return Survey(*counts)

    def _survey_generic(self, prefix: str, min_atime: int, oldest_writer: int) -> Survey:
        out = Survey()
        key = f"{CHUNKS_DIR}/{prefix}"
        for entry in self._backend.list_dir(key):
            if not is_chunk_name(entry.name):
                out.others.append(entry.name)
                continue
            try:
                st = self._backend.stat(f"{key}/{entry.name}")
            except NotFound:
                continue
            if st.kind != EntryKind.FILE:
                continue
            atime = st.atime_ns // 1_000_000_000
            if atime < min_atime:
                out.candidates.append(entry.name)
            elif atime < oldest_writer:
                out.pending_chunks += 1
                out.pending_bytes += st.size
            else:
                out.disk_chunks += 1
                out.disk_bytes += st.size
        return out


__all__ = ["ChunkScan", "Survey", "is_chunk_name"]
