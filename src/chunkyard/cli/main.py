"""The `chunkyard` command line, following proxmox-backup-client's names and conventions."""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import time
from typing import Annotated

import typer

from chunkyard.cli import (
    gc_commands,
    move_commands,
    prune_commands,
    remote_commands,
    serve_commands,
    verify_commands,
)
from chunkyard.cli.context import (
    UsageError,
    key_password,
    local_authid,
    one_line_errors,
)
from chunkyard.cli.options import (
    Format,
    GroupArg,
    KeyFile,
    Namespace,
    Repository,
    SnapshotArg,
    Wait,
    load_crypt,
    open_datastore,
    parse_boolean,
    parse_group,
    parse_ns,
    parse_snapshot,
)
from chunkyard.cli.output import OutputFormat, emit, human_bytes
from chunkyard.cli.target import Target, with_target

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="chunkyard: deduplicating backups in a PBS-compatible datastore.")
datastore_app = typer.Typer(no_args_is_help=True, help="Create datastores.")
namespace_app = typer.Typer(no_args_is_help=True, help="List, create and delete namespaces.")
snapshot_app = typer.Typer(no_args_is_help=True, help="List and manage snapshots.")
group_app = typer.Typer(no_args_is_help=True, help="Manage backup groups.")
key_app = typer.Typer(no_args_is_help=True, help="Manage encryption keys.")
app.add_typer(datastore_app, name="datastore")
app.add_typer(namespace_app, name="namespace")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(group_app, name="group")
app.add_typer(key_app, name="key")
move_commands.register(group_app, namespace_app)
verify_commands.register(app)
prune_commands.register(app)
gc_commands.register(app)
serve_commands.register(app)
remote_commands.register(app)

# -- datastore ------------------------------------------------------------------------------
@datastore_app.command("create")
@one_line_errors
def datastore_create(path: str) -> None:
    """Create an empty datastore at PATH (PBS layout: .chunks with 65536 directories)."""
    from chunkyard.datastore.datastore import Datastore

    Datastore.create(path)
    typer.echo(f"created datastore {path}")


