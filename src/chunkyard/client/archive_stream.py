"""Chunk an archive byte stream into a dynamic index, reusing the previous snapshot's chunks.

The stream is written into large blocks and cut by the native buzhash chunker; chunk data goes
to a ChunkSink as zero-copy slices of those blocks. A *reused region* is a run of bytes that
is known (from the metadata cache) to equal bytes `[old_off, old_off + length)` of the previous
stream. Once the chunker is in step with the previous stream (a cut here falls on a chunk start
there), every previous chunk that lies wholly inside the region is referenced by digest without
reading its bytes; only the tail after the last such chunk is regenerated and chunked again.
This is what keeps an unchanged re-backup from reading unchanged file contents.
"""

from __future__ import annotations

import bisect
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from chunkyard.client.chunk_sink import ChunkResult, ChunkSink
from chunkyard.client.tree import open_regular
from chunkyard.formats.chunker import Chunker

BLOCK_SIZE = 32 * 1024 * 1024
RETIRED_BLOCKS = 3  # a block is recycled once this many newer ones exist and its chunks are done


@dataclass(frozen=True, slots=True)
class FileSlice:
    """`length` bytes of file `source` from `offset`; zero-padded if the file shrank."""

    source: str
    offset: int
    length: int


Piece = bytes | FileSlice
Regenerate = Callable[[int], Iterator[Piece]]


class PreviousStream:
    """The previous snapshot's index of the same archive: chunk ends and digests."""

    def __init__(self, ends: Sequence[int], digests: Sequence[bytes]) -> None:
        self.ends = list(ends)
        self.digests = list(digests)
        self._starts = {0: 0}
        for i, end in enumerate(self.ends[:-1]):
            self._starts[end] = i + 1

    def chunk_starting_at(self, offset: int) -> int | None:
        return self._starts.get(offset)

    def last_chunk_ending_by(self, limit: int) -> int:
        """Index of the last chunk whose end is <= limit (-1 if none)."""
        return bisect.bisect_right(self.ends, limit) - 1


@dataclass
class StreamStats:
    bytes_total: int = 0
    bytes_reused: int = 0
    chunks_reused: int = 0


