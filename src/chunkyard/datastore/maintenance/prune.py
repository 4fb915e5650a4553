"""Prune a group or a namespace subtree with PBS's rules (spec §9; PBS's `prune` and
`prune-datastore`). The selection itself is `prune_rules`.

Locks (locking.md, "Who takes what"; nothing ever waits, rule 5):
- deciding: NS S, GA S on the group while it is listed, so a move or delete of the group
  (GA X) cannot run under the listing; a busy group fails `prune_group` and is skipped and
  reported by `prune_datastore`;
- removing: in the same session (GA S held from listing to the last removal), SN X then MF
  X per snapshot as PBS's destroy (`snapshots.destroy_snapshot_locked`, the one way to
  remove a snapshot, which releases both before the next). SN is never waited for: a
  snapshot a backup uses as its base (SN S), one being written (SN X), read or verified is
  skipped, and its row says why (`skipped`). PBS logs a failed destroy as a warning and goes
  on; so does this;
- afterwards, as PBS's destroy, a group left without snapshots is removed if its GA X lock
  is free (`snapshots.remove_group_if_empty`).

The result has PBS's prune rows (`backup-type`, `backup-id`, `backup-time`, `keep`,
`protected`, and `ns` outside the root), oldest first within each group; a row whose removal
was skipped adds `skipped`. `dry_run` decides and reports but changes nothing and takes no
SN lock. With no keep option set every snapshot is kept ("keep all"), with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.locking import LockBusy, LockSession, Mode
from chunkyard.datastore.maintenance.prune_rules import (
    KeepOptions,
    PruneDecision,
    PruneMark,
    select,
)
from chunkyard.datastore.snapshots import destroy_snapshot_locked, remove_group_if_empty
from chunkyard.errors import ChunkyardError, DatastoreError, NotFound
from chunkyard.names import BackupDir, BackupGroup, BackupNamespace
from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH

KEEP_ALL_WARNING = "no keep option set: keeping all snapshots"


@dataclass(frozen=True, slots=True)
class PruneRow:
    """One snapshot's outcome; `skipped` says why a snapshot to remove is still there."""

    ns: BackupNamespace
    decision: PruneDecision
    skipped: str | None = None

    @property
    def snapshot(self) -> BackupDir:
        return self.decision.info.dir

    @property
    def keep(self) -> bool:
        return self.decision.keep

    @property
    def mark(self) -> PruneMark:
        return self.decision.mark

    def as_dict(self, *, with_ns: bool = False) -> dict[str, Any]:
        """PBS's prune row; `ns` only outside the root unless `with_ns`."""
        snap = self.snapshot
        row: dict[str, Any] = {
            "backup-type": snap.group.type.value, "backup-id": snap.group.id,
            "backup-time": snap.time, "keep": self.keep,
            "protected": self.decision.protected,
        }
        if with_ns or not self.ns.is_root:
            row["ns"] = str(self.ns)
        if self.skipped is not None:
            row["skipped"] = self.skipped
        return row


@dataclass
class PruneReport:
    """What a prune decided and did: rows in processing order, warnings in the order met."""

    options: KeepOptions
    dry_run: bool
    rows: list[PruneRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    groups: int = 0

    @property
    def keep_all(self) -> bool:
        return not self.options.keeps_something

    @property
    def removed(self) -> int:
        """Snapshots removed (dry run: that would be removed)."""
        return sum(1 for r in self.rows if not r.keep and r.skipped is None)

    @property
    def kept(self) -> int:
        return sum(1 for r in self.rows if r.keep)

    @property
    def skipped(self) -> list[PruneRow]:
        return [r for r in self.rows if r.skipped is not None]

    def as_json(self, *, with_ns: bool = False) -> list[dict[str, Any]]:
        return [r.as_dict(with_ns=with_ns) for r in self.rows]


def prune_group(ds: Datastore, ns: BackupNamespace, group: BackupGroup, options: KeepOptions,
                *, dry_run: bool = False) -> PruneReport:
    """Prune one group (PBS: POST .../prune). A group that does not exist or is locked
    exclusively (moved, deleted) is an error; busy snapshots are skipped and reported."""
    report = _new_report(options, dry_run)
    _prune_one(ds, ns, group, report)
    return report


def prune_datastore(ds: Datastore, ns: BackupNamespace, options: KeepOptions, *,
                    max_depth: int = MAX_NAMESPACE_DEPTH, dry_run: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> PruneReport:
    """Prune every group of `ns` and of its descendants down to `max_depth` levels (PBS:
    prune-datastore, clamped to the depth limit); namespaces depth-first, groups sorted.
    A group that is busy or vanishes meanwhile is skipped with a warning.
    `progress(done, total)` is called after each group."""
    report = _new_report(options, dry_run)
    ds.require_namespace(ns)
    targets: list[tuple[BackupNamespace, BackupGroup]] = []
    for n in ds.iter_namespaces(ns, max_depth):
        try:
            targets.extend((n, g) for g in ds.list_groups(n))
        except NotFound as e:  # removed or moved since it was listed
            report.warnings.append(f"skipped namespace '{n.display()}': {e}")
    for done, (n, group) in enumerate(targets, 1):
        try:
            _prune_one(ds, n, group, report)
        except ChunkyardError as e:
            report.warnings.append(f"skipped group {group} in '{n.display()}': {e}")
        if progress is not None:
            progress(done, len(targets))
    return report


def _new_report(options: KeepOptions, dry_run: bool) -> PruneReport:
    report = PruneReport(options, dry_run)
    if report.keep_all:
        report.warnings.append(KEEP_ALL_WARNING)
    return report


def _prune_one(ds: Datastore, ns: BackupNamespace, group: BackupGroup,
               report: PruneReport) -> None:
    removed_any = False
    with ds.locks.session(f"prune {group}", wait=0.0) as session:
        session.group(ns, group, Mode.SHARED)
        ds.require_group(ns, group)
        decisions = select(ds.list_snapshots(ns, group), report.options)
        report.groups += 1
        for decision in decisions:
            skipped = None
            if not decision.keep and not report.dry_run:
                skipped = _remove(ds, session, ns, decision.info.dir)
                if skipped is None:
                    removed_any = True
                else:
                    report.warnings.append(
                        f"could not remove {decision.info.dir} in '{ns.display()}': {skipped}")
            report.rows.append(PruneRow(ns, decision, skipped))
    if removed_any:
        remove_group_if_empty(ds, ns, group)


def _remove(ds: Datastore, session: LockSession, ns: BackupNamespace,
            snap: BackupDir) -> str | None:
    """Remove one snapshot without waiting for it; None when done, else why not."""
    try:
        destroy_snapshot_locked(ds, session, ns, snap)
    except LockBusy as e:
        return str(e)
    except (NotFound, DatastoreError) as e:  # gone or protected since it was listed
        return str(e)
    return None
