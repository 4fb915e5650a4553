"""Hash, compress, encrypt and store chunks on worker threads (hashlib and zstd release the GIL).

A chunk the previous snapshot already references, or that this session already stored, is not
written again; one that another snapshot stored is only touched (PBS's duplicate rule keeps GC
from sweeping it). Results come back as futures so the index keeps stream order.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from chunkyard.datastore.chunk_store import ChunkStore
from chunkyard.errors import NotFound
from chunkyard.formats.blob import chunk_digest, encode_blob
from chunkyard.formats.crypt import CryptConfig


@dataclass
class UploadStats:
    """Counts in the shape of PBS's `chunk_upload_stats` plus bytes read."""

    count: int = 0
    size: int = 0
    compressed_size: int = 0
    duplicates: int = 0

    def as_manifest_stats(self) -> dict[str, int]:
        return {"count": self.count, "size": self.size,
                "compressed_size": self.compressed_size, "duplicates": self.duplicates}


ChunkResult = tuple[bytes, int]  # (digest, plain size)


class ChunkSink:
    """Accepts chunk data in stream order and stores what the datastore does not have yet."""

    def __init__(self, store: ChunkStore, crypt: CryptConfig | None, known: set[bytes],
                 workers: int = 3, max_in_flight: int = 8) -> None:
        self._store = store
        self._crypt = crypt
        self._known = known
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk")
        self._in_flight: deque[Future[ChunkResult]] = deque()
        self._max_in_flight = max_in_flight
        self.stats = UploadStats()

    def submit(self, data: bytes | memoryview) -> Future[ChunkResult]:
        """Queue one chunk; blocks while too many chunks are in flight (bounded memory)."""
        while len(self._in_flight) >= self._max_in_flight:
            self._in_flight.popleft().result()
        fut = self._pool.submit(self._process, data)
        self._in_flight.append(fut)
        return fut

    def _process(self, data: bytes | memoryview) -> ChunkResult:
        digest = chunk_digest(data, self._crypt)
        size = len(data)
        with self._lock:
            self.stats.count += 1
            self.stats.size += size
            if digest in self._known:
                self.stats.duplicates += 1
                return digest, size
            first_time = digest not in self._seen
            self._seen.add(digest)
        if not first_time or self._store.exists(digest):
            try:
                if first_time:
                    self._store.touch(digest)
            except NotFound:  # a GC in another process swept it since `exists`: write it anew
                pass
            else:
                with self._lock:
                    self.stats.duplicates += 1
                return digest, size
        encoded = encode_blob(data, compress=True, crypt=self._crypt)
        self._store.insert(digest, encoded)
        with self._lock:
            self.stats.compressed_size += len(encoded)
        return digest, size

    def drain(self) -> None:
        while self._in_flight:
            self._in_flight.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