# -- backup and restore ------------------------------------------------------------------
@app.command("backup")
@one_line_errors
def backup(
    sources: Annotated[list[str], typer.Argument(
        help="NAME.tar:DIR, NAME.img:FILE, NAME.conf:FILE")],
    repository: Repository = None,
    ns: Namespace = "",
    backup_type: Annotated[str, typer.Option("--backup-type")] = "host",
    backup_id: Annotated[str | None, typer.Option("--backup-id")] = None,
    backup_time: Annotated[int | None, typer.Option("--backup-time", min=1)] = None,
    keyfile: KeyFile = None,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", help="Average chunk size in KiB for .tar archives (64..4096, a power "
        "of two).")] = 4096,
    wait: Wait = 0.0,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Back up directories, images and small files into a new snapshot."""
    from chunkyard.cli.progress import make_reporter
    from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
    from chunkyard.names import Authid, BackupGroup, BackupType

    group = BackupGroup(BackupType.parse(backup_type), backup_id or socket.gethostname())
    specs = [ArchiveSpec.parse(s) for s in sources]
    req = BackupRequest(namespace=parse_ns(ns), group=group,
                        backup_time=backup_time or int(time.time()), archives=specs,
                        owner=Authid.parse(local_authid()), crypt=load_crypt(keyfile), wait=wait,
                        chunk_size=chunk_size * 1024)
    ds = open_datastore(repository)
    result = run_backup(ds, req, make_reporter())
    summary = {
        "snapshot": str(result.snapshot), "ns": str(result.namespace),
        "backup-time": result.snapshot.time, "duration": round(result.seconds, 3),
        "archives": [{"filename": a.name, "size": a.size, "entries": a.entries,
                      "reused-bytes": a.bytes_reused} for a in result.archives],
        "chunk_upload_stats": result.upload.as_manifest_stats(),
    }
    if output_format is not OutputFormat.TEXT:
        emit(summary, output_format)
        return
    stats = result.upload
    typer.echo(f"snapshot {result.snapshot} in namespace '{result.namespace.display()}' "
               f"({result.seconds:.2f} s)")
    for a in result.archives:
        typer.echo(f"  {a.name}: {human_bytes(a.size)}, reused {human_bytes(a.bytes_reused)}")
    reused = sum(a.chunks_reused for a in result.archives)
    typer.echo(f"  chunks: {stats.count - stats.duplicates} new, {stats.duplicates} already "
               f"stored, {reused} referenced unread; "
               f"{human_bytes(stats.compressed_size)} written")


@app.command("restore")
@one_line_errors
def restore(
    snapshot: Annotated[str, typer.Argument(help="type/id/YYYY-MM-DDTHH:MM:SSZ")],
    archive: Annotated[str, typer.Argument(help="Archive name, e.g. root.tar")],
    target: Annotated[str, typer.Argument(help="Target directory, file, or - for stdout")],
    repository: Repository = None,
    ns: Namespace = "",
    keyfile: KeyFile = None,
    wait: Wait = 0.0,
) -> None:
    """Restore one archive of a snapshot."""
    from chunkyard.cli.progress import make_reporter
    from chunkyard.client.restore import RestoreRequest, run_restore
    from chunkyard.names import BackupDir

    req = RestoreRequest(namespace=parse_ns(ns), snapshot=BackupDir.parse(snapshot),
                         archive=archive,
                         target=target, crypt=load_crypt(keyfile), wait=wait)
    ds = open_datastore(repository)
    result = run_restore(ds, req, make_reporter(None if target != "-" else False))
    if target != "-":
        typer.echo(f"restored {result.archive}: {human_bytes(result.bytes)}", err=True)


# -- listing -----------------------------------------------------------------------------
@app.command("list")
@one_line_errors
@with_target
def list_groups(target: Target, ns: Namespace = "",
                output_format: Format = OutputFormat.TEXT) -> None:
    """List backup groups of a namespace."""
    rows = target.groups(parse_ns(ns))
    if output_format is OutputFormat.TEXT:
        for row in rows:
            row["group"] = f"{row['backup-type']}/{row['backup-id']}"
            row["last"] = _time_str(row["last-backup"])
    emit(rows, output_format, [("group", "group"), ("last", "last snapshot"),
                               ("backup-count", "count"), ("owner", "owner"),
                               ("files", "files")])


@snapshot_app.command("list")
@one_line_errors
@with_target
def snapshot_list(target: Target,
                  group: Annotated[str | None, typer.Argument(help="type/id")] = None,
                  ns: Namespace = "", output_format: Format = OutputFormat.TEXT) -> None:
    """List snapshots (of one group, or of the whole namespace)."""
    rows = target.snapshots(parse_ns(ns), parse_group(group) if group else None)
    if output_format is OutputFormat.TEXT:
        for row in rows:
            row["snapshot"] = (f"{row['backup-type']}/{row['backup-id']}/"
                               f"{_time_str(row['backup-time'])}")
            row["size-h"] = human_bytes(row["size"]) if row.get("size") is not None else ""
            row["filenames"] = [f["filename"] for f in row["files"]]
    emit(rows, output_format, [("snapshot", "snapshot"), ("size-h", "size"),
                               ("protected", "protected"), ("filenames", "files")])


def _time_str(epoch: int | None) -> str:
    from chunkyard.names import epoch_to_rfc3339

    return epoch_to_rfc3339(epoch) if epoch else ""


# -- namespaces --------------------------------------------------------------------------
@namespace_app.command("list")
@one_line_errors
@with_target
def namespace_list(target: Target, ns: Namespace = "",
                   max_depth: Annotated[int | None,
                                        typer.Option("--max-depth", min=0, max=7)] = None,
                   output_format: Format = OutputFormat.TEXT) -> None:
    """List a namespace and its descendants (PBS: the parent itself comes first)."""
    rows = target.namespaces(parse_ns(ns), 7 if max_depth is None else max_depth)
    if output_format is OutputFormat.TEXT:
        rows = [{"ns": row["ns"] or "<root>"} for row in rows]
    emit(rows, output_format, [("ns", "namespace")])


@namespace_app.command("create")
@one_line_errors
@with_target
def namespace_create(target: Target,
                     name: Annotated[str, typer.Argument(help="Full namespace path, e.g. a/b")],
                     wait: Wait = 0.0) -> None:
    """Create a namespace; its parent must exist."""
    created = target.create_namespace(parse_ns(name), wait)
    typer.echo(f"created namespace '{created}'")


@namespace_app.command("delete")
@one_line_errors
@with_target
def namespace_delete(
    target: Target,
    name: Annotated[str, typer.Argument(help="Namespace to delete, e.g. a/b")],
    delete_groups: Annotated[bool, typer.Option(
        "--delete-groups", help="Also delete the groups inside (default: only empty ones).")
    ] = False,
    error_on_protected: Annotated[bool, typer.Option(
        "--error-on-protected/--no-error-on-protected",
        help="Fail when protected snapshots (or groups) had to be kept.")] = True,
    wait: Wait = 0.0, output_format: Format = OutputFormat.TEXT,
) -> None:
    """Delete a namespace and its descendants, deepest first."""
    stats = target.delete_namespace(parse_ns(name), delete_groups, error_on_protected, wait)
    _report_removal(stats, output_format)


def _report_removal(stats: dict[str, int], output_format: OutputFormat) -> None:
    if output_format is not OutputFormat.TEXT:
        emit(stats, output_format)
        return
    typer.echo(f"removed {stats['removed-groups']} group(s), "
               f"{stats['removed-snapshots']} snapshot(s); kept "
               f"{stats['protected-snapshots']} protected snapshot(s)")


# -- groups ------------------------------------------------------------------------------
@group_app.command("delete")
@one_line_errors
@with_target
def group_delete(
    target: Target, group: GroupArg, ns: Namespace = "",
    error_on_protected: Annotated[bool, typer.Option(
        "--error-on-protected/--no-error-on-protected")] = True,
    wait: Wait = 0.0, output_format: Format = OutputFormat.TEXT,
) -> None:
    """Delete a group and its unprotected snapshots."""
    stats = target.delete_group(parse_ns(ns), parse_group(group), error_on_protected, wait)
    _report_removal(stats, output_format)


@group_app.command("change-owner")
@one_line_errors
@with_target
def group_change_owner(
    target: Target, group: GroupArg,
    new_owner: Annotated[str, typer.Argument(help="user@realm or user@realm!token")],
    ns: Namespace = "", wait: Wait = 0.0,
) -> None:
    """Change the owner of a group."""
    target.change_owner(parse_ns(ns), parse_group(group), new_owner, wait)


group_notes_app = typer.Typer(no_args_is_help=True, help="Show or update group notes.")
group_app.add_typer(group_notes_app, name="notes")


@group_notes_app.command("show")
@one_line_errors
@with_target
def group_notes_show(target: Target, group: GroupArg, ns: Namespace = "",
                     output_format: Format = OutputFormat.TEXT) -> None:
    """Print a group's notes."""
    emit(target.group_notes(parse_ns(ns), parse_group(group)), output_format)


