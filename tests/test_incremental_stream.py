"""The metadata-cache reuse must be invisible: after any sequence of changes to a tree, the
incremental archive (previous chunks referenced unread, re-synchronised chunking) has exactly
the chunk ends and digests a fresh backup of the same tree gets. Small chunks (avg 256 bytes)
put cuts inside headers, file contents and padding alike, so every resync path is exercised."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.client.archive_stream import ArchiveStream, PreviousStream
from chunkyard.client.chunk_sink import ChunkSink
from chunkyard.client.metadata_cache import CacheEntries
from chunkyard.client.tar_archive import write_tar
from chunkyard.datastore.backend import FilesystemBackend
from chunkyard.datastore.chunk_store import ChunkStore, SyncLevel
from chunkyard.formats.chunker import Chunker

AVG = 256
BLOCK = 4096  # tiny stream blocks, so chunks and regions straddle them

names = st.sampled_from([f"d{i}/f{j}" for i in range(3) for j in range(4)] + ["top", "z"])
edits = st.one_of(
    st.tuples(st.just("write"), names, st.binary(max_size=3000)),
    st.tuples(st.just("append"), names, st.binary(min_size=1, max_size=700)),
    st.tuples(st.just("delete"), names, st.just(b"")),
    st.tuples(st.just("chmod"), names, st.just(b"")),
)


def _apply(root: Path, edit: tuple[str, str, bytes], counter: list[int]) -> None:
    kind, name, data = edit
    path = root / name
    counter[0] += 1
    if kind == "write":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif kind == "append" and path.exists():
        with open(path, "ab") as f:
            f.write(data)
    elif kind == "delete" and path.exists():
        path.unlink()
    elif kind == "chmod" and path.exists():
        path.chmod(0o600 if path.stat().st_mode & 0o044 else 0o644)
    if path.exists():  # distinct mtimes even on coarse clocks
        os.utime(path, ns=(counter[0] * 10**9, counter[0] * 10**9))


def _archive(root: Path, store: ChunkStore, previous: PreviousStream | None,
             cache: CacheEntries) -> tuple[list[int], list[bytes], CacheEntries, int]:
    sink = ChunkSink(store, None, known=set())
    stream = ArchiveStream(Chunker(AVG), sink, previous, block_size=BLOCK)
    try:
        result = write_tar(str(root), stream, cache)
        ends, digests = stream.finish()
    finally:
        sink.close()
    return ends, digests, result.cache, result.files_read


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(st.tuples(names, st.binary(max_size=3000)), min_size=1, max_size=10),
       rounds=st.lists(st.lists(edits, max_size=4), min_size=1, max_size=4))
def test_incremental_equals_fresh(initial: list[tuple[str, bytes]],
                                  rounds: list[list[tuple[str, str, bytes]]]) -> None:
    work = Path(tempfile.mkdtemp(prefix="chunkyard-incr-"))
    try:
        root = work / "tree"
        root.mkdir()
        counter = [0]
        for name, data in initial:
            _apply(root, ("write", name, data), counter)
        os.utime(root, ns=(1, 1))
        (work / "store").mkdir()
        store = ChunkStore.create(FilesystemBackend(str(work / "store")), SyncLevel.NONE,
                                  sparse=True)
        ends, digests, cache, _ = _archive(root, store, None, {})
        for edits_of_round in [[], *rounds]:
            for edit in edits_of_round:
                _apply(root, edit, counter)
            for d in root.rglob("*"):  # directory mtimes move with their entries
                if d.is_dir():
                    os.utime(d, ns=(2, 2))
            os.utime(root, ns=(2, 2))
            fresh = _archive(root, store, None, {})
            incremental = _archive(root, store, PreviousStream(ends, digests), cache)
            assert incremental[0] == fresh[0], "chunk ends differ from a fresh backup"
            assert incremental[1] == fresh[1], "chunk digests differ from a fresh backup"
            assert incremental[2] == fresh[2], "the new cache differs from a fresh backup's"
            if not edits_of_round:
                assert incremental[3] == 0, "an unchanged tree was read again"
            ends, digests, cache = incremental[0], incremental[1], incremental[2]
    finally:
        shutil.rmtree(work, ignore_errors=True)
