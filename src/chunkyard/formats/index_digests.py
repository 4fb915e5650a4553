"""Digest access shared by both index kinds: one bytes object of n*32, sliced on demand."""

from __future__ import annotations

from collections.abc import Iterator

from chunkyard.errors import FormatError

DIGEST_SIZE = 32


class ChunkIndexError(FormatError, IndexError):
    """A chunk number or offset outside the index."""


class DigestList:
    """Mixin for an index with `digests` (n*32 bytes) and `chunk_count`; `KIND` names it."""

    __slots__ = ()
    KIND = "index"
    digests: bytes

    @property
    def chunk_count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def _check(self, i: int) -> None:
        if not 0 <= i < self.chunk_count:
            raise ChunkIndexError(
                f"{self.KIND} index: chunk {i} out of range (index has {self.chunk_count})")

    def digest(self, i: int) -> bytes:
        self._check(i)
        return self.digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]

    def iter_digests(self) -> Iterator[bytes]:
        d = self.digests
        return (d[o:o + DIGEST_SIZE] for o in range(0, len(d), DIGEST_SIZE))

    def digest_list(self) -> list[bytes]:
        return list(self.iter_digests())
