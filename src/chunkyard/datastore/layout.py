"""Where things live in a datastore (spec §1, §1.2, §1.3): validated names -> storage keys.

Pure functions. Inputs are the validated name types of `chunkyard.names`, and file names are
checked here, so no key built by this module can point outside its snapshot or group directory.
"""

from __future__ import annotations

from chunkyard.errors import InvalidName
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace, BackupType
from chunkyard.names.backup import validate_archive_name

MANIFEST_BLOB_NAME = "index.json.blob"
CLIENT_LOG_BLOB_NAME = "client.log.blob"
PROTECTED_MARKER = ".protected"
OWNER_FILE = "owner"
NOTES_FILE = "notes"
CHUNKS_DIR = ".chunks"
LOCK_FILE = ".lock"
GC_STATUS_FILE = ".gc-status"
NAMESPACE_DIR = "ns"
MOVE_INTENT_DIR = ".move-intents"  # chunkyard's only directory in a datastore, while a move runs
BACKUP_TYPE_DIRS = tuple(t.value for t in BackupType)

_INDEX_TMP_EXTENSIONS = {".fidx": ".tmp_fidx", ".didx": ".tmp_didx"}


def _check(value: object, cls: type, what: str) -> None:
    if not isinstance(value, cls):
        raise InvalidName(f"{what} must be a {cls.__name__}, not {type(value).__name__}")


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def namespace_key(ns: BackupNamespace) -> str:
    """'' for the root, `ns/a/ns/b` for namespace `a/b`."""
    _check(ns, BackupNamespace, "namespace")
    return "/".join(ns.path_parts())


def namespace_children_key(ns: BackupNamespace) -> str:
    """The `ns` directory holding the child namespaces of `ns`."""
    return _join(namespace_key(ns), NAMESPACE_DIR)


def type_key(ns: BackupNamespace, backup_type: BackupType) -> str:
    _check(backup_type, BackupType, "backup type")
    return _join(namespace_key(ns), backup_type.value)


def group_key(ns: BackupNamespace, group: BackupGroup) -> str:
    _check(group, BackupGroup, "backup group")
    return _join(type_key(ns, group.type), group.id)


def group_file_key(ns: BackupNamespace, group: BackupGroup, name: str) -> str:
    """`owner` or `notes` of a group."""
    if name not in (OWNER_FILE, NOTES_FILE):
        raise InvalidName(f"group file name {name!r} is not one of owner, notes")
    return _join(group_key(ns, group), name)


def snapshot_key(ns: BackupNamespace, snapshot: BackupDir) -> str:
    _check(snapshot, BackupDir, "snapshot")
    return _join(group_key(ns, snapshot.group), snapshot.time_string)


def index_tmp_name(name: str) -> str:
    """The temp name of an index while it is written (§1.2): `disk.img.fidx` ->
    `disk.img.tmp_fidx`, i.e. the extension replaced as Rust's `set_extension` does."""
    validate_archive_name(name)
    for ext, tmp_ext in _INDEX_TMP_EXTENSIONS.items():
        if name.endswith(ext):
            return name[: -len(ext)] + tmp_ext
    raise InvalidName(f"archive {name!r} is not an index (.fidx or .didx)")


def validate_snapshot_file_name(name: str) -> str:
    """An archive name (SAFE_ID ending in .fidx/.didx/.blob) or the `.protected` marker."""
    if name == PROTECTED_MARKER:
        return name
    return validate_archive_name(name)


def file_key(ns: BackupNamespace, snapshot: BackupDir, filename: str) -> str:
    """A file inside a snapshot directory; `filename` is validated, never a path."""
    return _join(snapshot_key(ns, snapshot), validate_snapshot_file_name(filename))


def index_kind(name: str) -> str:
    """'fidx', 'didx' or 'blob' by extension (the name must be a valid archive name)."""
    validate_archive_name(name)
    return name.rsplit(".", 1)[1]
