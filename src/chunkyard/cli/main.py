"""The `chunkyard` command line, following proxmox-backup-client's names and conventions."""

from __future__ import annotations

import os
import socket
import time
from typing import Annotated, Any

import typer

from chunkyard.cli.context import (
    UsageError,
    key_password,
    local_authid,
    one_line_errors,
    repository_path,
)
from chunkyard.cli.output import OutputFormat, emit, human_bytes

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

Repository = Annotated[str | None, typer.Option(
    "--repository", help="Datastore directory (or $CHUNKYARD_REPOSITORY).")]
Namespace = Annotated[str, typer.Option("--ns", help="Namespace, e.g. a/b (default: root).")]
Format = Annotated[OutputFormat, typer.Option("--output-format", help="text, json or json-pretty.")]
Wait = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for busy locks.")]
KeyFile = Annotated[str | None, typer.Option("--keyfile", help="Encryption key file.")]


def _open(repository: str | None) -> Any:
    from chunkyard.datastore.datastore import Datastore

    return Datastore.open(repository_path(repository))


def _ns(text: str) -> Any:
    from chunkyard.names import BackupNamespace

    return BackupNamespace.parse(text)


def _crypt(keyfile: str | None) -> Any:
    if keyfile is None:
        return None
    from chunkyard.formats.keyfile import load_key_file

    return load_key_file(keyfile, key_password())


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
    wait: Wait = 0.0,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Back up directories, images and small files into a new snapshot."""
    from chunkyard.cli.progress import make_reporter
    from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
    from chunkyard.names import Authid, BackupGroup, BackupType

    group = BackupGroup(BackupType.parse(backup_type), backup_id or socket.gethostname())
    specs = [ArchiveSpec.parse(s) for s in sources]
    req = BackupRequest(namespace=_ns(ns), group=group,
                        backup_time=backup_time or int(time.time()), archives=specs,
                        owner=Authid.parse(local_authid()), crypt=_crypt(keyfile), wait=wait)
    ds = _open(repository)
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
    typer.echo(f"  chunks: {stats.count} new or changed, {stats.duplicates} already stored, "
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

    req = RestoreRequest(namespace=_ns(ns), snapshot=BackupDir.parse(snapshot), archive=archive,
                         target=target, crypt=_crypt(keyfile), wait=wait)
    ds = _open(repository)
    result = run_restore(ds, req, make_reporter(None if target != "-" else False))
    if target != "-":
        typer.echo(f"restored {result.archive}: {human_bytes(result.bytes)}", err=True)


# -- listing -----------------------------------------------------------------------------
@app.command("list")
@one_line_errors
def list_groups(repository: Repository = None, ns: Namespace = "",
                output_format: Format = OutputFormat.TEXT) -> None:
    """List backup groups of a namespace."""
    from chunkyard.datastore.queries import group_list

    rows = group_list(_open(repository), _ns(ns))
    if output_format is OutputFormat.TEXT:
        for row in rows:
            row["group"] = f"{row['backup-type']}/{row['backup-id']}"
            row["last"] = _time_str(row["last-backup"])
    emit(rows, output_format, [("group", "group"), ("last", "last snapshot"),
                               ("backup-count", "count"), ("owner", "owner"),
                               ("files", "files")])


@snapshot_app.command("list")
@one_line_errors
def snapshot_list(group: Annotated[str | None, typer.Argument(help="type/id")] = None,
                  repository: Repository = None, ns: Namespace = "",
                  output_format: Format = OutputFormat.TEXT) -> None:
    """List snapshots (of one group, or of the whole namespace)."""
    from chunkyard.datastore.queries import snapshot_list as query
    from chunkyard.names import BackupGroup

    rows = query(_open(repository), _ns(ns), BackupGroup.parse(group) if group else None)
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
def namespace_list(repository: Repository = None, ns: Namespace = "",
                   max_depth: Annotated[int | None,
                                        typer.Option("--max-depth", min=0, max=7)] = None,
                   output_format: Format = OutputFormat.TEXT) -> None:
    """List a namespace and its descendants (PBS: the parent itself comes first)."""
    from chunkyard.datastore.queries import namespace_list as query

    rows = query(_open(repository), _ns(ns), 7 if max_depth is None else max_depth)
    if output_format is OutputFormat.TEXT:
        rows = [{"ns": row["ns"] or "<root>"} for row in rows]
    emit(rows, output_format, [("ns", "namespace")])


@namespace_app.command("create")
@one_line_errors
def namespace_create(name: Annotated[str, typer.Argument(help="Full namespace path, e.g. a/b")],
                     repository: Repository = None, wait: Wait = 0.0) -> None:
    """Create a namespace; its parent must exist."""
    from chunkyard.datastore.namespaces import create_namespace

    created = create_namespace(_open(repository), _ns(name), wait=wait)
    typer.echo(f"created namespace '{created}'")


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
    app()


if __name__ == "__main__":
    main()