@group_notes_app.command("update")
@one_line_errors
@with_target
def group_notes_update(target: Target, group: GroupArg, notes: str, ns: Namespace = "",
                       wait: Wait = 0.0) -> None:
    """Replace a group's notes."""
    target.set_group_notes(parse_ns(ns), parse_group(group), notes, wait)


# -- snapshots ---------------------------------------------------------------------------
@snapshot_app.command("forget")
@one_line_errors
@with_target
def snapshot_forget(target: Target, snapshot: SnapshotArg, ns: Namespace = "",
                    wait: Wait = 0.0) -> None:
    """Delete a snapshot (refused while it is protected or in use)."""
    target.forget(parse_ns(ns), parse_snapshot(snapshot), wait)


protected_app = typer.Typer(no_args_is_help=True, help="Show or set snapshot protection.")
snapshot_app.add_typer(protected_app, name="protected")


@protected_app.command("show")
@one_line_errors
@with_target
def snapshot_protected_show(target: Target, snapshot: SnapshotArg, ns: Namespace = "",
                            output_format: Format = OutputFormat.TEXT) -> None:
    """Print whether a snapshot is protected."""
    value = target.protected(parse_ns(ns), parse_snapshot(snapshot))
    emit(value if output_format is not OutputFormat.TEXT else str(value).lower(), output_format)


