"""Lock keys: what a lock protects, its place in the global order, and its lock file name.

A `LockKey` names one lock of the design (`shared/design/locking.md`): NS(n), GW(g), GA(g),
SN(s), MF(s), CS or JR. Its `rank` is a tuple that sorts exactly as rule 3 wants, so the
order checker only compares tuples:

    NS by namespace components  <  GW/GA by (ns, type, id), GW before GA of one group
    <  SN by (ns, type, id, time)  <  MF by (ns, type, id, time)  <  CS  <  JR

Lock files (rule 4) live under `<lock_dir>/ns/<D(n)>/` for everything inside namespace n and
at `<lock_dir>/journal` for JR; CS is a record lock on the datastore's own `<base>/.lock`.
`D(n)` is the namespace components joined by `:` (SAFE_ID never contains `:`; at most 255
bytes because a namespace string is at most 256 characters), `-` for the root (a SAFE_ID never
starts with `-`). Inside `D(n)` the names are

    ns                      NS(n)
    gw-<G>   ga-<G>         GW(g), GA(g)
    sn-<G>-<T>  mf-<G>-<T>  SN(s), MF(s)

where `<G>` is the systemd path escape (spec §7.3) of `type/id` and `<T>` that of the time
string. The escape turns `/` into `-` and every other byte outside `[A-Za-z0-9_.]` into `\\xNN`,
so `<G>` holds exactly one literal `-` and every name is injective and parseable. A `<G>` longer
than `GROUP_PART_LIMIT` is replaced by `#<sha256 hex of it>` (`#` never occurs in an escape),
which keeps every name below 255 bytes and keeps the files of one group under one prefix, so a
group's stale lock files can still be found after hashing.
"""

from __future__ import annotations

import enum
import hashlib

from chunkyard.names import BackupDir, BackupGroup, BackupNamespace, epoch_to_rfc3339
from chunkyard.names.systemd import escape_unit

_ROOT = BackupNamespace()

NAME_MAX = 255
GROUP_PART_LIMIT = 200
ROOT_DIR_NAME = "-"
NAMESPACE_FILE = "ns"
JOURNAL_FILE = "journal"



class Mode(enum.Enum):
    """Shared (readers, workers inside a container) or exclusive (writers, restructuring)."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"

    def covers(self, wanted: Mode) -> bool:
        """True if holding `self` satisfies a request for `wanted` (X covers S)."""
        return self is Mode.EXCLUSIVE or wanted is Mode.SHARED

    def __str__(self) -> str:
        return self.value


class LockKind(enum.IntEnum):
    """The lock classes of the design; the value is the class's place in the global order."""

    NS = 0
    GW = 1
    GA = 2
    SN = 3
    MF = 4
    CS = 5
    JR = 6


# Rank of each kind's class: GW and GA share one class and are told apart inside it.
_CLASS = {
    LockKind.NS: 0, LockKind.GW: 1, LockKind.GA: 1, LockKind.SN: 2,
    LockKind.MF: 3, LockKind.CS: 4, LockKind.JR: 5,
}
_ALLOWED_MODES = {
    LockKind.NS: (Mode.SHARED, Mode.EXCLUSIVE),
    LockKind.GW: (Mode.EXCLUSIVE,),
    LockKind.GA: (Mode.SHARED, Mode.EXCLUSIVE),
    LockKind.SN: (Mode.SHARED, Mode.EXCLUSIVE),
    LockKind.MF: (Mode.EXCLUSIVE,),
    LockKind.CS: (Mode.SHARED, Mode.EXCLUSIVE),
    LockKind.JR: (Mode.EXCLUSIVE,),
}

Rank = tuple[int, tuple[str, ...], str, str, int, int]


def systemd_escape_path(path: str) -> str:
    """`proxmox_systemd::escape_unit(path, is_path=true)` as spec §7.3 describes it."""
    return escape_unit(path.lstrip("/")) or "-"


def namespace_dir_name(ns: BackupNamespace) -> str:
    """`D(n)`: the per-namespace lock directory name."""
    if not ns.components:
        return ROOT_DIR_NAME
    name = ":".join(ns.components)
    if len(name.encode()) > NAME_MAX:  # only reachable by bypassing BackupNamespace.parse
        return "#" + hashlib.sha256(name.encode()).hexdigest()
    return name


def group_part(group: BackupGroup) -> str:
    """`<G>`: the escaped `type/id`, hashed when it would make a name too long."""
    enc = systemd_escape_path(f"{group.type.value}/{group.id}")
    if len(enc) > GROUP_PART_LIMIT:
        return "#" + hashlib.sha256(enc.encode()).hexdigest()
    return enc


def describe_namespace(ns: BackupNamespace) -> str:
    return f"namespace '{ns}'" if ns.components else "the root namespace"


def _where(ns: BackupNamespace) -> str:
    return f"in '{ns}'" if ns.components else "in the root namespace"


