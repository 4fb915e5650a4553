"""`chunkyard group move` and `chunkyard namespace move` (PBS 4.1.10's client commands)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from chunkyard.cli.context import UsageError, one_line_errors
from chunkyard.cli.options import (
    Format,
    GroupArg,
    Namespace,
    Wait,
    parse_boolean,
    parse_group,
    parse_ns,
)
from chunkyard.cli.output import OutputFormat, emit
from chunkyard.cli.target import Target, with_target

DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Print the plan; change nothing (with --server: chunkyard's 'dry-run' "
                      "API extension, which PBS lacks).")]


def _bool_option(name: str, help_text: str) -> Any:
    return typer.Option(name, metavar="BOOL", help=f"{help_text} (default: true).")


def register(group_app: typer.Typer, namespace_app: typer.Typer) -> None:
    group_app.command("move")(one_line_errors(with_target(group_move)))
    namespace_app.command("move")(one_line_errors(with_target(namespace_move)))


def group_move(
    target: Target, group: GroupArg,
    target_ns: Annotated[str, typer.Option(
        "--target-ns", help="Existing namespace to move the group into (default: root).")] = "",
    ns: Namespace = "",
    merge_group: Annotated[str, _bool_option(
        "--merge-group", "Merge into an existing group of the same name")] = "true",
    dry_run: DryRun = False, wait: Wait = 0.0, output_format: Format = OutputFormat.TEXT,
) -> None:
    """Move a backup group to another namespace, merging with a group already there."""
    source, backup_group, merge = parse_ns(ns), parse_group(group), parse_boolean(merge_group)
    destination = parse_ns(target_ns)

    def local(ds: Any) -> None:
        from chunkyard.datastore.moves import move_group

        with _reporting(output_format) as progress:
            result = move_group(ds, source, backup_group, destination, merge_group=merge,
                                dry_run=dry_run, wait=wait, progress=progress)
        _print(result, output_format)

    def remote(api: Any, prefix: str) -> str:
        return _remote_move(api, prefix + "/move-group", {
            "ns": str(source) or None, "backup-type": backup_group.type.value,
            "backup-id": backup_group.id, "target-ns": str(destination) or None,
            "merge-group": merge}, dry_run, output_format)

    target.run(local, remote)


def namespace_move(
    target: Target, name: Annotated[str, typer.Argument(help="Namespace to move, e.g. a/b")],
    target_ns: Annotated[str, typer.Option(
        "--target-ns", help="The new full path; its parent must exist.")] = "",
    max_depth: Annotated[int | None, typer.Option(
        "--max-depth", min=0, max=7, help="Levels below NAME to move (default: all).")] = None,
    delete_source: Annotated[str, _bool_option(
        "--delete-source", "Remove the emptied source namespaces")] = "true",
    merge_groups: Annotated[str, _bool_option(
        "--merge-groups", "Merge groups that exist in the target too")] = "true",
    dry_run: DryRun = False, wait: Wait = 0.0, output_format: Format = OutputFormat.TEXT,
) -> None:
    """Move (rename) a namespace with its groups and child namespaces."""
    if not target_ns:
        raise UsageError("--target-ns is required (the root namespace cannot be a target)")
    source = parse_ns(name)
    if source.is_root:
        raise UsageError("the root namespace cannot be moved")
    destination = parse_ns(target_ns)
    delete, merge = parse_boolean(delete_source), parse_boolean(merge_groups)

    def local(ds: Any) -> None:
        from chunkyard.datastore.moves import move_namespace

        with _reporting(output_format) as progress:
            result = move_namespace(ds, source, destination, max_depth=max_depth,
                                    delete_source=delete, merge_groups=merge, dry_run=dry_run,
                                    wait=wait, progress=progress)
        _print(result, output_format)

    def remote(api: Any, prefix: str) -> str:
        return _remote_move(api, prefix + "/move-namespace", {
            "ns": str(source), "target-ns": str(destination), "max-depth": max_depth,
            "delete-source": delete, "merge-groups": merge}, dry_run, output_format)

    target.run(local, remote)


def _remote_move(api: Any, path: str, params: dict[str, Any], dry_run: bool,
                 output_format: OutputFormat) -> str:
    """A real move starts a task (its UPID, whose log is followed); a dry run answers the
    plan at once (chunkyard's `dry-run` extension), printed as a local dry run prints it."""
    if not dry_run:
        return str(api.post(path, params))
    result = api.post(path, {**params, "dry-run": True})
    if not isinstance(result, dict) or result.get("dry-run") is not True:
        from chunkyard.client.api import RemoteError

        # PBS refuses the unknown parameter (400), so this is a server that ignored it
        raise RemoteError(f"the server answered no plan but {str(result)[:200]!r}: it does "
                         "not know 'dry-run' and may have started the move")
    _print(result, output_format)
    return ""


@contextmanager
def _reporting(output_format: OutputFormat) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar over the plan's steps on a terminal; a refused merge still prints
    its plan in JSON modes, so scripts see every conflict."""
    from chunkyard.cli.progress import StepProgress
    from chunkyard.datastore.moves import MoveConflict

    bar = StepProgress("moving") if sys.stderr.isatty() else None
    try:
        yield None if bar is None else bar.update
    except MoveConflict as conflict:
        if output_format is not OutputFormat.TEXT:
            emit(conflict.report, output_format)
        raise
    finally:
        if bar is not None:
            bar.close()


def _print(result: dict[str, Any], output_format: OutputFormat) -> None:
    for warning in result["warnings"]:
        sys.stderr.write(f"warning: {warning}\n")
    for line in result["references"]:
        sys.stderr.write(f"references: {line}\n")
    if output_format is not OutputFormat.TEXT:
        emit(result, output_format)
        return
    what = (f"group {result['backup-type']}/{result['backup-id']} from "
            f"'{result['ns'] or '<root>'}'" if result["kind"] == "group"
            else f"namespace '{result['ns']}'")
    target = result["target-ns"] or "<root>"
    if not result["dry-run"]:
        counts = "" if result["moved-groups"] is None else (
            f", {result['moved-groups']} group(s), {result['moved-snapshots']} snapshot(s)")
        typer.echo(f"moved {what} to '{target}' ({result['method']}{counts})")
        return
    typer.echo(f"dry run: would move {what} to '{target}' ({result['method']}); "
               "nothing was changed")
    for row in result["namespaces"]:
        typer.echo(f"  namespace {row['ns']} -> {row['target-ns']}: {row['action']}")
    for row in result["groups"]:
        where = row["ns"] or "<root>"
        snaps = f", {row['snapshots']} snapshot(s)" if "snapshots" in row else ""
        reason = f": {row['reason']}" if row.get("reason") else ""
        typer.echo(f"  group {row['backup-type']}/{row['backup-id']} in {where} -> "
                   f"{row['target-ns'] or '<root>'}: {row['action']}{snaps}{reason}")
    if result.get("busy"):
        typer.echo(f"would fail now: {result['busy']}")
    if result["conflicts"]:
        typer.echo(f"would fail: {len(result['conflicts'])} conflict(s), nothing would move")
