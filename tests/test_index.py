"""Fixed and dynamic index files (spec §4), checked against a real PBS `.didx`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
import uuid as uuidlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkyard.errors import FormatError
from chunkyard.formats.dynamic_index import (
    DYNAMIC_SIZED_CHUNK_INDEX_1_0,
    ChunkIndexError,
    DynamicIndex,
    DynamicIndexBuilder,
)
from chunkyard.formats.fixed_index import (
    FIXED_SIZED_CHUNK_INDEX_1_0,
    FixedIndex,
    FixedIndexBuilder,
)
from tests.helpers import PBS_DIDX

MiB = 1024 * 1024


def _digest(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "little")).digest()


@pytest.fixture(scope="module")
def pbs_raw() -> bytes:
    return PBS_DIDX.read_bytes()


# -- the real PBS file ------------------------------------------------------------------


def test_magics() -> None:
    assert DYNAMIC_SIZED_CHUNK_INDEX_1_0.hex() == "1c914ea519bab3cd"
    assert FIXED_SIZED_CHUNK_INDEX_1_0.hex() == "2f7f41ed91fd0fcd"
    assert (
        hashlib.sha256(b"Proxmox Backup fixed sized chunk index v1.0").digest()[:8]
    ) == FIXED_SIZED_CHUNK_INDEX_1_0


def test_pbs_didx_facts(pbs_raw: bytes) -> None:
    assert len(pbs_raw) == 8096
    index = DynamicIndex.decode(pbs_raw)
    assert str(uuidlib.UUID(bytes=index.uuid)) == "f0ef7665-555e-417e-a6eb-a00a375ceee0"
    assert index.ctime == 1715091951
    assert index.csum().hex() == (
        "e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20"
    )
    assert index.csum() == pbs_raw[32:64]
    assert index.chunk_count == len(index) == 100
    assert list(index.ends[:3]) == [1048608, 2097200, 3145792]
    assert index.size == index.ends[-1] == 104859232
    assert index.chunk_range(0) == (0, 1048608)
    assert index.chunk_range(1) == (1048608, 2097200)
    assert index.chunk_range(99) == (index.ends[98], 104859232)
    assert index.digest(0) == pbs_raw[4096 + 8 : 4096 + 40]
    assert index.digest(99) == pbs_raw[-32:]


def test_pbs_didx_reencodes_byte_for_byte(pbs_raw: bytes) -> None:
    index = DynamicIndex.decode(pbs_raw)
    assert index.encode() == pbs_raw
    # Rebuilt from scratch (no cached body), via the constructor and via the builder.
    fresh = DynamicIndex(index.uuid, index.ctime, list(index.ends), index.digests)
    assert fresh.encode() == pbs_raw and fresh == index
    builder = DynamicIndexBuilder()
    for i in range(len(index)):
        builder.add(index.ends[i], index.digest(i))
    assert builder.finish(index.uuid, index.ctime).encode() == pbs_raw
    chunks = DynamicIndex.from_chunks(index.end_list(), index.digest_list(),
                                      uuid=index.uuid, ctime=index.ctime)
    assert chunks.encode() == pbs_raw
    pairs = list(zip(index.end_list(), index.digest_list(), strict=True))
    assert DynamicIndex.from_entries(pairs, uuid=index.uuid, ctime=index.ctime) == index
    with pytest.raises(FormatError):
        DynamicIndex.from_chunks([1, 2], [bytes(32)])
    with pytest.raises(FormatError):
        DynamicIndex.from_chunks([2, 1], [bytes(32)] * 2)
    with pytest.raises(FormatError):
        DynamicIndex.from_chunks([-1], [bytes(32)])


def test_pbs_didx_offsets(pbs_raw: bytes) -> None:
    index = DynamicIndex.decode(pbs_raw)
    assert index.chunk_index_for_offset(0) == 0
    assert index.chunk_index_for_offset(1048607) == 0
    assert index.chunk_index_for_offset(1048608) == 1
    assert index.chunk_index_for_offset(104859231) == 99
    for off in (-1, 104859232):
        with pytest.raises(ChunkIndexError):
            index.chunk_index_for_offset(off)
    with pytest.raises(IndexError):
        index.chunk_range(100)
    with pytest.raises(FormatError):
        index.digest(-1)


@pytest.mark.parametrize("cut", [0, 100, 4095, 4096 + 39, 8095])
def test_truncated_didx(pbs_raw: bytes, cut: int) -> None:
    with pytest.raises(FormatError):
        DynamicIndex.decode(pbs_raw[:cut])


def test_didx_corruptions(pbs_raw: bytes) -> None:
    with pytest.raises(FormatError, match="not a dynamic index"):
        DynamicIndex.decode(b"\0" + pbs_raw[1:])
    with pytest.raises(FormatError, match="not a dynamic index"):
        DynamicIndex.decode(FIXED_SIZED_CHUNK_INDEX_1_0 + pbs_raw[8:])
    body_flip = bytearray(pbs_raw)
    body_flip[5000] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch"):
        DynamicIndex.decode(bytes(body_flip))
    csum_flip = bytearray(pbs_raw)
    csum_flip[40] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch"):
        DynamicIndex.decode(bytes(csum_flip))
    # Decreasing end offsets with a consistent csum are still refused.
    entries = [(300, _digest(0)), (200, _digest(1))]
    body = b"".join(struct.pack("<Q32s", e, d) for e, d in entries)
    header = struct.pack("<8s16sq32s4032x", DYNAMIC_SIZED_CHUNK_INDEX_1_0, bytes(16), 0,
                         hashlib.sha256(body).digest())
    with pytest.raises(FormatError, match="entry 1"):
        DynamicIndex.decode(header + body)
    # A zero-length first chunk is refused too (chunks hold at least one byte).
    body = struct.pack("<Q32s", 0, _digest(0)) + struct.pack("<Q32s", 10, _digest(1))
    header = struct.pack("<8s16sq32s4032x", DYNAMIC_SIZED_CHUNK_INDEX_1_0, bytes(16), 0,
                         hashlib.sha256(body).digest())
    with pytest.raises(FormatError, match="entry 0"):
        DynamicIndex.decode(header + body)


def test_didx_builder_rules() -> None:
    b = DynamicIndexBuilder()
    b.add_chunk(10, _digest(0))
    b.add(25, _digest(1))
    with pytest.raises(FormatError):
        b.add(25, _digest(2))
    with pytest.raises(FormatError):
        b.add_chunk(5, b"short")
    index = b.finish(bytes(16), 7)
    assert list(index.ends) == [10, 25] and index.size == 25
    assert index.chunk_size(1) == 15
    raw = index.encode()
    assert len(raw) == 4096 + 80
    assert raw[:64] == struct.pack("<8s16sq32s", DYNAMIC_SIZED_CHUNK_INDEX_1_0, bytes(16), 7,
                                   index.csum())
    assert raw[64:4096] == bytes(4032)
    assert index.csum() == hashlib.sha256(
        struct.pack("<Q", 10) + _digest(0) + struct.pack("<Q", 25) + _digest(1)
    ).digest()


def test_empty_dynamic_index() -> None:
    index = DynamicIndexBuilder().finish(bytes(16), 0)
    assert index.size == 0 and len(index) == 0
    assert index.csum() == hashlib.sha256(b"").digest()
    assert DynamicIndex.decode(index.encode()) == index


def test_large_didx_decodes_fast() -> None:
    n = 250_000
    digests = os.urandom(32 * n)
    ends = [(i + 1) * 4 * MiB - (i % 977) for i in range(n)]
    raw = DynamicIndex(os.urandom(16), 1, ends, digests).encode()
    best = min(_timed(DynamicIndex.decode, raw) for _ in range(3))
    index = DynamicIndex.decode(raw)
    assert index.digests == digests and list(index.ends) == ends
    assert index.chunk_index_for_offset(ends[1000]) == 1001
    assert best < 0.1, f"decoding 250k entries took {best:.3f}s"


def _timed(fn: object, arg: bytes) -> float:
    start = time.perf_counter()
    fn(arg)  # type: ignore[operator]
    return time.perf_counter() - start


# -- fixed index ------------------------------------------------------------------------


def test_fixed_layout_and_geometry() -> None:
    size = 2 * 4 * MiB + 5
    digests = [_digest(i) for i in range(3)]
    index = FixedIndex.from_digests(size, 4 * MiB, digests, uuid=b"u" * 16, ctime=-5)
    raw = index.encode()
    assert len(raw) == 4096 + 96
    magic, uuid, ctime, csum, hsize, chunk_size = struct.unpack_from("<8s16sq32sQQ", raw)
    assert (magic, uuid, ctime, hsize, chunk_size) == (
        FIXED_SIZED_CHUNK_INDEX_1_0, b"u" * 16, -5, size, 4 * MiB)
    assert csum == index.csum() == hashlib.sha256(b"".join(digests)).digest()
    assert raw[80:4096] == bytes(4016)
    assert index.chunk_count == 3
    assert index.chunk_range(0) == (0, 4 * MiB)
    assert index.chunk_range(2) == (8 * MiB, size)
    assert index.chunk_index_for_offset(size - 1) == 2
    assert index.digest_list() == digests
    assert FixedIndex.decode(raw) == index
    assert FixedIndex.from_chunks(size, 4 * MiB, digests, uuid=b"u" * 16, ctime=-5) == index
    with pytest.raises(ChunkIndexError):
        index.chunk_range(3)


@pytest.mark.parametrize(
    ("size", "chunk_size", "n"),
    [(0, 4096, 0), (100, 3000, 1), (100, 0, 1), (4097, 4096, 1), (4096, 4096, 2)],
)
def test_fixed_geometry_errors(size: int, chunk_size: int, n: int) -> None:
    with pytest.raises(FormatError):
        FixedIndex(bytes(16), 0, size, chunk_size, bytes(32 * n))


def test_fixed_decode_errors() -> None:
    raw = FixedIndex.from_digests(10_000, 4096, [_digest(i) for i in range(3)]).encode()
    with pytest.raises(FormatError, match="not a fixed index"):
        FixedIndex.decode(DYNAMIC_SIZED_CHUNK_INDEX_1_0 + raw[8:])
    with pytest.raises(FormatError, match="bytes of digests"):
        FixedIndex.decode(raw[:-1])
    with pytest.raises(FormatError, match="bytes of digests"):
        FixedIndex.decode(raw + bytes(32))
    with pytest.raises(FormatError, match="too small"):
        FixedIndex.decode(raw[:4000])
    flipped = bytearray(raw)
    flipped[-1] ^= 1
    with pytest.raises(FormatError, match="checksum mismatch"):
        FixedIndex.decode(bytes(flipped))
    bad_chunk = bytearray(raw)
    bad_chunk[72:80] = struct.pack("<Q", 3000)
    with pytest.raises(FormatError, match="power of two"):
        FixedIndex.decode(bytes(bad_chunk))


def test_fixed_builder_any_order() -> None:
    b = FixedIndexBuilder(3 * 4096 + 1, 4096)
    assert b.chunk_count == 4 and b.missing() == 4
    for i in (3, 1, 0):
        b.set(i, _digest(i))
    with pytest.raises(FormatError, match="chunk 2"):
        b.finish()
    b.set(2, _digest(2))
    index = b.finish(bytes(16), 1)
    assert index.digest_list() == [_digest(i) for i in range(4)]
    with pytest.raises(ChunkIndexError):
        b.set(4, _digest(4))


# -- property tests ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 2**40), max_size=40),
    uuid=st.binary(min_size=16, max_size=16),
    ctime=st.integers(-(2**63), 2**63 - 1),
)
def test_dynamic_round_trip(sizes: list[int], uuid: bytes, ctime: int) -> None:
    b = DynamicIndexBuilder()
    for i, s in enumerate(sizes):
        b.add_chunk(s, _digest(i))
    index = b.finish(uuid, ctime)
    decoded = DynamicIndex.decode(index.encode())
    assert decoded == index and decoded.size == sum(sizes)
    assert decoded.csum() == index.csum()


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(1, 2**20),
    shift=st.integers(0, 16),
    uuid=st.binary(min_size=16, max_size=16),
    data=st.data(),
)
def test_fixed_round_trip(size: int, shift: int, uuid: bytes, data: st.DataObject) -> None:
    chunk_size = 1 << (shift + 4)
    n = -(-size // chunk_size)
    digests = data.draw(st.binary(min_size=32 * n, max_size=32 * n)) if n < 64 else bytes(32 * n)
    index = FixedIndex(uuid, 0, size, chunk_size, digests)
    assert FixedIndex.decode(index.encode()) == index
    assert index.chunk_range(n - 1)[1] == size


def _with_magic(magic: bytes, rest: bytes) -> bytes:
    return magic + rest


@settings(max_examples=200, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.builds(_with_magic, st.sampled_from([DYNAMIC_SIZED_CHUNK_INDEX_1_0,
                                                FIXED_SIZED_CHUNK_INDEX_1_0]),
                  st.binary(min_size=4000, max_size=4300)),
    )
)
def test_arbitrary_bytes_only_raise_format_error(raw: bytes) -> None:
    for cls in (DynamicIndex, FixedIndex):
        with contextlib.suppress(FormatError):
            cls.decode(raw)


@settings(max_examples=100, deadline=None)
@given(
    header=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    body=st.binary(max_size=200),
)
def test_fixed_header_fields_with_valid_csum(header: tuple[int, int], body: bytes) -> None:
    """Any size/chunk_size/body combination behind a correct csum: only FormatError."""
    size, chunk_size = header
    raw = struct.pack("<8s16sq32sQQ4016x", FIXED_SIZED_CHUNK_INDEX_1_0, bytes(16), 0,
                      hashlib.sha256(body).digest(), size, chunk_size) + body
    with contextlib.suppress(FormatError):
        FixedIndex.decode(raw)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=400).map(lambda b: b[: len(b) - len(b) % 40]))
def test_dynamic_body_with_valid_csum(body: bytes) -> None:
    raw = struct.pack("<8s16sq32s4032x", DYNAMIC_SIZED_CHUNK_INDEX_1_0, bytes(16), 0,
                      hashlib.sha256(body).digest()) + body
    try:
        index = DynamicIndex.decode(raw)
    except FormatError:
        return
    assert index.encode() == raw
