"""Prune (spec §9): PBS's selection, checked three ways, and its execution on a real datastore.

1. PBS's own examples (the cases of upstream `tests/prune.rs`, as data) and examples derived
   from the words of spec §9 and PBS's maintenance docs: unfinished snapshots, protected ones,
   "keep all", ISO week-year boundaries, the host's local time zone and a DST fold.
2. Hypothesis: the implementation against `reference_marks` below, a plain transcription of
   spec §9.2 written for this test (string bucket keys from `time.strftime`, including glibc's
   `%G/%V`), in several local time zones (UTC, Europe/Berlin, half-hour and DST-shifting zones).
3. A real datastore: removal under locks (busy snapshots held by real child processes are
   skipped and reported, never waited for), dry run, namespaces and max-depth, and the CLI in
   a subprocess (JSON rows in PBS's shape, one-line errors, the host time zone end to end).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkyard.datastore.datastore import Datastore, SnapshotInfo
from chunkyard.datastore.locking import LockBusy
from chunkyard.datastore.maintenance.prune import (
    KEEP_ALL_WARNING,
    prune_datastore,
    prune_group,
)
from chunkyard.datastore.maintenance.prune_rules import (
    RULES,
    InvalidKeepOption,
    KeepOptions,
    PruneMark,
    compute_prune_info,
    select,
)
from chunkyard.errors import NotFound
from chunkyard.formats.manifest import BackupManifest
from chunkyard.names import BackupDir, BackupGroup, epoch_to_rfc3339
from tests.store_helpers import (
    OWNER,
    ROOT,
    X,
    backup,
    backup_writer,
    holding,
    make_namespaces,
    ns,
    reader_of,
    snapshot_lock_files,
)
from tests.test_cli import CLI, _env

ELSA = BackupGroup.parse("host/elsa")
WEB = BackupGroup.parse("host/web")


def t(text: str) -> int:
    """Epoch of `YYYY-MM-DDTHH:MM:SSZ`."""
    return int(datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=datetime.UTC).timestamp())


@contextlib.contextmanager
def local_zone(name: str) -> Iterator[None]:
    """Run with the process's local time zone set to `name` (TZ + tzset), then restore."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        if name != "UTC":  # glibc silently falls back to UTC for a zone it cannot find
            summer, winter = time.localtime(t("2024-07-01T00:00:00Z")), time.localtime(
                t("2024-01-01T00:00:00Z"))
            if summer.tm_gmtoff == 0 and winter.tm_gmtoff == 0:
                pytest.skip(f"time zone {name} is not installed")
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def info(when: int, finished: bool = True, protected: bool = False,
         group: BackupGroup = ELSA) -> SnapshotInfo:
    return SnapshotInfo(BackupDir(group, when), finished, protected,
                        ["index.json.blob"] if finished else [])


def kept(snapshots: list[SnapshotInfo], **options: int) -> list[str]:
    return [str(d.info.dir) for d in select(snapshots, KeepOptions(**options)) if d.keep]


def removed(snapshots: list[SnapshotInfo], **options: int) -> list[str]:
    return [str(d.info.dir) for d in select(snapshots, KeepOptions(**options)) if not d.keep]


def elsa(*times: str) -> list[str]:
    return [f"host/elsa/{x}" for x in times]


# -- 1. PBS's examples ----------------------------------------------------------------------
# The cases of PBS's tests/prune.rs (upstream), oldest first as PBS reports them. They hold in
# any whole-hour zone; run in UTC and in Berlin.

HOURLY = [info(t(f"2019-11-15T{x}Z")) for x in
          ("09:39:15", "10:49:15", "10:59:15", "11:39:15", "11:49:15", "11:59:15")]
SIMPLE2 = [info(t(f"{d}T11:59:15Z")) for d in
           ("2018-11-15", "2019-11-15", "2019-11-21", "2019-11-22", "2019-11-29", "2019-12-01",
            "2019-12-02", "2019-12-03", "2019-12-04")]