class LockKey:
    """One lock: kind plus the namespace, group and snapshot time it applies to.

    Immutable. Build keys with the class methods; `rank` orders keys as rule 3 demands and
    identifies the key (equality and hash use it, computed once: keys are looked up on every
    acquisition, so this is hot-path code).
    """

    __slots__ = ("_hash", "group", "kind", "ns", "rank", "time")

    kind: LockKind
    ns: BackupNamespace
    group: BackupGroup | None
    time: int | None
    rank: Rank
    _hash: int

    def __init__(self, kind: LockKind, ns: BackupNamespace = _ROOT,
                 group: BackupGroup | None = None, time: int | None = None) -> None:
        comps = ns.components
        if kind is LockKind.NS:
            rank: Rank = (0, comps, "", "", 0, 0)
        elif kind is LockKind.GW or kind is LockKind.GA:
            if group is None:
                raise ValueError(f"a {kind.name} lock key needs a group")
            rank = (1, comps, group.type._value_, group.id, 0 if kind is LockKind.GW else 1, 0)
        elif kind is LockKind.SN or kind is LockKind.MF:
            if group is None or time is None:
                raise ValueError(f"a {kind.name} lock key needs a group and a time")
            rank = (_CLASS[kind], comps, group.type._value_, group.id, 0, time)
        else:
            rank = (_CLASS[kind], (), "", "", 0, 0)
        init = object.__setattr__
        init(self, "kind", kind)
        init(self, "ns", ns)
        init(self, "group", group)
        init(self, "time", time)
        init(self, "rank", rank)
        init(self, "_hash", hash(rank))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LockKey is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LockKey):
            return NotImplemented
        return self.rank == other.rank

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[LockKey], tuple[object, ...]]:
        return (LockKey, (self.kind, self.ns, self.group, self.time))

    def __repr__(self) -> str:
        return f"LockKey({self.kind.name}: {self.describe()})"

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def namespace(cls, ns: BackupNamespace) -> LockKey:
        return cls(LockKind.NS, ns)

    @classmethod
    def group_writer(cls, ns: BackupNamespace, group: BackupGroup) -> LockKey:
        return cls(LockKind.GW, ns, group)

    @classmethod
    def group_access(cls, ns: BackupNamespace, group: BackupGroup) -> LockKey:
        return cls(LockKind.GA, ns, group)

    @classmethod
    def snapshot(cls, ns: BackupNamespace, snap: BackupDir) -> LockKey:
        return cls(LockKind.SN, ns, snap.group, snap.time)

    @classmethod
    def manifest(cls, ns: BackupNamespace, snap: BackupDir) -> LockKey:
        return cls(LockKind.MF, ns, snap.group, snap.time)

    @classmethod
    def chunk_store(cls) -> LockKey:
        return cls(LockKind.CS)

    @classmethod
    def journal(cls) -> LockKey:
        return cls(LockKind.JR)

    # -- derived ------------------------------------------------------------------------
    def allows(self, mode: Mode) -> bool:
        return mode in _ALLOWED_MODES[self.kind]

    def snapshot_dir(self) -> BackupDir:
        assert self.group is not None and self.time is not None
        return BackupDir(self.group, self.time)

    def containers(self) -> list[LockKey]:
        """The implicit container locks (rule 1), outermost first; each is taken in S."""
        if self.kind in (LockKind.GW, LockKind.GA):
            return [LockKey(LockKind.NS, self.ns)]
        if self.kind in (LockKind.SN, LockKind.MF):
            return [LockKey(LockKind.NS, self.ns), LockKey(LockKind.GA, self.ns, self.group)]
        return []

    def file_parts(self) -> tuple[str | None, str]:
        """(`D(n)` or None for a top-level file, file name); CS has no lock-dir file."""
        kind = self.kind
        if kind is LockKind.NS:
            return namespace_dir_name(self.ns), NAMESPACE_FILE
        if kind is LockKind.JR:
            return None, JOURNAL_FILE
        if kind is LockKind.CS:
            raise ValueError("the chunk store lock is not a file in the lock directory")
        assert self.group is not None
        gp = group_part(self.group)
        if kind is LockKind.GW:
            name = "gw-" + gp
        elif kind is LockKind.GA:
            name = "ga-" + gp
        else:
            assert self.time is not None
            enc_time = systemd_escape_path(epoch_to_rfc3339(self.time))
            name = ("sn-" if kind is LockKind.SN else "mf-") + gp + "-" + enc_time
        return namespace_dir_name(self.ns), name

    def describe(self) -> str:
        """For messages: `namespace 'a/b'`, `group host/x in 'a'`, ..."""
        kind = self.kind
        if kind is LockKind.NS:
            return describe_namespace(self.ns)
        if kind is LockKind.GW:
            return f"group {self.group} (writer lock) {_where(self.ns)}"
        if kind is LockKind.GA:
            return f"group {self.group} {_where(self.ns)}"
        if kind is LockKind.SN:
            return f"snapshot {self.snapshot_dir()} {_where(self.ns)}"
        if kind is LockKind.MF:
            return f"manifest of snapshot {self.snapshot_dir()} {_where(self.ns)}"
        if kind is LockKind.CS:
            return "chunk store"
        return "move journal"

    def __str__(self) -> str:
        return self.describe()
