"""Fixed index `.fidx` (spec §4.1): a 4096-byte header and one digest per fixed-size chunk.

Used for block images, where chunk `i` always covers `[i*chunk_size, (i+1)*chunk_size)` (the
last one may be short), so the body is nothing but the digests in order. They are kept as one
bytes object of n*32: a VM image has hundreds of thousands of chunks, and a list of small bytes
objects would cost far more memory and time to build.
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid as uuid_mod
from collections.abc import Sequence
from dataclasses import dataclass, field

from chunkyard.errors import FormatError
from chunkyard.formats.index_digests import DIGEST_SIZE, ChunkIndexError, DigestList

FIXED_SIZED_CHUNK_INDEX_1_0 = hashlib.sha256(
    b"Proxmox Backup fixed sized chunk index v1.0"
).digest()[:8]
INDEX_HEADER_SIZE = 4096
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
_HEADER = struct.Struct("<8s16sq32sQQ4016x")
_U64_MAX = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1




def check_header_fields(kind: str, uuid: bytes, ctime: int) -> None:
    """Shared sanity checks of the uuid and ctime header fields."""
    if not isinstance(uuid, bytes) or len(uuid) != 16:
        raise FormatError(f"{kind}: uuid must be 16 raw bytes")
    if not isinstance(ctime, int) or not _I64_MIN <= ctime <= _I64_MAX:
        raise FormatError(f"{kind}: ctime {ctime!r} is not a 64-bit integer")


def new_uuid() -> bytes:
    return uuid_mod.uuid4().bytes


def chunk_count_for(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def _check_geometry(size: int, chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size & (chunk_size - 1):
        raise FormatError(f"fixed index: chunk size {chunk_size!r} is not a power of two")
    if not isinstance(size, int) or not 1 <= size <= _U64_MAX:
        raise FormatError(f"fixed index: image size {size!r} must be between 1 and 2^64-1")
    return chunk_count_for(size, chunk_size)


@dataclass(frozen=True, slots=True)
class FixedIndex(DigestList):
    """A decoded `.fidx`: `uuid` is 16 raw bytes, `digests` the n*32-byte concatenation."""

    KIND = "fixed"

    uuid: bytes
    ctime: int
    size: int
    chunk_size: int
    digests: bytes
    _csum: list[bytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_header_fields("fixed index", self.uuid, self.ctime)
        n = _check_geometry(self.size, self.chunk_size)
        if not isinstance(self.digests, bytes) or len(self.digests) != n * DIGEST_SIZE:
            raise FormatError(
                f"fixed index: {self.size} bytes in chunks of {self.chunk_size} need {n} "
                f"digests, got {len(self.digests) / DIGEST_SIZE:g}"
            )

    @classmethod
    def from_digests(
        cls,
        size: int,
        chunk_size: int,
        digests: Sequence[bytes],
        *,
        uuid: bytes | None = None,
        ctime: int | None = None,
    ) -> FixedIndex:
        if any(len(d) != DIGEST_SIZE for d in digests):
            raise FormatError("fixed index: every digest must be 32 bytes")
        return cls(
            uuid if uuid is not None else new_uuid(),
            ctime if ctime is not None else int(time.time()),
            size,
            chunk_size,
            b"".join(digests),
        )

    from_chunks = from_digests

    # -- geometry ------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.chunk_count


    def chunk_range(self, i: int) -> tuple[int, int]:
        """Byte range `[start, end)` of chunk `i` in the image."""
        self._check(i)
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def chunk_index_for_offset(self, offset: int) -> int:
        if not 0 <= offset < self.size:
            raise ChunkIndexError(f"fixed index: offset {offset} outside 0..{self.size}")
        return offset // self.chunk_size

    # -- checksums and encoding ------------------------------------------------------------

    def csum(self) -> bytes:
        """SHA256 over the concatenated digests: header `index_csum` and manifest csum (§4.3)."""
        if not self._csum:
            self._csum.append(hashlib.sha256(self.digests).digest())
        return self._csum[0]

    def encode(self) -> bytes:
        header = _HEADER.pack(
            FIXED_SIZED_CHUNK_INDEX_1_0, self.uuid, self.ctime, self.csum(), self.size,
            self.chunk_size,
        )
        return header + self.digests

    @classmethod
    def decode(cls, raw: bytes | bytearray | memoryview) -> FixedIndex:
        """Parse and validate a `.fidx` file (magic, length, header csum)."""
        if len(raw) < INDEX_HEADER_SIZE:
            raise FormatError(
                f"fixed index too small: {len(raw)} bytes, header alone is {INDEX_HEADER_SIZE}"
            )
        magic, uuid, ctime, csum, size, chunk_size = _HEADER.unpack_from(raw)
        if magic != FIXED_SIZED_CHUNK_INDEX_1_0:
            raise FormatError(f"not a fixed index: magic {magic.hex()}")
        n = _check_geometry(size, chunk_size)
        body = bytes(memoryview(raw)[INDEX_HEADER_SIZE:])
        if len(body) != n * DIGEST_SIZE:
            raise FormatError(
                f"fixed index has {len(body)} bytes of digests, size {size} in chunks of "
                f"{chunk_size} needs {n * DIGEST_SIZE}"
            )
        index = cls(uuid, ctime, size, chunk_size, body)
        actual = index.csum()
        if actual != csum:
            raise FormatError(
                f"fixed index checksum mismatch: header {csum.hex()}, digests hash to "
                f"{actual.hex()}"
            )
        return index


class FixedIndexBuilder:
    """Collects digests by position (any order, like PBS's mmap'd writer) for one image."""

    def __init__(self, size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.size = size
        self.chunk_size = chunk_size
        self.chunk_count = _check_geometry(size, chunk_size)
        self._digests = bytearray(self.chunk_count * DIGEST_SIZE)
        self._filled = bytearray(self.chunk_count)

    def chunk_range(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.chunk_count:
            raise ChunkIndexError(f"fixed index: chunk {i} out of range ({self.chunk_count})")
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def set(self, i: int, digest: bytes) -> None:
        self.chunk_range(i)
        if len(digest) != DIGEST_SIZE:
            raise FormatError(f"fixed index: digest for chunk {i} is not 32 bytes")
        self._digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] = digest
        self._filled[i] = 1

    def is_set(self, i: int) -> bool:
        self.chunk_range(i)
        return bool(self._filled[i])

    def missing(self) -> int:
        """Number of chunks without a digest yet."""
        return self._filled.count(0)

    def finish(self, uuid: bytes | None = None, ctime: int | None = None) -> FixedIndex:
        gap = self._filled.find(0)
        if gap >= 0:
            raise FormatError(f"fixed index: chunk {gap} of {self.chunk_count} has no digest")
        return FixedIndex(
            uuid if uuid is not None else new_uuid(),
            ctime if ctime is not None else int(time.time()),
            self.size,
            self.chunk_size,
            bytes(self._digests),
        )
