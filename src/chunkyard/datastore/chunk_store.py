"""The chunk store (spec §1.1, §3.3): `.chunks/<pppp>/<64 hex>` DataBlob files.

Inserting follows PBS's `insert_chunk` duplicate rules exactly. PBS serializes every insert with
one mutex; here only inserts of the same chunk (more precisely, of the same lock stripe) wait
for each other, so the backup pipeline's worker threads write different chunks in parallel.
Across processes, rename(2) keeps every outcome a complete chunk file.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from chunkyard.datastore.backend import EntryKind, Stat, StorageBackend
from chunkyard.datastore.layout import CHUNKS_DIR, LOCK_FILE
from chunkyard.errors import AlreadyExists, DatastoreError, InvalidName, NotFound
from chunkyard.formats.blob import (
    COMPRESSED_BLOB_MAGIC_1_0,
    ENCRYPTED_BLOB_MAGIC_1_0,
    UNCOMPRESSED_BLOB_MAGIC_1_0,
    BlobKind,
    blob_kind,
)

log = logging.getLogger(__name__)

DIGEST_SIZE = 32
CHUNK_DIR_MODE = 0o750
LOCK_FILE_MODE = 0o644
PREFIX_COUNT = 0x10000
SWEEP_SUFFIX = ".sweep"  # a chunk GC's sweep has set aside while it decides (maintenance.gc)
_LOCK_STRIPES = 1024


class SyncLevel(enum.StrEnum):
    """Datastore tuning `sync-level` (§1.6)."""

    NONE = "none"  # no explicit sync
    FILE = "file"  # fsync every chunk file and its directory
    FILESYSTEM = "filesystem"  # syncfs() once, before a backup is marked finished

    @classmethod
    def parse(cls, text: str) -> SyncLevel:
        try:
            return cls(text)
        except ValueError:
            raise InvalidName(
                f"sync level {text!r} is invalid: expected none, file or filesystem") from None


def check_digest(digest: bytes) -> bytes:
    """The digest as bytes; InvalidName unless it is 32 bytes."""
    if not isinstance(digest, (bytes, bytearray, memoryview)):
        raise InvalidName(f"chunk digest must be bytes, not {type(digest).__name__}")
    digest = bytes(digest)
    if len(digest) != DIGEST_SIZE:
        raise InvalidName(f"chunk digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
    return digest


def prefix_key(digest: bytes) -> str:
    return f"{CHUNKS_DIR}/{check_digest(digest)[:2].hex()}"


def chunk_key(digest: bytes) -> str:
    """`.chunks/abcd/abcd…` (64 lowercase hex digits)."""
    hexd = check_digest(digest).hex()
    return f"{CHUNKS_DIR}/{hexd[:4]}/{hexd}"


class ChunkStore:
    """Chunk files of one datastore. Thread-safe; does no locking across processes (the
    chunk-store process lock of §7.4 belongs to the locking layer)."""

    def __init__(self, backend: StorageBackend,
                 sync_level: SyncLevel = SyncLevel.FILESYSTEM) -> None:
        self._backend = backend
        self._sync_level = SyncLevel(sync_level)
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    @classmethod
    def create(cls, backend: StorageBackend, sync_level: SyncLevel = SyncLevel.FILESYSTEM,
               *, sparse: bool = False) -> ChunkStore:
        """Make `.chunks` (0750), an empty `.lock` (0644) and the 65536 prefix dirs (0750).

        `sparse` skips the prefix dirs; `insert` then creates each on first use. Such a store
        is for tests and scratch use only: PBS itself expects every prefix dir to exist.
        """
        backend.mkdir(CHUNKS_DIR, mode=CHUNK_DIR_MODE)
        backend.write_atomic(LOCK_FILE, b"", mode=LOCK_FILE_MODE)
        if not sparse:
            names = [f"{i:04x}" for i in range(PREFIX_COUNT)]
            backend.make_subdirs(CHUNKS_DIR, names, mode=CHUNK_DIR_MODE)
        return cls(backend, sync_level)

    @classmethod
    def open(cls, backend: StorageBackend,
             sync_level: SyncLevel = SyncLevel.FILESYSTEM) -> ChunkStore:
        """Check that `.chunks` (a directory, possibly via symlink) and `.lock` exist."""
        try:
            st = backend.stat(CHUNKS_DIR, follow_symlinks=True)
        except NotFound:
            raise NotFound(f"not a datastore: {CHUNKS_DIR} is missing in {backend}") from None
        if st.kind != EntryKind.DIR:
            raise DatastoreError(f"not a datastore: {CHUNKS_DIR} in {backend} is no directory")
        if not backend.exists(LOCK_FILE):
            raise NotFound(f"not a datastore: {LOCK_FILE} is missing in {backend}")
        return cls(backend, sync_level)

    @property
    def backend(self) -> StorageBackend:
        return self._backend

    @property
    def sync_level(self) -> SyncLevel:
        return self._sync_level

    @staticmethod
    def chunk_key(digest: bytes) -> str:
        return chunk_key(digest)

    @contextmanager
    def chunk_lock(self, digest: bytes) -> Iterator[None]:
        """The in-process lock `insert` holds for this chunk (GC's sweep should hold it while
        it checks and unlinks the chunk, as PBS's sweep holds the chunk-store mutex)."""
        with self._locks[int.from_bytes(check_digest(digest)[:4], "little") % _LOCK_STRIPES]:
            yield

    # -- reading --------------------------------------------------------------------------

    def load(self, digest: bytes) -> bytes:
        """The encoded chunk (DataBlob) as stored; NotFound if there is none."""
        key = chunk_key(digest)
        for attempt in range(2):
            try:
                return self._backend.read(key)
            except NotFound:
                if attempt or not self._recover_swept(key):
                    break
        raise NotFound(f"chunk {digest.hex()} is missing from the chunk store")

    def _recover_swept(self, key: str) -> bool:
        """A GC killed between setting a chunk aside (`<chunk>.sweep`) and deciding about it
        can leave a chunk a finished backup still needs out of sight: put it back (the next
        GC would, and then judge it anew). True if the chunk is there now."""
        with suppress(NotFound, AlreadyExists):
            self._backend.rename(key + SWEEP_SUFFIX, key, no_replace=True)
        return self._backend.exists(key)

    def exists(self, digest: bytes) -> bool:
        return self._backend.exists(chunk_key(digest))

    def stat(self, digest: bytes) -> Stat:
        key = chunk_key(digest)
        try:
            return self._backend.stat(key)
        except NotFound:
            raise NotFound(f"chunk {digest.hex()} is missing from the chunk store") from None

    def touch(self, digest: bytes) -> None:
        """Mark the chunk as in use for GC (atime = now); NotFound if it is missing."""
        key = chunk_key(digest)
        for attempt in range(2):
            try:
                self._backend.touch_atime(key)
                return
            except NotFound:
                if attempt or not self._recover_swept(key):
                    break
        raise NotFound(f"chunk {digest.hex()} is missing from the chunk store")

    def rename_corrupt(self, digest: bytes) -> str | None:
        """Rename a corrupt chunk to `<digest>.<N>.bad` (§8.5), N the first unused of 0..9
        (all taken: `.9.bad` is replaced), under this chunk's in-process lock as PBS holds the
        chunk-store mutex. Returns the new key, or None if the chunk file is already gone.
        A later backup can then store the chunk anew; GC keeps the `.bad` files alive only
        while the chunk is missing and referenced."""
        key = chunk_key(digest)
        with self.chunk_lock(digest):
            n = 0
            while n < 9 and self._backend.exists(f"{key}.{n}.bad"):
                n += 1
            bad = f"{key}.{n}.bad"
            try:
                self._backend.rename(key, bad)
            except NotFound:
                return None
        return bad

    # -- writing --------------------------------------------------------------------------

    def insert(self, digest: bytes, encoded: bytes) -> tuple[bool, int]:
        """Store an encoded chunk; returns (is_duplicate, size of the file now on disk).

        When a file already exists (§3.3): same size -> touch, duplicate; empty -> overwrite;
        incoming encrypted over unencrypted -> error; both encrypted-uncompressed with
        different sizes -> error; other encrypted cases -> keep and touch; unencrypted and
        the existing one smaller -> keep and touch; existing bigger -> replace.
        """
        digest = check_digest(digest)
        kind = blob_kind(encoded)  # FormatError for anything that is not a DataBlob
        key = chunk_key(digest)
        with self.chunk_lock(digest):
            kept = self._keep_existing(digest, key, kind, len(encoded))
            if kept is not None:
                return kept
            self._write(digest, key, encoded)
        return False, len(encoded)

    def _keep_existing(self, digest: bytes, key: str, kind: BlobKind,
                       size: int) -> tuple[bool, int] | None:
        """Apply the duplicate rules to an existing file: (True, its size) if it is kept,
        None if the incoming chunk is to be written (no file, empty, or a bigger one)."""
        try:
            st = self._backend.stat(key)
        except NotFound:
            return None
        if st.kind != EntryKind.FILE:
            raise DatastoreError(f"chunk {digest.hex()}: {key} exists but is not a regular file")
        old = st.size
        try:
            if old == size:
                self._backend.touch_atime(key)
                return True, old
            if old == 0:
                log.warning("found empty chunk %s, overwriting", digest.hex())
                return None
            if kind.encrypted:
                self._check_encrypted_overwrite(digest, key, kind.compressed)
                self._backend.touch_atime(key)
                return True, old
            if old < size:
                self._backend.touch_atime(key)
                return True, old
        except NotFound:  # removed meanwhile (by GC in another process): write it anew
            return None
        return None  # the existing copy is bigger: replace it with the incoming one

    def _check_encrypted_overwrite(self, digest: bytes, key: str, compressed: bool) -> None:
        with self._backend.open_read(key) as f:
            magic = f.read(8)
        if len(magic) < 8:
            raise DatastoreError(f"chunk {digest.hex()}: existing file is shorter than a magic")
        if magic in (UNCOMPRESSED_BLOB_MAGIC_1_0, COMPRESSED_BLOB_MAGIC_1_0):
            raise DatastoreError(
                f"chunk {digest.hex()}: refusing to overwrite an unencrypted chunk with an "
                "encrypted one of the same digest")
        if magic == ENCRYPTED_BLOB_MAGIC_1_0 and not compressed:
            raise DatastoreError(
                f"chunk {digest.hex()}: refusing to overwrite an existing encrypted chunk "
                "(both uncompressed, sizes differ: one of them is corrupt)")

    def _write(self, digest: bytes, key: str, encoded: bytes) -> None:
        fsync = self._sync_level == SyncLevel.FILE
        try:
            self._backend.write_atomic(key, encoded, fsync=fsync)
        except NotFound:
            # the prefix dir is missing (a sparse store, or removed by hand): make it, retry
            self._backend.mkdir(prefix_key(digest), exist_ok=True, mode=CHUNK_DIR_MODE)
            self._backend.write_atomic(key, encoded, fsync=fsync)

    def sync_if_filesystem_level(self) -> None:
        """For sync level 'filesystem': syncfs() before a backup is marked finished."""
        if self._sync_level == SyncLevel.FILESYSTEM:
            self._backend.sync_filesystem()

