"""The buzhash chunker (spec section 6): PBS's test vector, C against the plain Python reference,
independence from how the stream is split, and the native type's edges (buffers, threads)."""

from __future__ import annotations

import array
import itertools
import mmap
import random
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.formats import _buzhash
from chunkyard.formats.chunker import (
    BUZHASH_TABLE,
    DEFAULT_AVG,
    FIXED_CHUNK_SIZE,
    BufferLike,
    Chunker,
    ReferenceChunker,
    split_fixed,
)

# Spec section 12 item 3 (upstream test_chunker1): little-endian u32 counters, 1 MiB.
VECTOR = b"".join(struct.pack("<I", i) for i in range(262144))
VECTOR_AVG = 65536
VECTOR_SIZES = [143377, 262144, 262144, 262144, 118767]
VECTOR_FIRST_FROM_32768 = 110609

SMALL_AVGS = [256, 512, 1024, 2048]


class AnyChunker(Protocol):
    @property
    def pending(self) -> int: ...
    def scan(self, buffer: BufferLike) -> int: ...
    def boundaries(self, buffer: BufferLike) -> list[int]: ...
    def reset(self) -> None: ...


def sizes_of(cuts: Sequence[int], total: int) -> list[int]:
    """Chunk sizes of a whole stream of `total` bytes cut after `cuts`."""
    last = cuts[-1] if cuts else 0
    ends = [0, *cuts, total] if total > last else [0, *cuts]
    return [end - start for start, end in itertools.pairwise(ends)]


def feed_boundaries(chunker: AnyChunker, pieces: Sequence[BufferLike]) -> list[int]:
    """Stream offsets of every cut, feeding the pieces one boundaries() call each."""
    cuts: list[int] = []
    offset = 0
    for piece in pieces:
        cuts += [offset + pos for pos in chunker.boundaries(piece)]
        offset += len(memoryview(piece).cast("B"))
    return cuts


def feed_scan(chunker: AnyChunker, pieces: Sequence[BufferLike]) -> list[int]:
    """Stream offsets of every cut, driving scan() the way PBS's ChunkStream does."""
    cuts: list[int] = []
    offset = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while True:
            pos = chunker.scan(view)
            if pos == 0:
                offset += len(view)
                break
            assert 0 < pos <= len(view)
            offset += pos
            cuts.append(offset)
            view = view[pos:]
    return cuts


def split_at(data: bytes, points: Sequence[int]) -> list[bytes]:
    edges = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@st.composite