@protected_app.command("update")
@one_line_errors
@with_target
def snapshot_protected_update(
    target: Target, snapshot: SnapshotArg,
    protected: Annotated[str, typer.Argument(help="true or false")],
    ns: Namespace = "", wait: Wait = 0.0,
) -> None:
    """Protect a snapshot from prune and forget, or lift the protection."""
    target.set_protected(parse_ns(ns), parse_snapshot(snapshot), parse_boolean(protected), wait)


snapshot_notes_app = typer.Typer(no_args_is_help=True, help="Show or update snapshot notes.")
snapshot_app.add_typer(snapshot_notes_app, name="notes")


@snapshot_notes_app.command("show")
@one_line_errors
@with_target
def snapshot_notes_show(target: Target, snapshot: SnapshotArg, ns: Namespace = "",
                        output_format: Format = OutputFormat.TEXT) -> None:
    """Print a snapshot's notes (the manifest's unprotected.notes)."""
    emit(target.notes(parse_ns(ns), parse_snapshot(snapshot)), output_format)


@snapshot_notes_app.command("update")
@one_line_errors
@with_target
def snapshot_notes_update(target: Target, snapshot: SnapshotArg, notes: str,
                          ns: Namespace = "", wait: Wait = 0.0) -> None:
    """Replace a snapshot's notes."""
    target.set_notes(parse_ns(ns), parse_snapshot(snapshot), notes, wait)


# -- keys --------------------------------------------------------------------------------
@key_app.command("create")
@one_line_errors
def key_create(path: str,
               kdf: Annotated[str, typer.Option("--kdf", help="scrypt or none")] = "scrypt",
               ) -> None:
    """Create a new encryption key file (PBS format)."""
    from chunkyard.formats.keyfile import create_key_file

    if kdf not in ("scrypt", "none"):
        raise UsageError(f"--kdf must be scrypt or none, not {kdf!r}")
    password = key_password(confirm=True) if kdf == "scrypt" else None
    if kdf == "scrypt" and not password:
        raise UsageError("a password is needed for --kdf scrypt "
                         "(set CHUNKYARD_ENCRYPTION_PASSWORD or use a terminal)")
    crypt = create_key_file(path, password, kdf=kdf)
    typer.echo(f"created key {path} with fingerprint {crypt.fingerprint_str()}")


# -- the embedded default (make run) ------------------------------------------------------
@app.command("demo")
@one_line_errors
def demo(path: Annotated[str, typer.Option("--path")] = "./chunkyard-data") -> None:
    """Create a datastore, back up a sample tree into a namespace, restore and show it."""
    from chunkyard.cli.demo import run_demo

    run_demo(os.path.abspath(path))


def main() -> None:
    """Run the CLI; usage errors, like every other error, are one `Error: ...` line."""
    import click

    # A short-lived command that builds large acyclic structures (tree walks, the metadata
    # cache): the cyclic collector only costs time here (measured: ~0.1 s per 20k files).
    gc.disable()
    # Library warnings (e.g. an interrupted move completed on open) reach the user as lines.
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        result = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:  # the help was printed already
        raise SystemExit(0) from None
    except click.UsageError as e:
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        sys.stderr.write(f"Error: {e.format_message()}{hint}\n")
        raise SystemExit(2) from None
    except click.ClickException as e:
        sys.stderr.write(f"Error: {e.format_message()}\n")
        raise SystemExit(e.exit_code) from None
    except click.Abort:
        sys.stderr.write("Error: aborted\n")
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
