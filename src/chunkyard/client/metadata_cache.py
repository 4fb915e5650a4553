"""The client-side metadata cache: which archive entries of the previous snapshot are unchanged.

Keyed on the datastore, namespace, group and archive, and bound to the previous snapshot's
index checksum: a cache that does not describe the snapshot we build on is ignored. For each
entry it keeps the lstat fingerprint (path, size, mtime, ctime, inode, owner, mode, ...) and
where the entry's bytes lie in that snapshot's stream, as restic and borg keep file caches.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

CACHE_VERSION = 1

# path -> (fingerprint, offset in the stream, entry length in the stream)
CacheEntries = dict[str, tuple[Any, int, int]]


def cache_dir() -> str:
    explicit = os.environ.get("CHUNKYARD_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "chunkyard")


@dataclass
class MetadataCache:
    """One archive's cache file; `entries` is empty when nothing usable was found."""

    key: str
    entries: CacheEntries = field(default_factory=dict)

    @classmethod
    def for_archive(cls, datastore_id: str, ns: str, group: str, archive: str) -> MetadataCache:
        digest = hashlib.sha256(f"{datastore_id}\0{ns}\0{group}\0{archive}".encode()).hexdigest()
        return cls(key=digest)

    @property
    def path(self) -> str:
        return os.path.join(cache_dir(), "files", self.key[:2], self.key)

    def load(self, snapshot_time: int, index_csum: bytes) -> CacheEntries:
        """Entries describing exactly that snapshot's archive, or {}."""
        try:
            with open(self.path, "rb") as f:
                data = marshal.loads(f.read())  # load(f) reads object by object: 10x slower
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION
                or data.get("snapshot_time") != snapshot_time
                or data.get("index_csum") != index_csum
                or not isinstance(data.get("entries"), dict)):
            return {}
        entries: CacheEntries = data["entries"]
        return entries

    def save(self, snapshot_time: int, index_csum: bytes, entries: CacheEntries) -> None:
        """Best effort: an unwritable cache only costs speed next time."""
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(marshal.dumps({"version": CACHE_VERSION,
                                           "snapshot_time": snapshot_time,
                                           "index_csum": index_csum, "entries": entries}))
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass
