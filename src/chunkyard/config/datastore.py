"""`datastore.cfg`: one `datastore: <name>` section per store (spec §1.6, PBS `DataStoreConfig`).

Keys chunkyard does not support are refused rather than ignored, so a store is never run
with a setting silently dropped: `backend` accepts only `type=filesystem` (no S3), and the
removable-datastore and S3 keys (`backing-device`, `notification-thresholds`,
`counter-reset-schedule`) are unknown properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chunkyard.config.errors import ConfigError
from chunkyard.config.property_string import PropertyStringType
from chunkyard.config.property_string import effective as ps_effective
from chunkyard.config.section import Section, SectionConfig, SectionSchema, SectionType
from chunkyard.config.types import (
    ABSOLUTE_PATH,
    CALENDAR_EVENT,
    COMMENT,
    STORE_NAME,
    USERID,
    BoolType,
    EnumType,
    IntType,
    Prop,
    StrType,
    Value,
)

FILENAME = "datastore.cfg"

TUNING = PropertyStringType({
    "chunk-order": Prop(EnumType(("none", "inode")), "order to read chunks in (GC, verify)",
                        default="inode"),
    "sync-level": Prop(EnumType(("none", "file", "filesystem")),
                       "how finished backups are made durable", default="filesystem"),
    "gc-atime-safety-check": Prop(BoolType(), "check that atime updates work before GC",
                                  default=True),
    "gc-atime-cutoff": Prop(IntType(1, 2880), "minutes a chunk's atime must be older than "
                            "the GC start to be removed", default=1445),
    "gc-cache-capacity": Prop(IntType(0, 8 * 1024 * 1024), "GC's LRU of recently marked "
                              "chunks (0 disables it)", default=1024 * 1024),
    "default-verification-workers": Prop(IntType(1, 32), "verify threads"),
    "default-verification-readers": Prop(IntType(1, 32), "verify reader threads"),
}, what="datastore tuning options")

MAINTENANCE_TYPES = ("read-only", "offline", "delete", "unmount", "s3-refresh")
MAINTENANCE_MODE = PropertyStringType({
    "type": Prop(EnumType(MAINTENANCE_TYPES), "the kind of maintenance", required=True),
    "message": Prop(StrType(what="maintenance message"), "shown to clients (percent-encoded)"),
}, default_key="type", what="maintenance mode")

BACKEND = PropertyStringType({
    "type": Prop(EnumType(("filesystem",), hint="chunkyard supports filesystem datastores "
                          "only"), "storage backend", default="filesystem"),
}, what="datastore backend")

_NOTIFY_WHEN = EnumType(("always", "error", "never"))
NOTIFY = PropertyStringType({
    "gc": Prop(_NOTIFY_WHEN, "garbage collection"),
    "verify": Prop(_NOTIFY_WHEN, "verification"),
    "sync": Prop(_NOTIFY_WHEN, "sync jobs"),
    "prune": Prop(_NOTIFY_WHEN, "prune jobs"),
}, what="notification settings")

_KEEP = {f"keep-{k}": Prop(IntType(minimum=1), f"legacy prune setting: {k} backups to keep")
         for k in ("last", "hourly", "daily", "weekly", "monthly", "yearly")}

PROPERTIES: dict[str, Prop] = {
    "path": Prop(ABSOLUTE_PATH, "the datastore's directory", required=True),
    "comment": Prop(COMMENT, "comment"),
    "gc-schedule": Prop(CALENDAR_EVENT, "when garbage collection runs"),
    "gc-on-unmount": Prop(BoolType(), "run GC when a removable datastore is unmounted"),
    "prune-schedule": Prop(CALENDAR_EVENT, "legacy: when prune runs"),
    **_KEEP,
    "verify-new": Prop(BoolType(), "verify each new snapshot after it finished"),
    "notify-user": Prop(USERID, "user to notify (legacy-sendmail)"),
    "notify": Prop(NOTIFY, "when to notify"),
    "notification-mode": Prop(EnumType(("legacy-sendmail", "notification-system")),
                              "how notifications are sent", default="legacy-sendmail"),
    "tuning": Prop(TUNING, "tuning options"),
    "maintenance-mode": Prop(MAINTENANCE_MODE, "maintenance mode"),
    "backend": Prop(BACKEND, "storage backend"),
}

DATASTORE = SectionType("datastore", STORE_NAME, PROPERTIES, "a datastore")
SCHEMA = SectionSchema(FILENAME, {"datastore": DATASTORE})


@dataclass(frozen=True)
class Tuning:
    """The tuning options with PBS's defaults filled in."""

    chunk_order: str
    sync_level: str
    gc_atime_safety_check: bool
    gc_atime_cutoff: int
    gc_cache_capacity: int
    default_verification_workers: int | None
    default_verification_readers: int | None


def _props(section: Section, key: str) -> Mapping[str, Value] | None:
    value = section.props.get(key)
    return value if isinstance(value, dict) else None


def _typed(value: Value | None, kind: type[int] | type[str] | type[bool], key: str
           ) -> int | str | bool | None:
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{FILENAME}: tuning option '{key}' has a value of the wrong type")
    return value


def tuning(section: Section) -> Tuning:
    """`section`'s tuning options, defaults where unset."""
    values = _props(section, "tuning")

    def get_int(key: str) -> int | None:
        value = _typed(ps_effective(values, TUNING.schema, key), int, key)
        return value if isinstance(value, int) else None

    def get_str(key: str) -> str:
        return str(_typed(ps_effective(values, TUNING.schema, key), str, key))

    cutoff, capacity = get_int("gc-atime-cutoff"), get_int("gc-cache-capacity")
    assert cutoff is not None and capacity is not None  # both have defaults
    return Tuning(
        chunk_order=get_str("chunk-order"),
        sync_level=get_str("sync-level"),
        gc_atime_safety_check=bool(_typed(ps_effective(values, TUNING.schema,
                                                       "gc-atime-safety-check"), bool,
                                          "gc-atime-safety-check")),
        gc_atime_cutoff=cutoff,
        gc_cache_capacity=capacity,
        default_verification_workers=get_int("default-verification-workers"),
        default_verification_readers=get_int("default-verification-readers"),
    )


def maintenance(section: Section) -> tuple[str, str | None] | None:
    """`(type, message)` if the store is in maintenance mode, else None."""
    values = _props(section, "maintenance-mode")
    if not values:
        return None
    message = values.get("message")
    return str(values["type"]), str(message) if message is not None else None


def datastore(config: SectionConfig, name: str) -> Section:
    """The section of store `name`; ConfigError (PBS's words) if there is none."""
    return config.lookup("datastore", name)


def new_datastore(name: str, path: str, **props: Value) -> Section:
    """A section for a new store; keys in kebab-case (`gc_schedule` becomes `gc-schedule`)."""
    values: dict[str, Value] = {"path": path}
    values.update({k.replace("_", "-"): v for k, v in props.items()})
    return Section("datastore", name, values)
