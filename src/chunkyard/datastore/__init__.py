"""The datastore layer: storage backend, chunk store, layout and listing, locks.

The names below are loaded on first use, so importing a submodule (e.g. the locking package in
a lock-holder child process) does not pull in the formats layer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chunkyard.datastore.backend import FilesystemBackend, StorageBackend
    from chunkyard.datastore.chunk_store import ChunkStore, SyncLevel
    from chunkyard.datastore.datastore import Datastore, SnapshotInfo

_LAZY = {
    "FilesystemBackend": "chunkyard.datastore.backend",
    "StorageBackend": "chunkyard.datastore.backend",
    "ChunkStore": "chunkyard.datastore.chunk_store",
    "SyncLevel": "chunkyard.datastore.chunk_store",
    "Datastore": "chunkyard.datastore.datastore",
    "SnapshotInfo": "chunkyard.datastore.datastore",
}

__all__ = ["ChunkStore", "Datastore", "FilesystemBackend", "SnapshotInfo", "StorageBackend",
           "SyncLevel"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chunkyard.datastore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
