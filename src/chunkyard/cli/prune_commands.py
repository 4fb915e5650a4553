"""`chunkyard prune` (one group) and `chunkyard prune-datastore` (a namespace subtree), with
PBS's keep options and result rows (spec §9, §11.3)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chunkyard.cli.context import one_line_errors
from chunkyard.cli.options import (
    Format,
    GroupArg,
    Namespace,
    parse_group,
    parse_ns,
)
from chunkyard.cli.output import OutputFormat, emit
from chunkyard.cli.target import Target, with_target

if TYPE_CHECKING:
    from chunkyard.datastore.maintenance.prune import PruneReport, PruneRow
    from chunkyard.datastore.maintenance.prune_rules import KeepOptions


def _keep(rule: str, what: str) -> Any:
    return typer.Option(f"--keep-{rule}", min=1, metavar="N", help=what)


KeepLast = Annotated[int | None, _keep("last", "Keep the last N snapshots.")]
KeepHourly = Annotated[int | None, _keep("hourly", "Keep the newest snapshot of each of the "
                                         "last N hours that have one.")]
KeepDaily = Annotated[int | None, _keep("daily", "Likewise for days.")]
KeepWeekly = Annotated[int | None, _keep("weekly", "Likewise for ISO weeks (Monday start).")]
KeepMonthly = Annotated[int | None, _keep("monthly", "Likewise for months.")]
KeepYearly = Annotated[int | None, _keep("yearly", "Likewise for years.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only show what would be removed.")]
MaxDepth = Annotated[int | None, typer.Option(
    "--max-depth", min=0, max=7, help="Levels below --ns to prune (default: all).")]


def register(app: typer.Typer) -> None:
    app.command("prune")(one_line_errors(with_target(prune)))
    app.command("prune-datastore")(one_line_errors(with_target(prune_datastore)))


def prune(
    target: Target, group: GroupArg, ns: Namespace = "",
    keep_last: KeepLast = None, keep_hourly: KeepHourly = None, keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None, keep_monthly: KeepMonthly = None,
    keep_yearly: KeepYearly = None, dry_run: DryRun = False,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Prune a backup group: keep what the --keep-* options select (buckets in this host's
    time zone), remove the rest. Without any option everything is kept."""
    options = _options(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                       keep_yearly)
    namespace, backup_group = parse_ns(ns), parse_group(group)

    def local(ds: Any) -> None:
        from chunkyard.datastore.maintenance.prune import prune_group

        report = prune_group(ds, namespace, backup_group, options, dry_run=dry_run)
        _print(report, output_format, with_ns=False)

    def remote(api: Any, prefix: str) -> str:
        # inline (without use-task) the server answers with PBS's rows, oldest first
        rows = api.post(prefix + "/prune", {
            "ns": str(namespace) or None, "backup-type": backup_group.type.value,
            "backup-id": backup_group.id, **_keep_params(options), "dry-run": dry_run})
        _print_rows(rows, dry_run, output_format)
        return ""

    target.run(local, remote)


def prune_datastore(
    target: Target, ns: Namespace = "", max_depth: MaxDepth = None,
    keep_last: KeepLast = None, keep_hourly: KeepHourly = None, keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None, keep_monthly: KeepMonthly = None,
    keep_yearly: KeepYearly = None, dry_run: DryRun = False,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Prune every group of a namespace and its descendants; busy groups and snapshots are
    skipped and reported."""
    options = _options(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                       keep_yearly)
    namespace = parse_ns(ns)

    def local(ds: Any) -> None:
        from chunkyard.cli.progress import StepProgress
        from chunkyard.datastore.maintenance.prune import prune_datastore as run
        from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH

        bar = StepProgress("pruning groups") if sys.stderr.isatty() else None
        try:
            report = run(ds, namespace, options,
                         max_depth=MAX_NAMESPACE_DEPTH if max_depth is None else max_depth,
                         dry_run=dry_run, progress=None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        _print(report, output_format, with_ns=True)

    def remote(api: Any, prefix: str) -> str:
        return str(api.post(prefix + "/prune-datastore", {
            "ns": str(namespace) or None, "max-depth": max_depth, **_keep_params(options),
            "dry-run": dry_run}))

    target.run(local, remote)


def _options(last: int | None, hourly: int | None, daily: int | None, weekly: int | None,
             monthly: int | None, yearly: int | None) -> KeepOptions:
    from chunkyard.datastore.maintenance.prune_rules import KeepOptions

    return KeepOptions(last=last, hourly=hourly, daily=daily, weekly=weekly, monthly=monthly,
                       yearly=yearly)


def _keep_params(options: KeepOptions) -> dict[str, Any]:
    return {"keep-last": options.last, "keep-hourly": options.hourly,
            "keep-daily": options.daily, "keep-weekly": options.weekly,
            "keep-monthly": options.monthly, "keep-yearly": options.yearly}


def _print_rows(rows: list[dict[str, Any]], dry_run: bool, output_format: OutputFormat) -> None:
    """A server's prune rows (PBS's shape, as `PruneRow.as_dict`)."""
    from chunkyard.names import epoch_to_rfc3339

    if output_format is not OutputFormat.TEXT:
        emit(rows, output_format)
        return
    removed = sum(1 for r in rows if not r["keep"])
    if rows:
        emit([{"snapshot": f"{r['backup-type']}/{r['backup-id']}/"
                           f"{epoch_to_rfc3339(r['backup-time'])}",
               "action": "keep" if r["keep"] else ("would remove" if dry_run else "removed"),
               "protected": r.get("protected", False)} for r in rows],
             output_format, [("snapshot", "snapshot"), ("action", "action"),
                             ("protected", "protected")])
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"{'dry run: ' if dry_run else ''}{verb} {removed}, kept "
               f"{len(rows) - removed} of {len(rows)} snapshot(s)")


def _print(report: PruneReport, output_format: OutputFormat, *, with_ns: bool) -> None:
    for warning in report.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if output_format is not OutputFormat.TEXT:
        emit(report.as_json(with_ns=with_ns), output_format)
        return
    if report.rows:
        rows = [{"ns": r.ns.display(), "snapshot": str(r.snapshot),
                 "action": _action(r, report.dry_run), "protected": r.decision.protected}
                for r in report.rows]
        columns = [("snapshot", "snapshot"), ("action", "action"), ("protected", "protected")]
        emit(rows, output_format, [("ns", "namespace"), *columns] if with_ns else columns)
    verb = "would remove" if report.dry_run else "removed"
    skipped = len(report.skipped)
    typer.echo(f"{'dry run: ' if report.dry_run else ''}{verb} {report.removed}, kept "
               f"{report.kept} of {len(report.rows)} snapshot(s) in {report.groups} group(s)"
               + (f"; {skipped} busy or changed snapshot(s) skipped" if skipped else ""))


def _action(row: PruneRow, dry_run: bool) -> str:
    if row.keep:
        return row.mark.value if row.mark.keep else "keep (keep all)"
    if row.skipped is not None:
        return "remove: skipped"
    return "would remove" if dry_run else "removed"