def streams(draw: st.DrawFn, max_size: int) -> bytes:
    """Random bytes, long single-byte runs (max-size cuts) or a two-letter alphabet, mixed."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    size = draw(st.integers(0, max_size))
    kind = draw(st.sampled_from(["random", "runs", "binary"]))
    if kind == "random":
        return rng.randbytes(size)
    out = bytearray()
    while len(out) < size:
        if kind == "runs" and rng.random() < 0.5:
            out += bytes([rng.randrange(256)]) * rng.randrange(1, 3000)
        elif kind == "runs":
            out += rng.randbytes(rng.randrange(1, 2000))
        else:
            out += bytes(rng.choice(b"ab") for _ in range(256))
    return bytes(out[:size])


# ---- the PBS vector ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [Chunker, ReferenceChunker], ids=["native", "reference"])
def test_pbs_vector(make: Callable[[int], AnyChunker]) -> None:
    chunker = make(VECTOR_AVG)
    cuts = chunker.boundaries(VECTOR)
    assert sizes_of(cuts, len(VECTOR)) == VECTOR_SIZES
    assert chunker.pending == VECTOR_SIZES[-1]


@pytest.mark.parametrize("make", [Chunker, ReferenceChunker], ids=["native", "reference"])
def test_pbs_vector_restart_at_32768(make: Callable[[int], AnyChunker]) -> None:
    assert make(VECTOR_AVG).boundaries(VECTOR[32768:])[0] == VECTOR_FIRST_FROM_32768


def test_pbs_vector_with_scan_like_pbs() -> None:
    cuts = feed_scan(Chunker(VECTOR_AVG), [VECTOR])
    assert sizes_of(cuts, len(VECTOR)) == VECTOR_SIZES


@pytest.mark.parametrize("piece", [1, 7, 63, 64, 65, 1000, 4096, 65537, 300000])
def test_pbs_vector_in_pieces(piece: int) -> None:
    """The upstream test feeds byte by byte; any split must give the same cuts."""
    view = memoryview(VECTOR)
    pieces = [view[i : i + piece] for i in range(0, len(VECTOR), piece)]
    assert sizes_of(feed_boundaries(Chunker(VECTOR_AVG), pieces), len(VECTOR)) == VECTOR_SIZES


def test_table_is_appendix_a() -> None:
    """Spot checks against the spec's table (casync's): first, a middle row and last entries."""
    assert len(BUZHASH_TABLE) == 256
    assert len(set(BUZHASH_TABLE)) == 256
    assert BUZHASH_TABLE[:3] == (0x458BE752, 0xC10748CC, 0xFBBCDBB8)
    assert BUZHASH_TABLE[128] == 0xA268E64E
    assert BUZHASH_TABLE[200] == 0x6C0BAE5B
    assert BUZHASH_TABLE[255] == 0xD95DDF11


# ---- C against the reference, and split independence ------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=streams(max_size=12000),
    avg=st.sampled_from(SMALL_AVGS),
    points=st.lists(st.integers(0, 12000), max_size=6),
)
def test_native_equals_reference(data: bytes, avg: int, points: list[int]) -> None:
    pieces = split_at(data, [p for p in points if p <= len(data)])
    reference = ReferenceChunker(avg)
    expected = feed_boundaries(reference, [data])
    native = Chunker(avg)
    assert feed_boundaries(native, pieces) == expected
    assert native.pending == reference.pending


@settings(max_examples=150, deadline=None)
@given(
    data=streams(max_size=200000),
    avg=st.sampled_from([*SMALL_AVGS, 4096, 16384]),
    points=st.lists(st.integers(0, 200000), max_size=40),
)
def test_cuts_do_not_depend_on_the_split(data: bytes, avg: int, points: list[int]) -> None:
    whole = Chunker(avg)
    expected = whole.boundaries(data)
    split = Chunker(avg)
    pieces = split_at(data, [p for p in points if p <= len(data)])
    assert feed_boundaries(split, pieces) == expected
    assert split.pending == whole.pending == len(data) - (expected[-1] if expected else 0)


@settings(max_examples=40, deadline=None)
@given(data=streams(max_size=3000), avg=st.sampled_from(SMALL_AVGS))
def test_byte_by_byte_equals_one_call(data: bytes, avg: int) -> None:
    expected = Chunker(avg).boundaries(data)
    single_bytes = [data[i : i + 1] for i in range(len(data))]
    assert feed_boundaries(Chunker(avg), single_bytes) == expected
    assert feed_scan(Chunker(avg), single_bytes) == expected


@settings(max_examples=100, deadline=None)
@given(
    data=streams(max_size=100000),
    avg=st.sampled_from([*SMALL_AVGS, 8192]),
    points=st.lists(st.integers(0, 100000), max_size=10),
)
def test_scan_agrees_with_boundaries(data: bytes, avg: int, points: list[int]) -> None:
    pieces = split_at(data, [p for p in points if p <= len(data)])
    by_scan = Chunker(avg)
    by_boundaries = Chunker(avg)
    assert feed_scan(by_scan, pieces) == feed_boundaries(by_boundaries, pieces)
    assert by_scan.pending == by_boundaries.pending


@settings(max_examples=50, deadline=None)
@given(data=streams(max_size=50000), avg=st.sampled_from(SMALL_AVGS))
def test_chunk_sizes_stay_within_min_and_max(data: bytes, avg: int) -> None:
    sizes = sizes_of(Chunker(avg).boundaries(data), len(data))
    assert sum(sizes) == len(data)
    assert all(avg // 4 <= size <= avg * 4 for size in sizes[:-1])
    assert not sizes or 0 < sizes[-1] <= avg * 4


def test_large_random_stream_blocks_equal_small_pieces() -> None:
    """One big buffer takes the multi-lane path, 997-byte pieces the serial one; same cuts."""
    data = random.Random(1).randbytes(4 << 20)
    avg = 65536
    expected = Chunker(avg).boundaries(data)
    assert len(expected) > 20
    view = memoryview(data)
    pieces = [view[i : i + 997] for i in range(0, len(data), 997)]
    assert feed_boundaries(Chunker(avg), pieces) == expected
    sizes = sizes_of(expected, len(data))
    assert all(avg // 4 <= size <= avg * 4 for size in sizes[:-1])


def test_constant_data_is_cut_at_max_size() -> None:
    """On a run of one byte value the hash is 0, so only the size limit cuts."""
    chunker = Chunker()
    cuts = chunker.boundaries(bytes(40 << 20))
    assert cuts == [16 << 20, 32 << 20]
    assert chunker.pending == 8 << 20
    assert ReferenceChunker(256).boundaries(b"\xaa" * 3000) == [1024, 2048]


def test_no_cut_while_the_window_fills() -> None:
    """At avg 256 the minimum (64) is the window size, yet PBS never tests the 64th byte."""
    rng = random.Random(3)
    mask = 2 * 256 - 1
    while True:
        prefix = rng.randbytes(64)
        h = 0
        for b in prefix:
            h = ((h << 1 | h >> 31) & 0xFFFFFFFF) ^ BUZHASH_TABLE[b]
        if (h & mask) >= mask - 2:  # a cut here if the filling byte were tested
            break
    data = prefix + rng.randbytes(4000)
    cuts = Chunker(256).boundaries(data)
    assert cuts[0] > 64
    assert cuts == ReferenceChunker(256).boundaries(data)


def test_reset_and_pending() -> None:
    chunker = Chunker(VECTOR_AVG)
    assert chunker.pending == 0
    assert chunker.boundaries(VECTOR[:100000]) == []
    assert chunker.pending == 100000
    chunker.reset()
    assert chunker.pending == 0
    assert chunker.boundaries(VECTOR[32768:])[0] == VECTOR_FIRST_FROM_32768
    assert chunker.avg == VECTOR_AVG
    assert Chunker().avg == DEFAULT_AVG


def test_scan_returns_zero_without_cut_and_keeps_state() -> None:
    chunker = Chunker(VECTOR_AVG)
    assert chunker.scan(VECTOR[:143376]) == 0
    assert chunker.scan(b"") == 0
    assert chunker.pending == 143376
    assert chunker.scan(VECTOR[143376:]) == 1
    assert chunker.pending == 0


# ---- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("avg", [0, -1, 1, 128, 255, 3000, 65535, 2**31, 2**64, True])
@pytest.mark.parametrize(
    "make",
    [Chunker, _buzhash.Chunker, ReferenceChunker],
    ids=["wrapper", "native", "reference"],
)
def test_invalid_avg_raises_value_error(make: Callable[[int], object], avg: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        make(avg)


@pytest.mark.parametrize("avg", [1.5, "4096", None])
def test_non_integer_avg_raises_type_error(avg: object) -> None:
    with pytest.raises(TypeError):
        Chunker(avg)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ReferenceChunker(avg)  # type: ignore[arg-type]


@pytest.mark.parametrize("avg", [256, 1 << 30])
def test_avg_limits_are_accepted(avg: int) -> None:
    assert Chunker(avg).boundaries(b"x" * 5000) == ([1024, 2048, 3072, 4096] if avg == 256 else [])


@pytest.mark.parametrize("bad", ["text", 123, None, [1, 2, 3]])
def test_non_buffer_raises_type_error(bad: object) -> None:
    chunker = Chunker(256)
    with pytest.raises(TypeError):
        chunker.scan(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        chunker.boundaries(bad)  # type: ignore[arg-type]
    assert chunker.pending == 0


def test_every_buffer_kind_gives_the_same_cuts(tmp_path: Path) -> None:
    expected = Chunker(VECTOR_AVG).boundaries(VECTOR)
    path = tmp_path / "vector.bin"
    path.write_bytes(VECTOR)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert Chunker(VECTOR_AVG).boundaries(mapped) == expected
    counters = array.array("I", range(262144))
    assert counters.itemsize == 4
    for buffer in (bytearray(VECTOR), memoryview(VECTOR), memoryview(counters)):
        assert Chunker(VECTOR_AVG).boundaries(buffer) == expected


# ---- threads ----------------------------------------------------------------------------


def test_gil_is_released_and_a_shared_chunker_is_refused() -> None:
    """Only a thread that runs while another is inside the C scan can see it busy."""
    chunker = Chunker()
    data = random.Random(2).randbytes(16 << 20)
    refused = 0
    worker = threading.Thread(target=lambda: [chunker.boundaries(data) for _ in range(8)])
    worker.start()
    while worker.is_alive():
        try:
            chunker.reset()
        except RuntimeError as e:
            assert "another thread" in str(e)
            refused += 1
    worker.join()
    assert refused > 0
    chunker.reset()  # usable again once the other thread is done
    assert chunker.boundaries(bytes(20 << 20)) == [16 << 20]


def test_separate_chunkers_in_threads_agree_with_sequential() -> None:
    streams_ = [random.Random(seed).randbytes(6 << 20) for seed in range(3)]
    expected = [Chunker(65536).boundaries(s) for s in streams_]
    results: list[list[int]] = [[] for _ in streams_]

    def run(i: int) -> None:
        results[i] = Chunker(65536).boundaries(streams_[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(streams_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


# ---- fixed chunks -----------------------------------------------------------------------


def test_split_fixed() -> None:
    mib4 = FIXED_CHUNK_SIZE
    assert mib4 == 4194304
    assert list(split_fixed(0)) == []
    assert list(split_fixed(1)) == [(0, 1)]
    assert list(split_fixed(mib4)) == [(0, mib4)]
    assert list(split_fixed(mib4 + 1)) == [(0, mib4), (mib4, mib4 + 1)]
    assert list(split_fixed(10, 4)) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize(("size", "chunk_size"), [(-1, 4), (10, 0), (10, -4)])
def test_split_fixed_rejects_bad_sizes(size: int, chunk_size: int) -> None:
    with pytest.raises(ValueError):
        list(split_fixed(size, chunk_size))
