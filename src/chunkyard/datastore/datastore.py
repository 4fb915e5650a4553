"""A datastore directory (spec §1): create/open, and lock-free primitives on its tree.

Chunkyard keeps no files of its own in a datastore, so `open` works on one PBS wrote. Listing
skips whatever PBS's listing skips (non-directories, symlinks, names not matching the regexes).

**Locking**: nothing here takes a lock. Every method that changes or reads more than one file
assumes its caller holds the locks of the locking design (docs: `shared/design/locking.md`);
the lifecycle operations in the layer above are the ones to call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from chunkyard.datastore.backend import EntryKind, FilesystemBackend, StorageBackend
from chunkyard.datastore.chunk_store import ChunkStore, SyncLevel
from chunkyard.datastore.layout import (
    BACKUP_TYPE_DIRS,
    CHUNKS_DIR,
    LOCK_FILE,
    MANIFEST_BLOB_NAME,
    MOVE_INTENT_DIR,
    NOTES_FILE,
    OWNER_FILE,
    PROTECTED_MARKER,
    file_key,
    group_file_key,
    group_key,
    index_tmp_name,
    namespace_children_key,
    namespace_key,
    snapshot_key,
    type_key,
)
from chunkyard.datastore.locking import LockManager, default_lock_dir
from chunkyard.errors import (
    AlreadyExists,
    DatastoreError,
    FormatError,
    InvalidName,
    NotFound,
)
from chunkyard.formats.blob import encode_chunk
from chunkyard.formats.dynamic_index import DynamicIndex
from chunkyard.formats.fixed_index import FixedIndex
from chunkyard.formats.manifest import BackupManifest
from chunkyard.names import (
    MAX_NAMESPACE_DEPTH,
    Authid,
    BackupDir,
    BackupGroup,
    BackupNamespace,
    BackupType,
    validate_archive_name,
)
from chunkyard.names.backup import parse_backup_time_dir
from chunkyard.names.patterns import BACKUP_FILE_RE, BACKUP_ID_RE, BACKUP_TIME_RE

ZERO_CHUNK_SIZE = 4 * 1024 * 1024
INDEX_SUFFIXES = (".fidx", ".didx")
BASE_DIR_MODE = 0o755
LOST_AND_FOUND = "lost+found"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot directory as listed: `files` are the names matching PBS's file regex
    (without `.protected`), sorted; `finished` means `index.json.blob` is among them."""

    dir: BackupDir
    finished: bool
    protected: bool
    files: list[str] = field(default_factory=list)


def _snap(ns: BackupNamespace, snapshot: BackupDir) -> str:
    return f"snapshot {snapshot} in namespace '{ns.display()}'"


def _grp(ns: BackupNamespace, group: BackupGroup) -> str:
    return f"group {group} in namespace '{ns.display()}'"


