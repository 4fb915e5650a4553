"""Backup types, ids, snapshot times, groups and snapshots (spec sections 1.2 and 2)."""

from __future__ import annotations

import calendar
import enum
import re
import time
from dataclasses import dataclass

from chunkyard.errors import InvalidName
from chunkyard.names.patterns import BACKUP_ID_RE, BACKUP_TIME_RE, SAFE_ID_RE


class BackupType(enum.Enum):
    """vm, ct or host; sorted ct < host < vm as PBS does."""

    CT = "ct"
    HOST = "host"
    VM = "vm"

    @classmethod
    def parse(cls, text: str) -> BackupType:
        try:
            return cls(text)
        except ValueError:
            raise InvalidName(
                f"backup type {text!r} is invalid: expected one of vm, ct, host"
            ) from None

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, BackupType):
            return NotImplemented
        return self.value < other.value

    def __str__(self) -> str:
        return self.value


def validate_backup_id(backup_id: str) -> str:
    if not isinstance(backup_id, str) or not BACKUP_ID_RE.match(backup_id):
        raise InvalidName(
            f"backup id {backup_id!r} is invalid: use letters, digits, '_', '.', '-' "
            "and do not start with '.' or '-'"
        )
    return backup_id


def epoch_to_rfc3339(epoch: int) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` of a Unix time (UTC); years outside 0..9999 are an error."""
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise InvalidName(f"backup time {epoch!r} is not an integer epoch")
    try:
        tm = time.gmtime(epoch)
    except (OverflowError, OSError, ValueError):
        raise InvalidName(f"backup time {epoch} is out of range") from None
    if not 0 <= tm.tm_year <= 9999:
        raise InvalidName(f"backup time {epoch} is out of range (year {tm.tm_year})")
    return (
        f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
        f"T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}Z"
    )


_RFC3339_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)


def parse_rfc3339(text: str) -> int:
    """Parse `YYYY-MM-DDTHH:MM:SS` with `Z` or `±HH:MM` to an epoch, as proxmox_time does."""
    m = _RFC3339_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise InvalidName(f"time {text!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59
            and second <= 60):
        raise InvalidName(f"time {text!r} has a field out of range")
    epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    tz = m.group(7)
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        epoch -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return epoch


def parse_backup_time_dir(text: str) -> int:
    """A snapshot directory name: exactly the `Z` form."""
    if not isinstance(text, str) or not BACKUP_TIME_RE.match(text):
        raise InvalidName(f"backup time {text!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    return parse_rfc3339(text)


@dataclass(frozen=True, order=True, slots=True)
class BackupGroup:
    """`type/id`, e.g. `vm/100`; ordered by type, then id."""

    type: BackupType
    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.type, BackupType):
            raise InvalidName(f"backup type {self.type!r} is invalid")
        validate_backup_id(self.id)

    @classmethod
    def parse(cls, text: str) -> BackupGroup:
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 2:
            raise InvalidName(f"backup group {text!r} is not of the form <type>/<id>")
        return cls(BackupType.parse(parts[0]), parts[1])

    def __str__(self) -> str:
        return f"{self.type.value}/{self.id}"


@dataclass(frozen=True, order=True, slots=True)
class BackupDir:
    """A snapshot: `type/id/YYYY-MM-DDTHH:MM:SSZ`; `time` is the epoch."""

    group: BackupGroup
    time: int

    def __post_init__(self) -> None:
        if not isinstance(self.time, int) or isinstance(self.time, bool) or self.time < 1:
            raise InvalidName(f"backup time {self.time!r} must be an epoch of at least 1")
        epoch_to_rfc3339(self.time)

    @classmethod
    def parse(cls, text: str) -> BackupDir:
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 3:
            raise InvalidName(
                f"snapshot {text!r} is not of the form <type>/<id>/<YYYY-MM-DDTHH:MM:SSZ>"
            )
        group = BackupGroup(BackupType.parse(parts[0]), parts[1])
        return cls(group, parse_backup_time_dir(parts[2]))

    @property
    def time_string(self) -> str:
        return epoch_to_rfc3339(self.time)

    def __str__(self) -> str:
        return f"{self.group}/{self.time_string}"


_SERVER_EXTENSIONS = (".fidx", ".didx", ".blob")
_CLIENT_EXTENSION_MAP = {
    "pxar": ".didx", "mpxar": ".didx", "ppxar": ".didx", "pcat1": ".didx", "tar": ".didx",
    "img": ".fidx",
    "conf": ".blob", "json": ".blob", "key": ".blob", "log": ".blob",
}


def validate_archive_name(name: str) -> str:
    """A stored archive name: SAFE_ID ending in .fidx, .didx or .blob."""
    if not isinstance(name, str) or not SAFE_ID_RE.match(name) or len(name) > 255:
        raise InvalidName(f"archive name {name!r} is invalid")
    if not name.endswith(_SERVER_EXTENSIONS):
        raise InvalidName(f"archive name {name!r} must end in .fidx, .didx or .blob")
    return name


def archive_kind(name: str) -> str:
    """Map a client archive name (`root.tar`, `disk.img`, `vm.conf`) to its stored name."""
    if not isinstance(name, str) or not SAFE_ID_RE.match(name):
        raise InvalidName(f"archive name {name!r} is invalid")
    if name.endswith(_SERVER_EXTENSIONS):
        return validate_archive_name(name)
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in _CLIENT_EXTENSION_MAP:
        raise InvalidName(
            f"archive name {name!r} has no known extension "
            f"({', '.join(sorted(_CLIENT_EXTENSION_MAP))})"
        )
    return validate_archive_name(name + _CLIENT_EXTENSION_MAP[ext])
