"""A move as data: the steps that change the tree, the locks they need, what to report.

A plan is built under its locks (`planner`), written to the intent log as JSON before the
first step runs (`intents`), and executed step by step (`executor`). Every step is idempotent
against the tree it finds, so an interrupted plan is completed by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chunkyard.datastore.locking import LockKey, LockKind, Mode
from chunkyard.errors import FormatError, InvalidName
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace

# The step operations, in the words of the intent log.
MKDIR_NS = "mkdir-ns"               # dst: create the namespace directory if absent
RENAME_NS = "rename-ns"             # src -> dst: one rename(2) of a namespace directory
RENAME_GROUP = "rename-group"       # src -> dst, group: one rename(2) of a group directory
RENAME_SNAPSHOT = "rename-snapshot"  # src -> dst, snapshot: merge one snapshot
MERGE_NOTES = "merge-notes"         # src -> dst, group: PBS's notes rule for merges
REMOVE_GROUP = "remove-group"       # src, group: remove an emptied source group
REMOVE_NS = "remove-ns"             # src: remove an emptied source namespace
_NEEDED = {MKDIR_NS: ("dst",), RENAME_NS: ("src", "dst"), RENAME_GROUP: ("src", "dst", "group"),
           RENAME_SNAPSHOT: ("src", "dst", "snapshot"), MERGE_NOTES: ("src", "dst", "group"),
           REMOVE_GROUP: ("src", "group"), REMOVE_NS: ("src",)}
OPS = (MKDIR_NS, RENAME_NS, RENAME_GROUP, RENAME_SNAPSHOT, MERGE_NOTES, REMOVE_GROUP, REMOVE_NS)


@dataclass(frozen=True, slots=True)
class Step:
    op: str
    src: BackupNamespace | None = None
    dst: BackupNamespace | None = None
    group: BackupGroup | None = None
    snapshot: BackupDir | None = None

    def to_json(self) -> dict[str, str]:
        out = {"op": self.op}
        if self.src is not None:
            out["src"] = str(self.src)
        if self.dst is not None:
            out["dst"] = str(self.dst)
        if self.group is not None:
            out["group"] = str(self.group)
        if self.snapshot is not None:
            out["snapshot"] = str(self.snapshot)
        return out

    @classmethod
    def from_json(cls, raw: object) -> Step:
        """Parse and validate one step of an intent log; FormatError if it is malformed."""
        if not isinstance(raw, dict) or raw.get("op") not in OPS:
            raise FormatError(f"not a move step: {raw!r:.120}")
        try:
            step = cls(
                raw["op"],
                _opt(raw, "src", BackupNamespace.parse),
                _opt(raw, "dst", BackupNamespace.parse),
                _opt(raw, "group", BackupGroup.parse),
                _opt(raw, "snapshot", BackupDir.parse),
            )
        except InvalidName as e:
            raise FormatError(f"move step {raw!r:.120}: {e}") from None
        needed = _NEEDED[step.op]
        if any(getattr(step, name) is None for name in needed):
            raise FormatError(f"move step {raw!r:.120} lacks one of {', '.join(needed)}")
        return step

    def destination(self) -> tuple[BackupNamespace, BackupGroup | None, BackupDir | None] | None:
        """Where a rename puts data (what GC's journal must name), None for other steps."""
        if self.op == RENAME_NS:
            assert self.dst is not None
            return (self.dst, None, None)
        if self.op == RENAME_GROUP:
            assert self.dst is not None
            return (self.dst, self.group, None)
        if self.op == RENAME_SNAPSHOT:
            assert self.dst is not None
            return (self.dst, None, self.snapshot)
        return None


def _opt(raw: dict[str, Any], name: str, parse: Any) -> Any:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidName(f"{name} must be a string")
    return parse(value)


def lock_to_json(key: LockKey, mode: Mode) -> dict[str, str]:
    out = {"kind": key.kind.name, "ns": str(key.ns), "mode": "X" if mode is Mode.EXCLUSIVE else "S"}
    if key.group is not None:
        out["group"] = str(key.group)
    return out


def lock_from_json(raw: object) -> tuple[LockKey, Mode]:
    """Only the kinds a move takes (NS, GW, GA) are accepted."""
    if not isinstance(raw, dict) or raw.get("mode") not in ("S", "X"):
        raise FormatError(f"not a lock of a move: {raw!r:.120}")
    mode = Mode.EXCLUSIVE if raw["mode"] == "X" else Mode.SHARED
    try:
        ns = BackupNamespace.parse(raw.get("ns", ""))
        kind = raw.get("kind")
        if kind == "NS":
            return LockKey.namespace(ns), mode
        group = BackupGroup.parse(raw.get("group", ""))
        if kind == LockKind.GW.name:
            return LockKey.group_writer(ns, group), mode
        if kind == LockKind.GA.name:
            return LockKey.group_access(ns, group), mode
    except (InvalidName, TypeError) as e:
        raise FormatError(f"lock {raw!r:.120}: {e}") from None
    raise FormatError(f"not a lock of a move: {raw!r:.120}")


@dataclass
class GroupPlan:
    """What happens to one source group (for the report and `--dry-run`)."""

    ns: BackupNamespace
    group: BackupGroup
    target_ns: BackupNamespace
    action: str            # "rename" | "merge" | "conflict"
    snapshots: int | None  # None: not counted (a namespace renamed whole)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ns": str(self.ns), "backup-type": self.group.type.value,
                               "backup-id": self.group.id, "target-ns": str(self.target_ns),
                               "action": self.action}
        if self.snapshots is not None:
            out["snapshots"] = self.snapshots
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class MovePlan:
    """Everything a move will do; `conflicts` non-empty means it must not run."""

    kind: str                       # "group" | "namespace"
    source: BackupNamespace
    target: BackupNamespace
    group: BackupGroup | None = None
    steps: list[Step] = field(default_factory=list)
    locks: list[tuple[LockKey, Mode]] = field(default_factory=list)
    # namespaces whose lock files go once the move is done (those that no longer exist)
    moved_namespaces: list[BackupNamespace] = field(default_factory=list)
    # groups moved out of namespaces that stay: their lock files go
    moved_groups: list[tuple[BackupNamespace, BackupGroup]] = field(default_factory=list)
    # (source, target) of every namespace moved, for the reference hooks
    namespace_map: list[tuple[BackupNamespace, BackupNamespace]] = field(default_factory=list)
    # for the report
    namespaces: list[dict[str, str]] = field(default_factory=list)
    groups: list[GroupPlan] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # what the reference hooks logged

    def describe(self) -> str:
        if self.kind == "group":
            return (f"group {self.group} from '{self.source.display()}' "
                    f"to '{self.target.display()}'")
        return f"namespace '{self.source}' to '{self.target}'"

    @property
    def method(self) -> str:
        """'rename' when the plan is renames only (no snapshot is merged), else 'merge'."""
        return "merge" if any(s.op == RENAME_SNAPSHOT for s in self.steps) or any(
            g.action == "merge" for g in self.groups) else "rename"

    def to_intent(self) -> dict[str, Any]:
        return {
            "version": 1, "kind": self.kind, "source": str(self.source),
            "target": str(self.target),
            "group": None if self.group is None else str(self.group),
            "steps": [s.to_json() for s in self.steps],
            "locks": [lock_to_json(k, m) for k, m in self.locks],
            "moved-namespaces": [str(n) for n in self.moved_namespaces],
            "moved-groups": [[str(n), str(g)] for n, g in self.moved_groups],
            "namespace-map": [[str(a), str(b)] for a, b in self.namespace_map],
        }

    @classmethod
    def from_intent(cls, raw: object) -> MovePlan:
        """Parse and validate an intent log; FormatError if anything is off."""
        if not isinstance(raw, dict) or raw.get("version") != 1 or raw.get("kind") not in (
            "group", "namespace"
        ):
            raise FormatError("not a move intent (version 1)")
        try:
            plan = cls(raw["kind"], BackupNamespace.parse(raw["source"]),
                       BackupNamespace.parse(raw["target"]),
                       None if raw.get("group") is None else BackupGroup.parse(raw["group"]))
            plan.steps = [Step.from_json(s) for s in _list(raw, "steps")]
            plan.locks = [lock_from_json(x) for x in _list(raw, "locks")]
            plan.moved_namespaces = [BackupNamespace.parse(n)
                                     for n in _list(raw, "moved-namespaces")]
            plan.moved_groups = [(BackupNamespace.parse(n), BackupGroup.parse(g))
                                 for n, g in _list(raw, "moved-groups")]
            plan.namespace_map = [(BackupNamespace.parse(a), BackupNamespace.parse(b))
                                  for a, b in _list(raw, "namespace-map")]
        except (KeyError, TypeError, ValueError, InvalidName) as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"move intent is malformed: {e}") from None
        if not plan.locks:
            raise FormatError("move intent names no locks")
        return plan

    def report(self, *, dry_run: bool, busy: str | None = None) -> dict[str, Any]:
        """The result in the shape `--output-format json` prints."""
        moving = [g for g in self.groups if g.action != "conflict"]
        # A namespace renamed whole is not read by a real move, so its groups go uncounted.
        counted = dry_run or not any(n["action"] == "rename" for n in self.namespaces)
        out: dict[str, Any] = {
            "kind": self.kind, "ns": str(self.source), "target-ns": str(self.target),
            "dry-run": dry_run, "method": self.method,
            "namespaces": self.namespaces, "groups": [g.to_json() for g in self.groups],
            "moved-groups": len(moving) if counted else None,
            "moved-snapshots": sum(g.snapshots or 0 for g in moving) if counted else None,
            "conflicts": self.conflicts,
            "warnings": self.warnings, "references": self.references,
        }
        if self.group is not None:
            out["backup-type"] = self.group.type.value
            out["backup-id"] = self.group.id
        if busy is not None:
            out["busy"] = busy
        return out


def _list(raw: dict[str, Any], name: str) -> list[Any]:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise FormatError(f"move intent: {name} is not a list")
    return value