SIMPLE = [info(t(x)) for x in ("2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z",
                               "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z")]
THREE_OLDEST = elsa("2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z")

PBS_CASES: list[tuple[str, list[SnapshotInfo], dict[str, int], str, list[str]]] = [
    ("hourly-3", HOURLY, {"hourly": 3}, "removed",
     elsa("2019-11-15T10:49:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z")),
    ("hourly-2", HOURLY, {"hourly": 2}, "kept",
     elsa("2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z")),
    ("s2-daily", SIMPLE2, {"daily": 1}, "kept", elsa("2019-12-04T11:59:15Z")),
    ("s2-last-daily", SIMPLE2, {"last": 1, "daily": 1}, "kept",
     elsa("2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z")),
    ("s2-daily-weekly", SIMPLE2, {"daily": 1, "weekly": 1}, "kept",
     elsa("2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z")),
    # 2019-11-29 is in the week weekly kept (2019-12-01), so weekly marks it `remove` and
    # monthly cannot take it: monthly keeps 2019-11-22 instead.
    ("s2-daily-weekly-monthly", SIMPLE2, {"daily": 1, "weekly": 1, "monthly": 1}, "kept",
     elsa("2019-11-22T11:59:15Z", "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z")),
    ("s2-monthly-yearly", SIMPLE2, {"monthly": 1, "yearly": 1}, "kept",
     elsa("2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z")),
    ("last-4", SIMPLE, {"last": 4}, "removed", []),
    ("last-3", SIMPLE, {"last": 3}, "removed", elsa("2019-12-02T11:59:15Z")),
    ("last-2", SIMPLE, {"last": 2}, "removed",
     elsa("2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z")),
    ("last-1", SIMPLE, {"last": 1}, "removed", THREE_OLDEST),
    ("last-2-daily-2", SIMPLE, {"last": 2, "daily": 2}, "removed", []),
    ("daily-3", SIMPLE, {"daily": 3}, "removed", elsa("2019-12-04T11:59:15Z")),
    ("daily-2", SIMPLE, {"daily": 2}, "removed",
     elsa("2019-12-02T11:59:15Z", "2019-12-04T11:59:15Z")),
    ("weekly-5", SIMPLE, {"weekly": 5}, "removed", THREE_OLDEST),
    ("daily-1-weekly-5", SIMPLE, {"daily": 1, "weekly": 5}, "removed", THREE_OLDEST),
    ("monthly-6", SIMPLE, {"monthly": 6}, "removed", THREE_OLDEST),
    ("yearly-7", SIMPLE, {"yearly": 7}, "removed", THREE_OLDEST),
    ("weekly-monthly-yearly", SIMPLE, {"weekly": 5, "monthly": 6, "yearly": 7}, "removed",
     THREE_OLDEST),
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin"])
@pytest.mark.parametrize(("name", "snaps", "options", "which", "expected"), PBS_CASES,
                         ids=[c[0] for c in PBS_CASES])
def test_pbs_examples(zone: str, name: str, snaps: list[SnapshotInfo], options: dict[str, int],
                      which: str, expected: list[str]) -> None:
    with local_zone(zone):
        got = (kept if which == "kept" else removed)(snaps, **options)
    assert got == expected


# -- examples from the words of spec §9 and the maintenance docs ---------------------------

H = 3600
DAY = 86400
T1 = t("2024-05-06T08:00:00Z")


def marks(snapshots: list[SnapshotInfo], **options: int) -> list[tuple[str, bool]]:
    return [(d.mark.value, d.keep) for d in select(snapshots, KeepOptions(**options))]


def test_newest_unfinished_is_kept_as_partial_older_unfinished_go() -> None:
    snaps = [info(T1), info(T1 + H, finished=False), info(T1 + 2 * H),
             info(T1 + 3 * H, finished=False), info(T1 + 4 * H, finished=False)]
    with local_zone("UTC"):
        assert marks(snaps, last=10) == [("keep", True), ("remove", False), ("keep", True),
                                         ("remove", False), ("keep-partial", True)]
        # A finished snapshot newer than every unfinished one: no partial survives.
        assert marks(snaps[:3], last=10) == [("keep", True), ("remove", False), ("keep", True)]
        # An unfinished snapshot never uses up a slot of keep-last.
        assert marks(snaps, last=1) == [("remove", False), ("remove", False), ("keep", True),
                                        ("remove", False), ("keep-partial", True)]


def test_protected_never_removed_and_never_uses_a_slot() -> None:
    snaps = [info(T1 + i * H, protected=i in (1, 4)) for i in range(5)]
    snaps.append(info(T1 - DAY, finished=False, protected=True))  # old, unfinished, protected
    with local_zone("UTC"):
        got = marks(snaps, last=2)
        assert got == [("protected", True), ("remove", False), ("protected", True),
                       ("keep", True), ("keep", True), ("protected", True)]
        rows = select(snaps, KeepOptions(last=2))
        assert [r.protected for r in rows] == [True, False, True, False, False, True]
        # A protected snapshot in a bucket does not claim the bucket either.
        day = [info(T1, protected=False), info(T1 + H, protected=True)]
        assert marks(day, daily=1) == [("keep", True), ("protected", True)]


def test_no_option_keeps_everything() -> None:
    snaps = [info(T1), info(T1 + H, finished=False), info(T1 + 2 * H)]
    options = KeepOptions()
    assert not options.keeps_something
    decisions = select(snaps, options)
    assert all(d.keep for d in decisions)
    # The marks are PBS's (the old unfinished one is marked remove), the verdict is keep.
    assert [d.mark for d in decisions] == [PruneMark.REMOVE, PruneMark.REMOVE,
                                           PruneMark.REMOVE]


def test_iso_weeks_at_the_turn_of_the_year() -> None:
    # 2025-12-28 is a Sunday (2025-W52); 2025-12-29 (Monday) and 2026-01-03 are 2026-W01.
    turn = [info(t(f"{d}T12:00:00Z")) for d in ("2025-12-28", "2025-12-29", "2026-01-03")]
    # 2020 has 53 ISO weeks: 2020-12-31 and 2021-01-03 (Sunday) are 2020-W53.
    long_year = [info(t(f"{d}T12:00:00Z")) for d in ("2020-12-31", "2021-01-03", "2021-01-04")]
    for zone in ("UTC", "Europe/Berlin", "America/New_York"):
        with local_zone(zone):
            assert kept(turn, weekly=1) == ["host/elsa/2026-01-03T12:00:00Z"]
            assert kept(turn, weekly=2) == ["host/elsa/2025-12-28T12:00:00Z",
                                            "host/elsa/2026-01-03T12:00:00Z"]
            # Calendar years, not ISO years, for yearly.
            assert kept(turn, yearly=2) == ["host/elsa/2025-12-29T12:00:00Z",
                                            "host/elsa/2026-01-03T12:00:00Z"]
            assert kept(long_year, weekly=2) == ["host/elsa/2021-01-03T12:00:00Z",
                                                 "host/elsa/2021-01-04T12:00:00Z"]
            assert kept(long_year, yearly=1) == ["host/elsa/2021-01-04T12:00:00Z"]


def test_buckets_are_in_the_local_time_zone() -> None:
    snaps = [info(t(x)) for x in ("2024-03-09T22:30:00Z", "2024-03-09T23:30:00Z",
                                  "2024-03-10T08:00:00Z")]
    with local_zone("UTC"):
        assert removed(snaps, daily=2) == ["host/elsa/2024-03-09T22:30:00Z"]
    with local_zone("Europe/Berlin"):  # 23:30Z is 00:30 on March 10 in Berlin
        assert removed(snaps, daily=2) == ["host/elsa/2024-03-09T23:30:00Z"]


def test_dst_fold_merges_two_utc_hours_into_one_local_hour() -> None:
    # Berlin, 2024-10-27: 00:10Z and 00:30Z are 02:10 and 02:30 CEST, 01:30Z is 02:30 CET.
    snaps = [info(t(x)) for x in ("2024-10-27T00:10:00Z", "2024-10-27T00:30:00Z",
                                  "2024-10-27T01:30:00Z")]
    with local_zone("UTC"):
        assert kept(snaps, hourly=2) == ["host/elsa/2024-10-27T00:30:00Z",
                                         "host/elsa/2024-10-27T01:30:00Z"]
    with local_zone("Europe/Berlin"):
        assert kept(snaps, hourly=2) == ["host/elsa/2024-10-27T01:30:00Z"]


@pytest.mark.parametrize("bad", [0, -1, True, "3", 2.0])
def test_keep_options_are_integers_of_at_least_one(bad: Any) -> None:
    with pytest.raises(InvalidKeepOption, match="keep-daily"):
        KeepOptions(daily=bad)


def test_keep_options_describe_as_pbs() -> None:
    options = KeepOptions(yearly=1, last=3, daily=7)
    assert options.describe() == "--keep-last 3 --keep-daily 7 --keep-yearly 1"
    assert options.as_dict() == {"keep-last": 3, "keep-daily": 7, "keep-yearly": 1}


# -- 2. Hypothesis against a transcription of spec §9.2 ------------------------------------

def reference_marks(snaps: list[tuple[int, bool, bool]],
                    options: dict[str, int]) -> dict[int, tuple[bool, bool]]:
    """Spec §9.2 step by step, for (time, finished, protected) triples; returns
    time -> (keep, protected) as PBS reports them (with §9.1's "keep all")."""
    # 1. newest first by backup time
    items = sorted(snaps, key=lambda s: s[0], reverse=True)
    mark: dict[int, str] = {}
    # 2. unfinished: the newest snapshot overall, if unfinished, is partial; others go
    for position, (when, finished, _) in enumerate(items):
        if not finished:
            mark[when] = "keep-partial" if position == 0 else "remove"
    # 3. the rules in their fixed order, bucket keys as strftime_local strings
    formats = {"hourly": "%Y/%m/%d/%H", "daily": "%Y/%m/%d", "weekly": "%G/%V",
               "monthly": "%Y/%m", "yearly": "%Y"}

    def sel(rule: str, when: int) -> str:
        if rule == "last":
            return epoch_to_rfc3339(when)
        return time.strftime(formats[rule], time.localtime(when))

    for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
        if rule not in options:
            continue
        n = options[rule]
        already = {sel(rule, w) for w, _, _ in items if mark.get(w) == "keep"}
        taken: set[str] = set()
        for when, _, protected in items:
            if when in mark:
                continue
            if protected:
                mark[when] = "protected"
                continue
            k = sel(rule, when)
            if k in already:
                continue
            if k not in taken:
                if len(taken) >= n:
                    break
                taken.add(k)
                mark[when] = "keep"
            else:
                mark[when] = "remove"
    # 4. final: protected wins, else the mark, else remove; keep-all keeps everything
    keep_all = len(options) == 0
    out: dict[int, tuple[bool, bool]] = {}
    for when, _, protected in items:
        final = "protected" if protected else mark.get(when, "remove")
        out[when] = (keep_all or final != "remove", final == "protected")
    return out


# Places where buckets are easy to get wrong: ISO week-years (2020 has 53 weeks, 2026-W01
# starts on 2025-12-29), DST switches in Europe and on Lord Howe Island (30 minutes).
ANCHORS = [t(x) for x in (
    "2019-12-30T00:00:00Z", "2020-12-31T23:30:00Z", "2021-01-03T23:00:00Z",
    "2025-12-29T00:00:00Z", "2026-01-01T00:00:00Z", "2015-12-31T12:00:00Z",
    "2024-03-31T01:00:00Z", "2024-10-27T01:00:00Z", "2024-04-06T15:00:00Z",
    "2024-10-05T15:30:00Z", "2024-02-29T12:00:00Z")]
SCALES = [60, H, DAY, 7 * DAY, 31 * DAY, 366 * DAY]

spread = st.integers(t("2012-01-01T00:00:00Z"), t("2032-01-01T00:00:00Z"))
near_anchor = st.builds(lambda a, off: a + off, st.sampled_from(ANCHORS),
                        st.integers(-4 * DAY, 4 * DAY))


@st.composite
def snapshot_times(draw: st.DrawFn) -> list[int]:
    """Clusters (same minute .. same year) around random instants and anchors."""
    out: list[int] = []
    for _ in range(draw(st.integers(1, 5))):
        center = draw(st.one_of(spread, near_anchor))
        scale = draw(st.sampled_from(SCALES))
        out += [center + off for off in draw(st.lists(st.integers(0, scale), min_size=1,
                                                      max_size=8))]
    return [x for x in out if x >= 1]


@st.composite
def group_listings(draw: st.DrawFn) -> list[tuple[int, bool, bool]]:
    times = sorted(set(draw(snapshot_times())))
    flags = draw(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)),
                          min_size=len(times), max_size=len(times)))
    # about one in five unfinished, one in five protected
    return [(w, f >= 2, p >= 8) for w, (f, p) in zip(times, flags, strict=True)]