class Datastore:
    """A datastore on a local filesystem. Thread-safe as far as the filesystem is."""

    def __init__(self, path: str, backend: StorageBackend, chunk_store: ChunkStore) -> None:
        self._path = path
        self._backend = backend
        self._chunk_store = chunk_store
        self._identity = backend.identity()
        self._locks: LockManager | None = None

    # -- create and open ------------------------------------------------------------------

    @classmethod
    def create(cls, path: str, *, sync_level: SyncLevel = SyncLevel.FILESYSTEM,
               sparse: bool = False) -> Datastore:
        """Create a datastore as PBS does (§1.5): the directory must be absent or empty apart
        from dot entries and lost+found; makes the chunk store and inserts the 4 MiB zero chunk
        (PBS's atime check leaves it there). `sparse`: see `ChunkStore.create`."""
        path = os.path.abspath(os.fspath(path))
        _prepare_base(path)
        backend = FilesystemBackend(path)
        if backend.exists(CHUNKS_DIR):
            raise AlreadyExists(f"{path} already holds a datastore ({CHUNKS_DIR} exists)")
        chunk_store = ChunkStore.create(backend, sync_level, sparse=sparse)
        digest, encoded = encode_chunk(bytes(ZERO_CHUNK_SIZE))
        chunk_store.insert(digest, encoded)
        return cls(path, backend, chunk_store)

    @classmethod
    def open(cls, path: str, *, sync_level: SyncLevel = SyncLevel.FILESYSTEM,
             recover: bool = True) -> Datastore:
        """Open an existing datastore (ours or PBS's); only `.chunks/` and `.lock` must exist.

        A move that was cut short (its intent log is still there and its locks are free) is
        completed first, unless `recover` is False (see `moves.recovery`).
        """
        path = os.path.abspath(os.fspath(path))
        if not os.path.exists(path):
            raise NotFound(f"datastore {path} does not exist")
        if not os.path.isdir(path):
            raise DatastoreError(f"datastore {path} is not a directory")
        backend = FilesystemBackend(path)
        ds = cls(path, backend, ChunkStore.open(backend, sync_level))
        if recover and backend.exists(MOVE_INTENT_DIR):
            from chunkyard.datastore.moves.recovery import complete_interrupted_moves

            complete_interrupted_moves(ds)
        return ds

    # -- properties -----------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def name(self) -> str:
        return os.path.basename(self._path)

    @property
    def backend(self) -> StorageBackend:
        return self._backend

    @property
    def chunk_store(self) -> ChunkStore:
        return self._chunk_store

    @property
    def sync_level(self) -> SyncLevel:
        return self._chunk_store.sync_level

    @property
    def identity(self) -> str:
        """Stable id of this datastore (device and inode of its root), whatever its path."""
        return self._identity

    @property
    def locks(self) -> LockManager:
        """The lock manager every operation on this datastore goes through (locking.md).

        Keyed by the datastore's identity, so two processes naming it by different paths
        share locks; the chunk-store lock is PBS's `<base>/.lock`.
        """
        if self._locks is None:
            self._locks = LockManager(default_lock_dir(self._identity),
                                      self._backend.local_path(LOCK_FILE))
        return self._locks

    def __repr__(self) -> str:
        return f"Datastore({self._path!r})"

    def sync_after_backup(self) -> None:
        """Call right before a backup counts as finished: syncfs() at sync level filesystem."""
        self._chunk_store.sync_if_filesystem_level()

    @property
    def _fsync(self) -> bool:
        return self.sync_level == SyncLevel.FILE

    def _is_dir(self, key: str) -> bool:
        try:
            return self._backend.stat(key).kind == EntryKind.DIR
        except NotFound:
            return False

    # -- namespaces -----------------------------------------------------------------------

    def namespace_exists(self, ns: BackupNamespace) -> bool:
        key = namespace_key(ns)
        return ns.is_root or self._is_dir(key)

    def list_child_namespaces(self, ns: BackupNamespace) -> list[BackupNamespace]:
        """Direct children of `ns`: directories under its `ns/` whose names are valid and
        within the depth and length limits; anything else is skipped."""
        try:
            entries = self._backend.list_dir(namespace_children_key(ns))
        except NotFound:
            return []
        out: list[BackupNamespace] = []
        for entry in entries:
            if entry.kind != EntryKind.DIR:
                continue
            try:
                out.append(ns.child(entry.name))
            except InvalidName:
                continue
        return sorted(out)

    def iter_namespaces(self, parent: BackupNamespace,
                        max_depth: int = MAX_NAMESPACE_DEPTH) -> Iterator[BackupNamespace]:
        """`parent` first, then its descendants depth-first in sorted order, down to
        `max_depth` levels below `parent` (clamped to the global limit, as PBS does).

        Lazy: a namespace's children are listed only after it has been yielded, so a caller
        can lock each namespace before its subtree is read.
        """
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or not (
            0 <= max_depth <= MAX_NAMESPACE_DEPTH
        ):
            raise InvalidName(f"max depth {max_depth!r} must be 0..{MAX_NAMESPACE_DEPTH}")
        namespace_key(parent)  # type check now, not on first next()
        return self._walk(parent, min(max_depth, MAX_NAMESPACE_DEPTH - parent.depth))

    def _walk(self, ns: BackupNamespace, remaining: int) -> Iterator[BackupNamespace]:
        yield ns
        if remaining > 0:
            for child in self.list_child_namespaces(ns):
                yield from self._walk(child, remaining - 1)

    def make_namespace_dir(self, ns: BackupNamespace) -> None:
        """Create the directory of `ns`; its parent must exist (NotFound), `ns` must not."""
        if ns.is_root:
            raise AlreadyExists("the root namespace always exists")
        if not self.namespace_exists(ns.parent):
            raise NotFound(f"parent namespace '{ns.parent.display()}' does not exist")
        self._backend.mkdir(namespace_children_key(ns.parent), exist_ok=True)
        try:
            self._backend.mkdir(namespace_key(ns))
        except AlreadyExists:
            raise AlreadyExists(f"namespace '{ns}' already exists") from None

    def remove_namespace_dir_if_empty(self, ns: BackupNamespace) -> bool:
        """rmdir the empty vm/ct/host dirs, the `ns/` dir and the namespace directory itself
        (§1.7); non-empty ones stay. True if the namespace directory is gone."""
        if ns.is_root:
            raise DatastoreError("the root namespace cannot be removed")
        if not self.namespace_exists(ns):
            raise NotFound(f"namespace '{ns}' does not exist")
        for t in BackupType:
            with contextlib.suppress(NotFound):
                self._backend.rmdir(type_key(ns, t))
        with contextlib.suppress(NotFound):
            self._backend.rmdir(namespace_children_key(ns))
        return self._backend.rmdir(namespace_key(ns))

    # -- groups ---------------------------------------------------------------------------

    def list_groups(self, ns: BackupNamespace) -> list[BackupGroup]:
        """Groups of `ns`, sorted: directories `<type>/<id>` with a valid type and id."""
        if not self.namespace_exists(ns):
            raise NotFound(f"namespace '{ns.display()}' does not exist")
        try:
            entries = self._backend.list_dir(namespace_key(ns))
        except NotFound:
            raise NotFound(f"namespace '{ns.display()}' does not exist") from None
        out: list[BackupGroup] = []
        for entry in entries:
            if entry.kind != EntryKind.DIR or entry.name not in BACKUP_TYPE_DIRS:
                continue
            btype = BackupType(entry.name)
            try:
                ids = self._backend.list_dir(type_key(ns, btype))
            except NotFound:  # removed meanwhile
                continue
            out.extend(BackupGroup(btype, e.name) for e in ids
                       if e.kind == EntryKind.DIR and BACKUP_ID_RE.match(e.name))
        return sorted(out)

    def group_exists(self, ns: BackupNamespace, group: BackupGroup) -> bool:
        return self._is_dir(group_key(ns, group))

    def require_namespace(self, ns: BackupNamespace) -> None:
        """NotFound unless `ns` exists (callers check under the lock that guards it)."""
        if not self.namespace_exists(ns):
            raise NotFound(f"namespace '{ns.display()}' does not exist")

    def require_group(self, ns: BackupNamespace, group: BackupGroup) -> None:
        self.require_namespace(ns)
        if not self.group_exists(ns, group):
            raise NotFound(f"{_grp(ns, group)} does not exist")

    def require_snapshot(self, ns: BackupNamespace, snapshot: BackupDir) -> None:
        self.require_group(ns, snapshot.group)
        if not self.snapshot_exists(ns, snapshot):
            raise NotFound(f"snapshot {snapshot} does not exist in namespace '{ns.display()}'")

    def make_group_dir(self, ns: BackupNamespace, group: BackupGroup, owner: Authid) -> Authid:
        """Create the group directory (and its type directory) if needed, and its owner file
        if there is none (never overwritten); returns the group's actual owner."""
        if not isinstance(owner, Authid):
            raise InvalidName(f"owner must be an Authid, not {type(owner).__name__}")
        if not self.namespace_exists(ns):
            raise NotFound(f"namespace '{ns.display()}' does not exist")
        self._backend.mkdir(type_key(ns, group.type), exist_ok=True)
        self._backend.mkdir(group_key(ns, group), exist_ok=True)
        key = group_file_key(ns, group, OWNER_FILE)
        if self._backend.create_new(key, f"{owner}\n".encode()):
            return owner
        return self.get_owner(ns, group)

    def get_owner(self, ns: BackupNamespace, group: BackupGroup) -> Authid:
        """The owner file's first line, trailing whitespace trimmed, as an Authid."""
        try:
            raw = self._backend.read(group_file_key(ns, group, OWNER_FILE))
        except NotFound:
            raise NotFound(f"{_grp(ns, group)} has no owner") from None
        try:
            return Authid.parse(raw.decode("utf-8").split("\n", 1)[0].rstrip())
        except (UnicodeDecodeError, InvalidName):
            raise FormatError(f"owner file of {_grp(ns, group)} is corrupt: {raw[:80]!r}") from None

    def set_owner(self, ns: BackupNamespace, group: BackupGroup, owner: Authid) -> None:
        """Replace the owner (PBS's `change-owner`), atomically."""
        if not isinstance(owner, Authid):
            raise InvalidName(f"owner must be an Authid, not {type(owner).__name__}")
        self.require_group(ns, group)
        self._backend.write_atomic(group_file_key(ns, group, OWNER_FILE), f"{owner}\n".encode(),
                                   fsync=self._fsync)

    def get_group_notes(self, ns: BackupNamespace, group: BackupGroup) -> str:
        """The group's notes, '' if it has none."""
        try:
            raw = self._backend.read(group_file_key(ns, group, NOTES_FILE))
        except NotFound:
            return ""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"notes of {_grp(ns, group)} are not valid UTF-8") from None

    def set_group_notes(self, ns: BackupNamespace, group: BackupGroup, notes: str) -> None:
        """Replace the notes file whole, without adding a newline (as PBS)."""
        if not isinstance(notes, str):
            raise InvalidName(f"notes must be a string, not {type(notes).__name__}")
        self.require_group(ns, group)
        self._backend.write_atomic(group_file_key(ns, group, NOTES_FILE), notes.encode("utf-8"),
                                   fsync=self._fsync)

    def remove_group_dir(self, ns: BackupNamespace, group: BackupGroup) -> None:
        """Remove notes, owner and the directory of a group without snapshots."""
        remaining = self.list_snapshots(ns, group)
        if remaining:
            raise DatastoreError(
                f"{_grp(ns, group)} still has {len(remaining)} snapshot(s)")
        for name in (NOTES_FILE, OWNER_FILE):
            with contextlib.suppress(NotFound):
                self._backend.remove(group_file_key(ns, group, name))
        if not self._backend.rmdir(group_key(ns, group)):
            raise DatastoreError(f"{_grp(ns, group)} is not empty: it holds unknown entries")

    def remove_group_notes(self, ns: BackupNamespace, group: BackupGroup) -> bool:
        """Remove the group's notes file; False if it had none."""
        try:
            self._backend.remove(group_file_key(ns, group, NOTES_FILE))
        except NotFound:
            return False
        return True

    # -- renames for moves (the caller holds the move's locks) ----------------------------

    def rename_namespace_dir(self, src: BackupNamespace, dst: BackupNamespace) -> None:
        """One rename(2) of a namespace directory with everything below it; `dst`'s parent
        must exist and `dst` must not (AlreadyExists)."""
        if src.is_root or dst.is_root:
            raise DatastoreError("the root namespace cannot be renamed")
        self.require_namespace(dst.parent)
        self._backend.mkdir(namespace_children_key(dst.parent), exist_ok=True)
        self._backend.rename(namespace_key(src), namespace_key(dst), no_replace=True)

    def rename_group_dir(self, src: BackupNamespace, dst: BackupNamespace,
                         group: BackupGroup) -> None:
        """One rename(2) of a group directory (snapshots, owner, notes) into namespace `dst`,
        which must exist; the group must not exist there."""
        self.require_namespace(dst)
        self._backend.mkdir(type_key(dst, group.type), exist_ok=True)
        self._backend.rename(group_key(src, group), group_key(dst, group), no_replace=True)

    def rename_snapshot_dir(self, src: BackupNamespace, dst: BackupNamespace,
                            snapshot: BackupDir) -> None:
        """One rename(2) of a snapshot directory into the same group in namespace `dst`."""
        self.require_group(dst, snapshot.group)
        self._backend.rename(snapshot_key(src, snapshot), snapshot_key(dst, snapshot),
                             no_replace=True)

    def rename_group_notes(self, src: BackupNamespace, dst: BackupNamespace,
                           group: BackupGroup) -> None:
        """Move the notes file of a group to the same group in `dst` (which has none)."""
        self._backend.rename(group_file_key(src, group, NOTES_FILE),
                             group_file_key(dst, group, NOTES_FILE), no_replace=True)

    def sync_dirs(self, keys: Iterable[str]) -> None:
        """Make renames durable: fsync each directory, unless the sync level is none."""
        if self.sync_level == SyncLevel.NONE:
            return
        for key in dict.fromkeys(keys):
            with contextlib.suppress(NotFound):
                self._backend.sync_dir(key)

    # -- snapshots ------------------------------------------------------------------------

    def list_snapshots(self, ns: BackupNamespace, group: BackupGroup) -> list[SnapshotInfo]:
        """Snapshots of a group, oldest first. Directories whose name is not a canonical
        `YYYY-MM-DDTHH:MM:SSZ` of an epoch >= 1 are skipped (PBS would fail the listing on an
        impossible date such as month 13; it skips everything else alike)."""
        try:
            entries = self._backend.list_dir(group_key(ns, group))
        except NotFound:
            raise NotFound(f"{_grp(ns, group)} does not exist") from None
        out: list[SnapshotInfo] = []
        for entry in entries:
            if entry.kind != EntryKind.DIR or not BACKUP_TIME_RE.match(entry.name):
                continue
            try:
                snapshot = BackupDir(group, parse_backup_time_dir(entry.name))
            except InvalidName:
                continue
            if snapshot.time_string != entry.name:  # e.g. Feb 30: normalised to a new name
                continue
            info = self._snapshot_info(ns, snapshot)
            if info is not None:
                out.append(info)
        out.sort(key=lambda i: i.dir.time)
        return out

    def _snapshot_info(self, ns: BackupNamespace, snapshot: BackupDir) -> SnapshotInfo | None:
        try:
            entries = self._backend.list_dir(snapshot_key(ns, snapshot))
        except NotFound:  # removed meanwhile
            return None
        files: list[str] = []
        protected = False
        for e in entries:
            if e.kind != EntryKind.FILE or not BACKUP_FILE_RE.match(e.name):
                continue
            if e.name == PROTECTED_MARKER:
                protected = True
            else:
                files.append(e.name)
        files.sort()
        return SnapshotInfo(snapshot, MANIFEST_BLOB_NAME in files, protected, files)

    def snapshot_info(self, ns: BackupNamespace, snapshot: BackupDir) -> SnapshotInfo:
        """The listing entry of one snapshot; NotFound if it does not exist."""
        info = self._snapshot_info(ns, snapshot) if self.snapshot_exists(ns, snapshot) else None
        if info is None:
            raise NotFound(f"{_snap(ns, snapshot)} does not exist")
        return info

    def last_finished_snapshot(self, ns: BackupNamespace,
                               group: BackupGroup) -> SnapshotInfo | None:
        """The newest snapshot with a manifest, or None."""
        finished = [s for s in self.list_snapshots(ns, group) if s.finished]
        return finished[-1] if finished else None

    def snapshot_exists(self, ns: BackupNamespace, snapshot: BackupDir) -> bool:
        return self._is_dir(snapshot_key(ns, snapshot))

    def make_snapshot_dir(self, ns: BackupNamespace, snapshot: BackupDir) -> None:
        """Create the snapshot directory; the group must exist, the snapshot must not."""
        self.require_group(ns, snapshot.group)
        try:
            self._backend.mkdir(snapshot_key(ns, snapshot))
        except AlreadyExists:
            raise AlreadyExists(f"{_snap(ns, snapshot)} already exists") from None

    def remove_snapshot_dir(self, ns: BackupNamespace, snapshot: BackupDir, *,
                            force: bool = False) -> None:
        """Remove a snapshot directory with everything in it; a protected one only with
        `force` (used to clean up after a failed backup).

        The manifest goes first: a removal cut short (kill -9, crash) leaves an unfinished
        snapshot, never one that lists as finished while archives are missing. PBS removes
        the tree in directory order; this is stricter on purpose.
        """
        if not self.snapshot_exists(ns, snapshot):
            raise NotFound(f"{_snap(ns, snapshot)} does not exist")
        if not force and self.is_protected(ns, snapshot):
            raise DatastoreError(f"{_snap(ns, snapshot)} is protected")
        with contextlib.suppress(NotFound):
            self._backend.remove(file_key(ns, snapshot, MANIFEST_BLOB_NAME))
        self._backend.remove_tree(snapshot_key(ns, snapshot))

    def is_protected(self, ns: BackupNamespace, snapshot: BackupDir) -> bool:
        return self._backend.exists(file_key(ns, snapshot, PROTECTED_MARKER))

    def set_protected(self, ns: BackupNamespace, snapshot: BackupDir, protected: bool) -> None:
        """Create or remove the empty `.protected` marker."""
        if not self.snapshot_exists(ns, snapshot):
            raise NotFound(f"{_snap(ns, snapshot)} does not exist")
        key = file_key(ns, snapshot, PROTECTED_MARKER)
        if protected:
            self._backend.create_new(key, b"")
        else:
            with contextlib.suppress(NotFound):
                self._backend.remove(key)

    # -- index files anywhere -------------------------------------------------------------

    def find_index_files(self, key: str = "") -> list[str] | None:
        """Every `.fidx`/`.didx` file at or below `key` (the whole datastore by default), as
        PBS's GC walk finds them: no symlinks followed, every name starting with a dot skipped
        (`.chunks`, `.move-intents`, ...), vanished entries ignored. None if `key` is absent."""
        try:
            top = self._backend.stat(key) if key else None
        except NotFound:
            return None
        if top is not None and top.kind != EntryKind.DIR:
            return [key] if top.kind == EntryKind.FILE and key.endswith(INDEX_SUFFIXES) else []
        out: list[str] = []
        stack = [key]
        while stack:
            cur = stack.pop()
            try:
                entries = self._backend.list_dir(cur)
            except NotFound:
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                child = f"{cur}/{e.name}" if cur else e.name
                if e.kind == EntryKind.DIR:
                    stack.append(child)
                elif e.kind == EntryKind.FILE and e.name.endswith(INDEX_SUFFIXES):
                    out.append(child)
        return sorted(out)

    # -- files in a snapshot --------------------------------------------------------------

    def read_file(self, ns: BackupNamespace, snapshot: BackupDir, name: str) -> bytes:
        """The raw bytes of an archive file (`.blob`, `.fidx`, `.didx`) of a snapshot."""
        key = file_key(ns, snapshot, validate_archive_name(name))
        try:
            return self._backend.read(key)
        except NotFound:
            raise NotFound(f"{_snap(ns, snapshot)} has no file {name!r}") from None

    def load_manifest_raw(self, ns: BackupNamespace, snapshot: BackupDir) -> bytes:
        try:
            return self._backend.read(file_key(ns, snapshot, MANIFEST_BLOB_NAME))
        except NotFound:
            raise NotFound(f"{_snap(ns, snapshot)} has no manifest "
                           "(it does not exist or is unfinished)") from None

    def load_manifest(self, ns: BackupNamespace, snapshot: BackupDir) -> BackupManifest:
        """The decoded manifest; NotFound if absent, FormatError if it is corrupt."""
        raw = self.load_manifest_raw(ns, snapshot)
        try:
            return BackupManifest.decode_blob(raw)
        except FormatError as e:
            raise type(e)(f"manifest of {_snap(ns, snapshot)}: {e}") from None

    def write_manifest(self, ns: BackupNamespace, snapshot: BackupDir,
                       manifest: BackupManifest) -> None:
        """Atomically write (or replace) `index.json.blob`; this marks the snapshot finished."""
        self._backend.write_atomic(file_key(ns, snapshot, MANIFEST_BLOB_NAME),
                                   manifest.encode_blob(), fsync=self._fsync)

    def write_blob_file(self, ns: BackupNamespace, snapshot: BackupDir, name: str,
                        raw: bytes) -> None:
        """Atomically write an encoded `.blob` archive."""
        if not validate_archive_name(name).endswith(".blob"):
            raise InvalidName(f"blob archive name {name!r} must end in .blob")
        if name == MANIFEST_BLOB_NAME:
            raise InvalidName(f"{name!r} is the manifest: use write_manifest")
        self._backend.write_atomic(file_key(ns, snapshot, name), raw, fsync=self._fsync)

    def write_index_file(self, ns: BackupNamespace, snapshot: BackupDir, name: str,
                         encoded: bytes) -> None:
        """Write an encoded `.fidx`/`.didx` as `<stem>.tmp_fidx`/`.tmp_didx` (§1.2), then
        rename it into place."""
        tmp = index_tmp_name(name)
        self._backend.write_atomic(file_key(ns, snapshot, name), encoded, tmp_name=tmp,
                                   fsync=self._fsync)

    def load_index(self, ns: BackupNamespace, snapshot: BackupDir,
                   name: str) -> FixedIndex | DynamicIndex:
        """Decode an index file, chosen by its extension; FormatError if it is corrupt."""
        index_tmp_name(name)  # validates: an index archive name
        raw = self.read_file(ns, snapshot, name)
        try:
            if name.endswith(".fidx"):
                return FixedIndex.decode(raw)
            return DynamicIndex.decode(raw)
        except FormatError as e:
            raise type(e)(f"index {name} of {_snap(ns, snapshot)}: {e}") from None


def _prepare_base(path: str) -> None:
    """Create `path` (0755) or check that it is empty apart from dot entries and lost+found."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        try:
            os.makedirs(path, mode=BASE_DIR_MODE)
            os.chmod(path, BASE_DIR_MODE)
        except OSError as e:
            raise DatastoreError(
                f"cannot create datastore directory {path}: {e.strerror}") from None
        return
    except NotADirectoryError:
        raise DatastoreError(f"cannot create a datastore at {path}: not a directory") from None
    except OSError as e:
        raise DatastoreError(f"cannot read {path}: {e.strerror}") from None
    extra = sorted(n for n in entries if not n.startswith(".") and n != LOST_AND_FOUND)
    if extra:
        raise DatastoreError(
            f"cannot create a datastore at {path}: directory is not empty "
            f"(found {', '.join(repr(n) for n in extra[:3])})")


__all__ = ["Datastore", "SnapshotInfo", "SyncLevel"]
