"""Which snapshots of one group a prune keeps: PBS's `compute_prune_info` (spec §9.1, §9.2).

Pure: it takes a group's listing and the keep options and returns one decision per snapshot,
oldest first; nothing here touches a datastore.

- Rules run in the fixed order last, hourly, daily, weekly, monthly, yearly. Each keeps the
  newest snapshot of each of its first N buckets (buckets without snapshots do not count) and
  marks older snapshots of a bucket it kept `remove`, so later rules skip them. A snapshot
  in a bucket an earlier rule already kept is left for later rules.
- Buckets are computed in the host's local time zone (`time.localtime`, i.e. `TZ` or
  `/etc/localtime`, as PBS's `strftime_local`); weeks are ISO 8601 weeks (Monday start, the
  ISO week-based year, so Dec 29 can belong to the next year's week 1).
- The newest snapshot, if unfinished (no manifest), is kept as `keep-partial`; every other
  unfinished snapshot is removed.
- Protected snapshots are always kept and never use up a rule's slot.
- With no option set the mode is "keep all": every decision keeps, whatever its mark.
"""

from __future__ import annotations

import datetime
import enum
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from chunkyard.datastore.datastore import SnapshotInfo
from chunkyard.errors import ChunkyardError


class InvalidKeepOption(ChunkyardError, ValueError):
    """A keep option is not an integer of at least 1."""


class PruneMark(enum.StrEnum):
    """PBS's `PruneMark`, with its display names."""

    PROTECTED = "protected"
    KEEP = "keep"
    KEEP_PARTIAL = "keep-partial"
    REMOVE = "remove"

    @property
    def keep(self) -> bool:
        return self is not PruneMark.REMOVE


# The rules in PBS's order, with their option names.
RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True, slots=True)
class KeepOptions:
    """PBS's `KeepOptions`: each count is None (not set) or an integer >= 1."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None

    def __post_init__(self) -> None:
        for rule in RULES:
            value = getattr(self, rule)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidKeepOption(
                    f"keep-{rule} must be an integer of at least 1, not {value!r}")

    @property
    def keeps_something(self) -> bool:
        """False means "keep all" (PBS: `keeps_something`)."""
        return bool(self.counts())

    def counts(self) -> list[tuple[str, int]]:
        """The set rules in PBS's order, with their counts."""
        return [(rule, n) for rule in RULES if (n := getattr(self, rule)) is not None]

    def as_dict(self) -> dict[str, int]:
        """The set options under PBS's API names (`keep-last`, ...)."""
        return {f"keep-{rule}": n for rule, n in self.counts()}

    def describe(self) -> str:
        """As PBS's `cli_options_string`: `--keep-last 3 --keep-daily 7`."""
        return " ".join(f"--keep-{rule} {n}" for rule, n in self.counts())


@dataclass(frozen=True, slots=True)
class PruneDecision:
    """One snapshot's verdict: its mark, and whether it stays (`keep`, true for every
    snapshot in "keep all" mode)."""

    info: SnapshotInfo
    mark: PruneMark
    keep: bool

    @property
    def protected(self) -> bool:
        return self.mark is PruneMark.PROTECTED


def _iso_week(t: time.struct_time) -> Hashable:
    iso = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
    return (iso.year, iso.week)


# Bucket keys per rule, from the local broken-down time (`last`: the snapshot itself).
_BUCKET: dict[str, Callable[[time.struct_time], Hashable]] = {
    "hourly": lambda t: (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour),
    "daily": lambda t: (t.tm_year, t.tm_mon, t.tm_mday),
    "weekly": _iso_week,
    "monthly": lambda t: (t.tm_year, t.tm_mon),
    "yearly": lambda t: t.tm_year,
}


def compute_prune_info(snapshots: Iterable[SnapshotInfo],
                       options: KeepOptions) -> list[tuple[SnapshotInfo, PruneMark]]:
    """PBS's `compute_prune_info`: a mark for every snapshot of one group, oldest first.

    It does not apply "keep all" (PBS leaves that to its callers): see `select`.
    """
    newest_first = sorted(snapshots, key=lambda s: s.dir.time, reverse=True)
    marks: dict[int, PruneMark] = {}  # index into newest_first
    _mark_unfinished(newest_first, marks)
    counts = options.counts()
    if counts:
        local = [time.localtime(s.dir.time) for s in newest_first]
        for rule, count in counts:
            if rule == "last":
                keys: list[Hashable] = [s.dir.time for s in newest_first]
            else:
                bucket = _BUCKET[rule]
                keys = [bucket(t) for t in local]
            _mark_rule(newest_first, keys, count, marks)
    result = [(s, PruneMark.PROTECTED if s.protected else marks.get(i, PruneMark.REMOVE))
              for i, s in enumerate(newest_first)]
    result.reverse()
    return result


def select(snapshots: Iterable[SnapshotInfo], options: KeepOptions) -> list[PruneDecision]:
    """The decisions for one group, oldest first (the order PBS removes and reports in)."""
    keep_all = not options.keeps_something
    return [PruneDecision(info, mark, keep_all or mark.keep)
            for info, mark in compute_prune_info(snapshots, options)]


def _mark_unfinished(newest_first: list[SnapshotInfo], marks: dict[int, PruneMark]) -> None:
    """Only the newest snapshot overall may stay unfinished (`keep-partial`)."""
    for i, info in enumerate(newest_first):
        if not info.finished:
            marks[i] = PruneMark.KEEP_PARTIAL if i == 0 else PruneMark.REMOVE


def _mark_rule(newest_first: list[SnapshotInfo], keys: list[Hashable], count: int,
               marks: dict[int, PruneMark]) -> None:
    """One rule (PBS's `mark_selections`): keep the newest snapshot of each of the first
    `count` buckets not kept by an earlier rule; older ones in a bucket it keeps go."""
    already = {keys[i] for i, mark in marks.items() if mark is PruneMark.KEEP}
    taken: set[Hashable] = set()
    for i, info in enumerate(newest_first):
        if i in marks:
            continue
        if info.protected:
            marks[i] = PruneMark.PROTECTED
            continue
        key = keys[i]
        if key in already:
            continue
        if key in taken:
            marks[i] = PruneMark.REMOVE
        elif len(taken) >= count:
            break
        else:
            taken.add(key)
            marks[i] = PruneMark.KEEP