keep_options = st.fixed_dictionaries({}, optional={rule: st.integers(1, 6) for rule in RULES})


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Australia/Lord_Howe",
                                  "America/St_Johns"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listing=group_listings(), options=keep_options)
def test_matches_the_spec_transcription(zone: str, listing: list[tuple[int, bool, bool]],
                                        options: dict[str, int]) -> None:
    snaps = [info(w, f, p) for w, f, p in listing]
    with local_zone(zone):
        expected = reference_marks(listing, options)
        decisions = select(list(reversed(snaps)), KeepOptions(**options))  # input order: any
        raw = compute_prune_info(snaps, KeepOptions(**options))
    assert [d.info.dir.time for d in decisions] == sorted(expected)  # oldest first
    assert {d.info.dir.time: (d.keep, d.protected) for d in decisions} == expected
    # Invariants the spec states outright.
    for d in decisions:
        if d.info.protected:
            assert d.keep and d.mark is PruneMark.PROTECTED
    if listing and options:
        newest = decisions[-1]
        assert newest.keep  # partial, protected, or kept by the first rule
    assert [m for _, m in raw] == [d.mark for d in decisions]


# -- 3. on a real datastore ------------------------------------------------------------------

def make_snapshots(ds: Datastore, namespace: str, group: BackupGroup,
                   specs: list[tuple[int, bool, bool]]) -> list[BackupDir]:
    """Snapshot directories with manifests (finished) or without, written directly."""
    n = ns(namespace)
    if not ds.group_exists(n, group):
        ds.make_group_dir(n, group, OWNER)
    out = []
    for when, finished, protected in specs:
        snap = BackupDir(group, when)
        ds.make_snapshot_dir(n, snap)
        if finished:
            ds.write_manifest(n, snap, BackupManifest(group.type.value, group.id, when))
        if protected:
            ds.set_protected(n, snap, True)
        out.append(snap)
    return out