class ArchiveStream:
    """Accepts the archive as pieces; produces (end offset, digest) entries in stream order."""

    def __init__(self, chunker: Chunker, sink: ChunkSink, previous: PreviousStream | None,
                 progress: Callable[[int], None] | None = None,
                 block_size: int = BLOCK_SIZE) -> None:
        self._chunker = chunker
        self._sink = sink
        self._previous = previous
        self._progress = progress
        self._block_size = block_size
        self._retired: deque[tuple[bytearray, list[Future[ChunkResult]]]] = deque()
        self._block_futures: list[Future[ChunkResult]] = []
        self._new_block()
        self._base = 0
        self._carry: list[memoryview] = []
        self._entries: list[tuple[int, bytes | Future[ChunkResult]]] = []
        self._region: tuple[int, int, int] | None = None
        self._sync_pos: int | None = None
        self.stats = StreamStats()
        self.warnings: list[str] = []

    # -- positions ---------------------------------------------------------------------
    @property
    def pos(self) -> int:
        """Stream offset of the next byte written."""
        return self._base + self._fill

    def _new_block(self) -> None:
        """Start a block, recycling an old one: fresh memory costs a page fault per 4 KiB."""
        if len(self._retired) >= RETIRED_BLOCKS:
            block, futures = self._retired.popleft()
            for fut in futures:
                fut.result()
        else:
            block = bytearray(self._block_size)
        self._block = block
        self._block_futures = []
        self._mv = memoryview(self._block)
        self._fill = 0
        self._scanned = 0
        self._chunk_start = 0

    # -- writing -----------------------------------------------------------------------
    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = min(len(view), self._block_size - self._fill)
            self._mv[self._fill:self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            self._advanced(n)
            if self._fill == self._block_size:
                self._roll()

    def write_file(self, fd: int, length: int) -> int:
        """Copy `length` bytes from `fd` straight into the block; returns bytes really read.
        A file that ends early (or fd -1, a file that vanished) is padded with zeros."""
        remaining = length
        got_total = 0
        while remaining:
            n = min(remaining, self._block_size - self._fill)
            got = os.readv(fd, [self._mv[self._fill:self._fill + n]]) if fd >= 0 else 0
            if got == 0:  # the file shrank while we read it: pad like tar does
                self._mv[self._fill:self._fill + n] = bytes(n)
                got = n
            else:
                got_total += got
            self._fill += got
            remaining -= got
            self._advanced(got)
            if self._fill == self._block_size:
                self._roll()
        return got_total

    def _advanced(self, n: int) -> None:
        self.stats.bytes_total += n
        if self._progress is not None:
            self._progress(n)

    def _open_slice(self, piece: FileSlice) -> int:
        """An fd positioned at the slice, or -1 (zeros, with a warning) if the file is gone:
        the entry's header is already promised, so its length must be kept."""
        try:
            fd = open_regular(piece.source)
        except OSError as e:
            self.warnings.append(f"{piece.source!r} changed while backed up ({e.strerror}): "
                                 "its content is stored as zeros")
            return -1
        if piece.offset:
            os.lseek(fd, piece.offset, os.SEEK_SET)
        return fd

    def write_piece(self, piece: Piece) -> None:
        if isinstance(piece, FileSlice):
            fd = self._open_slice(piece)
            try:
                self.write_file(fd, piece.length)
            finally:
                if fd >= 0:
                    os.close(fd)
        else:
            self.write(piece)

    # -- chunking ----------------------------------------------------------------------
    def _roll(self) -> None:
        self._scan()
        if self._fill < self._block_size:  # a re-synchronising cut discarded the tail
            return
        if self._chunk_start < self._fill:
            self._carry.append(self._mv[self._chunk_start:self._fill])
        self._base += self._fill
        self._retired.append((self._block, self._block_futures))
        self._new_block()

    def _scan(self) -> bool:
        """Run the chunker over new bytes; True if a cut re-synchronised with the old stream."""
        if self._scanned == self._fill:
            return False
        start = self._scanned
        cuts = self._chunker.boundaries(self._mv[start:self._fill])
        self._scanned = self._fill
        for cut in cuts:
            end = start + cut
            self._emit(end)
            if self._region is not None and self._in_step_at(self._base + end):
                discarded = self._fill - end
                self._fill = self._scanned = end
                self.stats.bytes_total -= discarded
                self._chunker.reset()
                self._sync_pos = self._base + end
                return True
        return False

    def _in_step_at(self, pos: int) -> bool:
        assert self._region is not None and self._previous is not None
        region_start, old_off, length = self._region
        rel = pos - region_start
        if not 0 < rel < length:
            return False
        first = self._previous.chunk_starting_at(old_off + rel)
        return first is not None and self._previous.ends[first] <= old_off + length

    def _emit(self, end: int) -> None:
        data: bytes | memoryview = self._mv[self._chunk_start:end]
        if self._carry:
            data = b"".join([*self._carry, data])
            self._carry = []
        self._chunk_start = end
        future = self._sink.submit(data)
        self._block_futures.append(future)
        self._entries.append((self._base + end, future))

    def _at_cut(self) -> bool:
        return (not self._carry and self._chunk_start == self._fill
                and self._chunker.pending == 0)

    def _reference_previous(self, old_start: int, old_limit: int) -> int:
        """Reference previous chunks from `old_start` up to `old_limit`; returns the old
        offset reached. Requires the chunker to stand at a cut."""
        assert self._previous is not None
        first = self._previous.chunk_starting_at(old_start)
        if first is None:
            return old_start
        last = self._previous.last_chunk_ending_by(old_limit)
        reached = old_start
        for i in range(first, last + 1):
            end = self._previous.ends[i]
            size = end - reached
            self._base += size
            self._entries.append((self.pos, self._previous.digests[i]))
            self.stats.chunks_reused += 1
            self.stats.bytes_reused += size
            self.stats.bytes_total += size
            if self._progress is not None:
                self._progress(size)
            reached = end
        return reached

    def reuse(self, old_off: int, length: int, regenerate: Regenerate) -> None:
        """Append a region equal to the previous stream's `[old_off, old_off+length)`.

        `regenerate(rel)` yields the region's bytes from relative offset `rel`; it is used for
        the parts that cannot be referenced (before the chunker is in step, and the tail).
        """
        if self._previous is None:
            for piece in regenerate(0):
                self.write_piece(piece)
            return
        self._scan()
        rel = 0
        if self._at_cut() and self._previous.chunk_starting_at(old_off) is not None:
            rel = self._reference_previous(old_off, old_off + length) - old_off
        else:
            region_start = self.pos
            self._region = (region_start, old_off, length)
            self._sync_pos = None
            try:
                for piece in regenerate(0):
                    if self._write_until_in_step(piece):
                        break
            finally:
                self._region = None
            if self._sync_pos is None:
                return
            rel = self._sync_pos - region_start
            rel = self._reference_previous(old_off + rel, old_off + length) - old_off
        if rel < length:
            for piece in regenerate(rel):
                self.write_piece(piece)

    def _write_until_in_step(self, piece: Piece) -> bool:
        """Write a piece in block-sized parts, scanning after each; True once in step."""
        if isinstance(piece, FileSlice):
            fd = self._open_slice(piece)
            try:
                remaining = piece.length
                while remaining:
                    n = min(remaining, self._block_size - self._fill)
                    self.write_file(fd, n)
                    remaining -= n
                    if self._scan() or self._sync_pos is not None:
                        return True
            finally:
                if fd >= 0:
                    os.close(fd)
            return False
        view = memoryview(piece)
        while view:
            n = min(len(view), self._block_size - self._fill)
            self.write(view[:n])
            view = view[n:]
            if self._scan() or self._sync_pos is not None:
                return True
        return False

    def finish(self) -> tuple[list[int], list[bytes]]:
        """Cut the last chunk and wait for every digest; returns (ends, digests)."""
        self._scan()
        if self._carry or self._chunk_start < self._fill:
            self._emit(self._fill)
        self._chunker.reset()
        ends: list[int] = []
        digests: list[bytes] = []
        for end, item in self._entries:
            ends.append(end)
            digests.append(item if isinstance(item, bytes) else item.result()[0])
        return ends, digests
