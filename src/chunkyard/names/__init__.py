"""Names and types of the PBS data model (spec section 2): pure values, no I/O."""

from chunkyard.names.authid import Authid
from chunkyard.names.backup import (
    BackupDir,
    BackupGroup,
    BackupType,
    archive_kind,
    epoch_to_rfc3339,
    parse_rfc3339,
    validate_archive_name,
    validate_backup_id,
)
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH, MAX_NAMESPACE_LENGTH, BackupNamespace
from chunkyard.names.upid import Upid

__all__ = [
    "MAX_NAMESPACE_DEPTH",
    "MAX_NAMESPACE_LENGTH",
    "Authid",
    "BackupDir",
    "BackupGroup",
    "BackupNamespace",
    "BackupType",
    "Upid",
    "archive_kind",
    "epoch_to_rfc3339",
    "parse_rfc3339",
    "validate_archive_name",
    "validate_backup_id",
]