def remaining(ds: Datastore, namespace: str, group: BackupGroup) -> list[BackupDir]:
    return [i.dir for i in ds.list_snapshots(ns(namespace), group)]


def store_tree(ds: Datastore) -> set[str]:
    out: set[str] = set()
    for directory, dirs, files in os.walk(ds.path):
        if directory == ds.path:
            dirs[:] = [d for d in dirs if d != ".chunks"]
        out.update(os.path.relpath(os.path.join(directory, n), ds.path) for n in dirs + files)
    return out


def hourly(start: int, count: int) -> list[tuple[int, bool, bool]]:
    return [(start + i * H, True, False) for i in range(count)]


def test_prune_group_removes_what_the_rules_select(ds: Datastore) -> None:
    specs = [(T1 + i * 7 * H, i % 9 != 4, i % 11 == 3) for i in range(40)]
    specs.append((T1 + 41 * 7 * H, False, False))  # a backup still running: partial
    make_snapshots(ds, "", WEB, specs)
    options = KeepOptions(last=2, daily=3, weekly=2, monthly=1)
    with local_zone("Europe/Berlin"):
        expected = select(ds.list_snapshots(ROOT, WEB), options)
        report = prune_group(ds, ROOT, WEB, options)
    assert [r.snapshot for r in report.rows] == [d.info.dir for d in expected]
    assert [(r.keep, r.mark) for r in report.rows] == [(d.keep, d.mark) for d in expected]
    assert remaining(ds, "", WEB) == [d.info.dir for d in expected if d.keep]
    assert report.removed == sum(1 for d in expected if not d.keep) > 20
    assert report.warnings == [] and report.skipped == []
    for row in report.rows:  # removed snapshots leave no lock files behind
        if not row.keep:
            assert not any(p.exists() for p in snapshot_lock_files(ds, "", row.snapshot))
    assert report.as_json()[0] == {
        "backup-type": "host", "backup-id": "web", "backup-time": T1,
        "keep": expected[0].keep, "protected": False}
    # Pruning again with the same options removes nothing more.
    with local_zone("Europe/Berlin"):
        again = prune_group(ds, ROOT, WEB, options)
    assert again.removed == 0 and all(r.keep for r in again.rows)


