"""Parameter schemas shared by the endpoints (PBS's `*_SCHEMA` constants in pbs-api-types)."""

from __future__ import annotations

import re

from chunkyard.names import BackupGroup, BackupNamespace, BackupType, validate_backup_id
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH
from chunkyard.names.patterns import SAFE_ID
from chunkyard.server.params import Param

SAFE_ID_RE = re.compile(SAFE_ID)
NODE_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?")

STORE = Param(optional=False, pattern=SAFE_ID_RE, min_length=3, max_length=32)
NODE = Param(optional=False, pattern=NODE_RE, max_length=64)
NS = Param(check=BackupNamespace.parse, default=BackupNamespace.root(), max_length=256)
NS_REQUIRED = Param(optional=False, check=BackupNamespace.parse, max_length=256)
BACKUP_TYPE = Param(optional=False, check=BackupType.parse)
BACKUP_ID = Param(optional=False, check=validate_backup_id, max_length=128)
BACKUP_TIME = Param("integer", optional=False, minimum=1)
MAX_DEPTH = Param("integer", minimum=0, maximum=MAX_NAMESPACE_DEPTH)


def bool_param(default: bool) -> Param:
    return Param("boolean", default=default)


def group_of(params: dict[str, object]) -> BackupGroup:
    backup_type = params["backup-type"]
    backup_id = params["backup-id"]
    assert isinstance(backup_type, BackupType) and isinstance(backup_id, str)
    return BackupGroup(backup_type, backup_id)


def ns_of(params: dict[str, object], name: str = "ns") -> BackupNamespace:
    ns = params[name]
    assert isinstance(ns, BackupNamespace)
    return ns


__all__ = ["BACKUP_ID", "BACKUP_TIME", "BACKUP_TYPE", "MAX_DEPTH", "NODE", "NS",
           "NS_REQUIRED", "STORE", "bool_param", "group_of", "ns_of"]
