"""ChunkStore: layout, the duplicate rules of spec §3.3 row by row, threads and processes."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import stat
import threading
from pathlib import Path

import pytest

from chunkyard.datastore.backend import FilesystemBackend
from chunkyard.datastore.chunk_store import ChunkStore, SyncLevel, chunk_key
from chunkyard.errors import DatastoreError, FormatError, InvalidName, NotFound
from chunkyard.formats.blob import (
    BlobKind,
    blob_kind,
    decode_chunk,
    encode_blob,
)
from chunkyard.formats.crypt import CryptConfig

DATA = b"chunk data " * 500
DIGEST = hashlib.sha256(DATA).digest()
CRYPT = CryptConfig(bytes(range(32)))
OLD_ATIME = 1_000_000_000_000_000_000


def make_store(root: Path, sync_level: SyncLevel = SyncLevel.NONE) -> ChunkStore:
    root.mkdir(exist_ok=True)
    return ChunkStore.create(FilesystemBackend(str(root)), sync_level, sparse=True)


@pytest.fixture()
def store(tmp_path: Path) -> ChunkStore:
    return make_store(tmp_path / "store")


def path_of(store: ChunkStore, digest: bytes) -> str:
    path = store.backend.local_path(chunk_key(digest))
    assert path is not None
    return path


def place(store: ChunkStore, digest: bytes, raw: bytes) -> str:
    """Put a file at the chunk's path directly (as an older writer would have), atime old."""
    path = path_of(store, digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(raw)
    os.utime(path, ns=(OLD_ATIME, OLD_ATIME))
    return path


def was_touched(path: str) -> bool:
    st = os.stat(path)
    return st.st_atime_ns > OLD_ATIME and st.st_mtime_ns == OLD_ATIME


def blob(kind: BlobKind, data: bytes = DATA) -> bytes:
    raw = encode_blob(data, compress=kind.compressed, crypt=CRYPT if kind.encrypted else None)
    assert blob_kind(raw) == kind
    return raw


# -- layout -------------------------------------------------------------------------------

def test_chunk_key_and_digest_validation() -> None:
    d = bytes.fromhex("a342e815" + "00" * 28)
    assert chunk_key(d) == ".chunks/a342/a342e815" + "00" * 28
    for bad in (b"x" * 31, b"x" * 33, b""):
        with pytest.raises(InvalidName):
            chunk_key(bad)
    with pytest.raises(InvalidName):
        chunk_key("a" * 32)  # type: ignore[arg-type]


def test_create_full_layout(fast_dir: Path) -> None:
    old = os.umask(0o077)
    try:
        ChunkStore.create(FilesystemBackend(str(fast_dir)))
    finally:
        os.umask(old)
    chunks = fast_dir / ".chunks"
    names = os.listdir(chunks)
    assert len(names) == 65536
    assert set(names) == {f"{i:04x}" for i in range(65536)}
    assert stat.S_IMODE(os.stat(chunks).st_mode) == 0o750
    for n in ("0000", "a342", "ffff"):
        assert stat.S_IMODE(os.stat(chunks / n).st_mode) == 0o750
    lock = fast_dir / ".lock"
    assert lock.read_bytes() == b""
    assert stat.S_IMODE(os.stat(lock).st_mode) == 0o644
    with pytest.raises(Exception, match="exists"):
        ChunkStore.create(FilesystemBackend(str(fast_dir)))


def test_open_requires_chunks_dir_and_lock(tmp_path: Path) -> None:
    be = FilesystemBackend(str(tmp_path))
    with pytest.raises(NotFound, match=r"\.chunks"):
        ChunkStore.open(be)
    (tmp_path / ".chunks").write_bytes(b"")
    with pytest.raises(DatastoreError, match="no directory"):
        ChunkStore.open(be)
    os.unlink(tmp_path / ".chunks")
    os.mkdir(tmp_path / ".chunks")
    with pytest.raises(NotFound, match=r"\.lock"):
        ChunkStore.open(be)
    (tmp_path / ".lock").write_bytes(b"")
    assert ChunkStore.open(be, SyncLevel.FILE).sync_level == SyncLevel.FILE


# -- insert and load ----------------------------------------------------------------------

@pytest.mark.parametrize("level", list(SyncLevel))
def test_insert_new_chunk(tmp_path: Path, level: SyncLevel) -> None:
    store = make_store(tmp_path / "s", level)
    raw = blob(BlobKind.COMPRESSED)
    assert not store.exists(DIGEST)
    assert store.insert(DIGEST, raw) == (False, len(raw))
    assert store.exists(DIGEST)
    assert store.load(DIGEST) == raw
    assert decode_chunk(store.load(DIGEST), DIGEST) == DATA
    path = path_of(store, DIGEST)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(os.path.dirname(path)) == [DIGEST.hex()]  # no temp file left
    assert store.stat(DIGEST).size == len(raw)
    store.sync_if_filesystem_level()


def test_missing_chunk_is_not_found(store: ChunkStore) -> None:
    for op in (store.load, store.touch, store.stat):
        with pytest.raises(NotFound, match=DIGEST.hex()):
            op(DIGEST)


def test_touch_updates_atime_only(store: ChunkStore) -> None:
    path = place(store, DIGEST, blob(BlobKind.COMPRESSED))
    store.touch(DIGEST)
    assert was_touched(path)


def test_insert_rejects_what_is_not_a_blob(store: ChunkStore) -> None:
    with pytest.raises(FormatError):
        store.insert(DIGEST, b"not a data blob at all")
    assert not store.exists(DIGEST)


def test_existing_non_file_is_an_error(store: ChunkStore) -> None:
    os.makedirs(path_of(store, DIGEST))
    with pytest.raises(DatastoreError, match="not a regular file"):
        store.insert(DIGEST, blob(BlobKind.COMPRESSED))


# -- the duplicate table of §3.3, one test per row -----------------------------------------

def test_row_same_size_touches_and_keeps(store: ChunkStore) -> None:
    raw = blob(BlobKind.COMPRESSED)
    other = bytes(reversed(raw))  # same size, different bytes: PBS keeps the existing file
    path = place(store, DIGEST, other)
    assert store.insert(DIGEST, raw) == (True, len(raw))
    assert was_touched(path)
    assert Path(path).read_bytes() == other


def test_row_empty_existing_is_overwritten(store: ChunkStore) -> None:
    path = place(store, DIGEST, b"")
    raw = blob(BlobKind.COMPRESSED)
    assert store.insert(DIGEST, raw) == (False, len(raw))
    assert Path(path).read_bytes() == raw


@pytest.mark.parametrize("existing", [BlobKind.UNCOMPRESSED, BlobKind.COMPRESSED])
@pytest.mark.parametrize("incoming", [BlobKind.ENCRYPTED, BlobKind.ENCRYPTED_COMPRESSED])
def test_row_encrypted_over_unencrypted_is_an_error(store: ChunkStore, existing: BlobKind,
                                                    incoming: BlobKind) -> None:
    old = blob(existing)
    path = place(store, DIGEST, old)
    with pytest.raises(DatastoreError, match="unencrypted"):
        store.insert(DIGEST, blob(incoming))
    assert Path(path).read_bytes() == old


def test_row_both_encrypted_uncompressed_sizes_differ_is_an_error(store: ChunkStore) -> None:
    old = blob(BlobKind.ENCRYPTED, DATA + b"x")
    path = place(store, DIGEST, old)
    with pytest.raises(DatastoreError, match="encrypted"):
        store.insert(DIGEST, blob(BlobKind.ENCRYPTED))
    assert Path(path).read_bytes() == old


@pytest.mark.parametrize(("existing", "incoming"), [
    (BlobKind.ENCRYPTED, BlobKind.ENCRYPTED_COMPRESSED),
    (BlobKind.ENCRYPTED_COMPRESSED, BlobKind.ENCRYPTED),
    (BlobKind.ENCRYPTED_COMPRESSED, BlobKind.ENCRYPTED_COMPRESSED),
])
def test_row_other_encrypted_mismatches_keep_and_touch(store: ChunkStore, existing: BlobKind,
                                                       incoming: BlobKind) -> None:
    old = blob(existing, DATA + b"padding" * (1 if existing == incoming else 0))
    new = blob(incoming)
    assert len(old) != len(new)
    path = place(store, DIGEST, old)
    assert store.insert(DIGEST, new) == (True, len(old))
    assert Path(path).read_bytes() == old
    assert was_touched(path)


def test_row_encrypted_over_unknown_magic_keeps(store: ChunkStore) -> None:
    path = place(store, DIGEST, b"\x01" * 100)
    assert store.insert(DIGEST, blob(BlobKind.ENCRYPTED)) == (True, 100)
    assert Path(path).read_bytes() == b"\x01" * 100


def test_row_unencrypted_existing_smaller_keeps_and_touches(store: ChunkStore) -> None:
    small, big = blob(BlobKind.COMPRESSED), blob(BlobKind.UNCOMPRESSED)
    assert len(small) < len(big)
    path = place(store, DIGEST, small)
    assert store.insert(DIGEST, big) == (True, len(small))
    assert Path(path).read_bytes() == small
    assert was_touched(path)


def test_row_unencrypted_existing_bigger_is_replaced(store: ChunkStore) -> None:
    small, big = blob(BlobKind.COMPRESSED), blob(BlobKind.UNCOMPRESSED)
    path = place(store, DIGEST, big)
    assert store.insert(DIGEST, small) == (False, len(small))
    assert Path(path).read_bytes() == small


def test_sparse_store_creates_prefix_dirs_on_demand(store: ChunkStore) -> None:
    prefix = os.path.dirname(path_of(store, DIGEST))
    assert not os.path.exists(prefix)
    store.insert(DIGEST, blob(BlobKind.COMPRESSED))
    assert stat.S_IMODE(os.stat(prefix).st_mode) == 0o750


# -- concurrency --------------------------------------------------------------------------

def test_threads_inserting_one_chunk_write_it_once(store: ChunkStore) -> None:
    raw = blob(BlobKind.COMPRESSED)
    barrier = threading.Barrier(8)
    for round_ in range(20):
        digest = hashlib.sha256(b"%d" % round_).digest()
        results: list[tuple[bool, int]] = []

        def worker(d: bytes = digest, out: list[tuple[bool, int]] = results) -> None:
            barrier.wait()
            out.append(store.insert(d, raw))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [(False, len(raw))] + [(True, len(raw))] * 7


def test_threads_inserting_many_chunks(store: ChunkStore) -> None:
    datas = [f"chunk {i}".encode() * 100 for i in range(64)]
    digests = [hashlib.sha256(d).digest() for d in datas]

    def worker(offset: int) -> None:
        for i in range(64):
            j = (i + offset) % 64
            store.insert(digests[j], encode_blob(datas[j]))

    threads = [threading.Thread(target=worker, args=(k * 16,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d, data in zip(digests, datas, strict=True):
        assert decode_chunk(store.load(d), d) == data


def _insert_many(root: str, rounds: int, barrier: threading.Barrier) -> None:
    store = ChunkStore.open(FilesystemBackend(root), SyncLevel.NONE)
    variants = [blob(BlobKind.COMPRESSED), blob(BlobKind.UNCOMPRESSED)]
    barrier.wait()
    for i in range(rounds):
        store.insert(DIGEST, variants[(i + os.getpid()) % 2])
        if i % 10 == 0:  # start over now and then, so the race for a fresh file repeats
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path_of(store, DIGEST))


def test_processes_inserting_one_chunk_end_with_one_valid_file(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_insert_many, args=(str(tmp_path / "s"), 60, barrier))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store.insert(DIGEST, blob(BlobKind.COMPRESSED))
    assert decode_chunk(store.load(DIGEST), DIGEST) == DATA
    prefix = os.path.dirname(path_of(store, DIGEST))
    assert os.listdir(prefix) == [DIGEST.hex()]  # one file, no temp files left behind