def test_dry_run_changes_nothing(ds: Datastore) -> None:
    make_snapshots(ds, "", WEB, [*hourly(T1, 6), (T1 + 7 * H, False, False)])
    before = store_tree(ds)
    report = prune_group(ds, ROOT, WEB, KeepOptions(last=1), dry_run=True)
    assert store_tree(ds) == before
    assert report.dry_run and report.removed == 5
    assert [r.mark.value for r in report.rows] == ["remove"] * 5 + ["keep", "keep-partial"]
    keep_all = prune_group(ds, ROOT, WEB, KeepOptions())
    assert keep_all.warnings == [KEEP_ALL_WARNING] and keep_all.removed == 0
    assert store_tree(ds) == before


def test_real_backups_are_pruned(ds: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n")
    snaps = [backup(ds, src, "", WEB, T1 + i * DAY) for i in range(3)]
    report = prune_group(ds, ROOT, WEB, KeepOptions(last=1))
    assert [r.keep for r in report.rows] == [False, False, True]
    assert remaining(ds, "", WEB) == [snaps[-1]]
    assert ds.group_exists(ROOT, WEB)  # prune never empties a group: its newest stays


def test_busy_snapshots_are_skipped_and_reported_never_waited_for(ds: Datastore) -> None:
    snaps = make_snapshots(ds, "", WEB, hourly(T1, 5))
    new = BackupDir(WEB, T1 + 5 * H)
    ds.make_snapshot_dir(ROOT, new)  # being written by the backup below
    # A running backup: base snapshot 0 (SN S), new snapshot (SN X); and a reader of 2.
    with holding(ds, "backup host/web", backup_writer("", WEB, snaps[0], new.time)) as writer, \
            holding(ds, "restore", reader_of("", snaps[2])) as reader:
        started = time.monotonic()
        report = prune_group(ds, ROOT, WEB, KeepOptions(last=1))
        assert time.monotonic() - started < 3
        by_snap = {r.snapshot: r for r in report.rows}
        assert by_snap[new].mark is PruneMark.KEEP_PARTIAL
        assert by_snap[snaps[4]].keep
        for snap, pid, what in ((snaps[0], writer, "backup host/web"),
                                (snaps[2], reader, "restore")):
            row = by_snap[snap]
            assert not row.keep and row.skipped is not None
            assert f"pid {pid} " in row.skipped and what in row.skipped, row.skipped
            assert row.as_dict()["skipped"] == row.skipped
            assert any(str(snap) in w and f"pid {pid} " in w for w in report.warnings)
        assert by_snap[snaps[1]].skipped is None and by_snap[snaps[3]].skipped is None
        assert remaining(ds, "", WEB) == [snaps[0], snaps[2], snaps[4], new]
        assert report.removed == 2 and len(report.skipped) == 2
    # Once they are done, the next prune removes what it skipped (the partial stays newest).
    again = prune_group(ds, ROOT, WEB, KeepOptions(last=1))
    assert remaining(ds, "", WEB) == [snaps[4], new] and again.skipped == []


def test_snapshot_held_exclusively_is_skipped(ds: Datastore) -> None:
    snaps = make_snapshots(ds, "", WEB, hourly(T1, 3))
    with holding(ds, "set protection", lambda s: s.snapshot(ROOT, snaps[0], X)) as pid:
        report = prune_group(ds, ROOT, WEB, KeepOptions(last=1))
    assert report.rows[0].skipped is not None and f"pid {pid} " in report.rows[0].skipped
    assert remaining(ds, "", WEB) == [snaps[0], snaps[2]]


def test_busy_group_fails_a_group_prune_and_is_skipped_by_a_datastore_prune(
        ds: Datastore) -> None:
    make_snapshots(ds, "", WEB, hourly(T1, 3))
    make_snapshots(ds, "", ELSA, hourly(T1, 3))
    with holding(ds, "delete group host/web", lambda s: s.group(ROOT, WEB, X)) as pid:
        with pytest.raises(LockBusy) as err:
            prune_group(ds, ROOT, WEB, KeepOptions(last=1))
        assert f"pid {pid} " in str(err.value)
        progress: list[tuple[int, int]] = []
        report = prune_datastore(ds, ROOT, KeepOptions(last=1),
                                 progress=lambda d, n: progress.append((d, n)))
    assert progress == [(1, 2), (2, 2)]
    assert report.groups == 1 and report.removed == 2
    assert {r.snapshot.group for r in report.rows} == {ELSA}
    assert len(report.warnings) == 1
    assert "host/web" in report.warnings[0] and f"pid {pid} " in report.warnings[0]
    assert len(remaining(ds, "", WEB)) == 3 and len(remaining(ds, "", ELSA)) == 1


def test_prune_datastore_walks_namespaces_down_to_max_depth(ds: Datastore) -> None:
    make_namespaces(ds, "a", "a/b")
    for where in ("", "a", "a/b"):
        make_snapshots(ds, where, WEB, hourly(T1, 3))
    make_snapshots(ds, "a", ELSA, hourly(T1, 2))
    report = prune_datastore(ds, ROOT, KeepOptions(last=1), max_depth=1)
    assert [(str(r.ns), str(r.snapshot.group), r.keep) for r in report.rows] == [
        ("", "host/web", False), ("", "host/web", False), ("", "host/web", True),
        ("a", "host/elsa", False), ("a", "host/elsa", True),
        ("a", "host/web", False), ("a", "host/web", False), ("a", "host/web", True)]
    assert len(remaining(ds, "a/b", WEB)) == 3
    rows = report.as_json(with_ns=True)
    assert rows[0]["ns"] == "" and rows[-1]["ns"] == "a"
    assert set(rows[0]) == {"backup-type", "backup-id", "backup-time", "keep", "protected", "ns"}
    below = prune_datastore(ds, ns("a"), KeepOptions(last=1), dry_run=True)
    assert {str(r.ns) for r in below.rows} == {"a", "a/b"} and below.removed == 2
    with pytest.raises(NotFound):
        prune_datastore(ds, ns("nope"), KeepOptions(last=1))
    with pytest.raises(NotFound):
        prune_group(ds, ROOT, BackupGroup.parse("vm/100"), KeepOptions(last=1))


# -- the CLI, in a subprocess ----------------------------------------------------------------

def run_cli(*args: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    env = _env()
    env["TZ"] = tz
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def cli_json(*args: str, tz: str = "UTC") -> Any:
    result = run_cli(*args, "--output-format", "json", tz=tz)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_cli_prune_json_text_and_dry_run(ds: Datastore) -> None:
    make_namespaces(ds, "a")
    snaps = make_snapshots(ds, "a", WEB, [(T1 + i * DAY, True, i == 0) for i in range(4)])
    r = ("--repository", ds.path, "--ns", "a")
    rows = cli_json("prune", "host/web", *r, "--keep-last", "1", "--dry-run")
    assert rows == [{"backup-type": "host", "backup-id": "web", "backup-time": s.time,
                     "keep": i in (0, 3), "protected": i == 0, "ns": "a"}
                    for i, s in enumerate(snaps)]
    assert remaining(ds, "a", WEB) == snaps
    text = run_cli("prune", "host/web", *r, "--keep-last", "1")
    assert text.returncode == 0 and text.stderr == "", text.stderr
    assert str(snaps[1]) in text.stdout and "removed" in text.stdout
    assert text.stdout.splitlines()[-1].startswith("removed 2, kept 2 of 4 snapshot(s)")
    assert remaining(ds, "a", WEB) == [snaps[0], snaps[3]]
    none = run_cli("prune", "host/web", *r)
    assert none.returncode == 0 and f"warning: {KEEP_ALL_WARNING}" in none.stderr


def test_cli_prune_datastore_rows_carry_ns(ds: Datastore) -> None:
    make_namespaces(ds, "a")
    make_snapshots(ds, "", WEB, hourly(T1, 2))
    make_snapshots(ds, "a", WEB, hourly(T1, 2))
    rows = cli_json("prune-datastore", "--repository", ds.path, "--keep-hourly", "1",
                    "--max-depth", "0")
    assert [(row["ns"], row["keep"]) for row in rows] == [("", False), ("", True)]
    text = run_cli("prune-datastore", "--repository", ds.path, "--keep-last", "1",
                   "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "<root>" in text.stdout and "would remove" in text.stdout
    assert text.stdout.splitlines()[-1].startswith("dry run: would remove 1, kept 2 of 3")


def test_cli_uses_the_host_time_zone(ds: Datastore) -> None:
    times = [t(x) for x in ("2024-03-09T22:30:00Z", "2024-03-09T23:30:00Z",
                            "2024-03-10T08:00:00Z")]
    make_snapshots(ds, "", WEB, [(w, True, False) for w in times])
    args = ("prune", "host/web", "--repository", ds.path, "--keep-daily", "2", "--dry-run")
    assert [row["keep"] for row in cli_json(*args, tz="UTC")] == [False, True, True]
    assert [row["keep"] for row in cli_json(*args, tz="Europe/Berlin")] == [True, False, True]


def test_cli_reports_a_busy_snapshot(ds: Datastore) -> None:
    snaps = make_snapshots(ds, "", WEB, hourly(T1, 2))
    with holding(ds, "restore", reader_of("", snaps[0])) as pid:
        result = run_cli("prune", "host/web", "--repository", ds.path, "--keep-last", "1",
                         "--output-format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["keep"] is False and f"pid {pid} " in rows[0]["skipped"]
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and str(pid) in warnings[0]
    assert remaining(ds, "", WEB) == snaps


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["prune", "host/web", "--keep-last", "0"], 2, "--keep-last"),
    (["prune", "host/web", "--keep-daily", "many"], 2, "--keep-daily"),
    (["prune", "foo/web", "--keep-last", "1"], 1, "foo"),
    (["prune", "host/nope", "--keep-last", "1"], 1, "does not exist"),
    (["prune", "host/web", "--ns", "a/b/c/d/e/f/g/h"], 1, "deep"),
    (["prune-datastore", "--ns", "nope", "--keep-last", "1"], 1, "nope"),
    (["prune-datastore", "--max-depth", "8"], 2, "--max-depth"),
    (["prune-datastore", "--keep-weekly", "-1"], 2, "--keep-weekly"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_errors_are_one_line(ds: Datastore, args: list[str], code: int,
                                 needle: str) -> None:
    make_snapshots(ds, "", WEB, hourly(T1, 2))
    result = run_cli(*args, "--repository", ds.path)
    assert "Traceback" not in result.stderr
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert len(remaining(ds, "", WEB)) == 2
