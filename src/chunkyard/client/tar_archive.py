"""Produce a directory's pax tar stream into an ArchiveStream, reusing unchanged entries.

Unchanged entries (equal lstat fingerprint in the metadata cache) are never read: runs of them
that were contiguous in the previous stream become one reused region. Everything else is
written fresh. The new cache records where each entry lies in the new stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chunkyard.client import tar_header as th
from chunkyard.client.archive_stream import ArchiveStream, FileSlice, Piece
from chunkyard.client.metadata_cache import CacheEntries
from chunkyard.client.tree import TreeEntry, TreeWalker, open_regular

END_KEY = "\0end-of-archive"
END_FINGERPRINT = ("end",)


@dataclass(slots=True)
class _RegionEntry:
    entry: TreeEntry | None  # None: the end-of-archive marker
    fingerprint: Any
    old_offset: int
    length: int

    def pieces(self, skip: int) -> Iterator[Piece]:
        """The entry's bytes from offset `skip` within it."""
        if self.entry is None:
            yield th.END_OF_ARCHIVE[skip:]
            return
        header = self.entry.header()
        if skip < len(header):
            yield header[skip:]
            skip = 0
        else:
            skip -= len(header)
        size = self.entry.content_size
        if skip < size:
            yield FileSlice(self.entry.source, skip, size - skip)
            skip = 0
        else:
            skip -= size
        pad = th.padding(size)
        if skip < pad:
            yield bytes(pad - skip)


class _Region:
    """Consecutive unchanged entries that were also consecutive in the previous stream."""

    def __init__(self, first: _RegionEntry) -> None:
        self.entries = [first]
        self.old_start = first.old_offset
        self.old_end = first.old_offset + first.length

    def regenerate(self, rel: int) -> Iterator[Piece]:
        offset = 0
        for item in self.entries:
            end = offset + item.length
            if rel < end:
                yield from item.pieces(max(0, rel - offset))
            offset = end


@dataclass
class TarResult:
    entries: int
    files_read: int
    warnings: list[str]
    cache: CacheEntries


def write_tar(root: str, stream: ArchiveStream, cache: CacheEntries,
              on_entry: Callable[[str], None] | None = None) -> TarResult:
    walker = TreeWalker(root)
    new_cache: CacheEntries = {}
    region: _Region | None = None
    count = 0
    files_read = 0

    def flush() -> None:
        nonlocal region
        if region is None:
            return
        start = stream.pos
        for item in region.entries:
            key = END_KEY if item.entry is None else item.entry.path
            new_cache[key] = (item.fingerprint, start + item.old_offset - region.old_start,
                              item.length)
        stream.reuse(region.old_start, region.old_end - region.old_start, region.regenerate)
        region = None

    def add_unchanged(item: _RegionEntry) -> None:
        nonlocal region
        if region is not None and region.old_end == item.old_offset:
            region.entries.append(item)
            region.old_end += item.length
        else:
            flush()
            region = _Region(item)

    for entry in walker:
        count += 1
        if on_entry is not None:
            on_entry(entry.path)
        fingerprint = entry.fingerprint()
        cached = cache.get(entry.path)
        if cached is not None and cached[0] == fingerprint:
            add_unchanged(_RegionEntry(entry, fingerprint, cached[1], cached[2]))
            continue
        flush()
        fd = -1
        if entry.typeflag == th.REGTYPE:
            try:
                fd = open_regular(entry.source)
            except OSError as e:
                walker.warnings.append(f"skipped {entry.source!r}: {e.strerror}")
                continue
        start = stream.pos
        try:
            header = entry.header()
            stream.write(header)
            if fd >= 0:
                size = entry.content_size
                got = stream.write_file(fd, size) if size else 0
                files_read += 1
                if got != size:
                    walker.warnings.append(
                        f"{entry.source!r} changed size while read: padded to {size} bytes")
                stream.write(bytes(th.padding(size)))
        finally:
            if fd >= 0:
                os.close(fd)
        new_cache[entry.path] = (fingerprint, start, stream.pos - start)

    cached_end = cache.get(END_KEY)
    if cached_end is not None and cached_end[0] == END_FINGERPRINT:
        add_unchanged(_RegionEntry(None, END_FINGERPRINT, cached_end[1], cached_end[2]))
        flush()
    else:
        flush()
        start = stream.pos
        stream.write(th.END_OF_ARCHIVE)
        new_cache[END_KEY] = (END_FINGERPRINT, start, len(th.END_OF_ARCHIVE))
    return TarResult(count, files_read, walker.warnings, new_cache)
