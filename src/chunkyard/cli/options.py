"""CLI options and argument parsers shared by the command modules."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chunkyard.cli.context import UsageError, key_password, repository_path
from chunkyard.cli.output import OutputFormat

Repository = Annotated[str | None, typer.Option(
    "--repository", help="Datastore directory (or $CHUNKYARD_REPOSITORY).")]
Namespace = Annotated[str, typer.Option("--ns", help="Namespace, e.g. a/b (default: root).")]
Format = Annotated[OutputFormat, typer.Option("--output-format", help="text, json or json-pretty.")]
Wait = Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for busy locks.")]
KeyFile = Annotated[str | None, typer.Option("--keyfile", help="Encryption key file.")]


def open_datastore(repository: str | None) -> Any:
    from chunkyard.datastore.datastore import Datastore

    return Datastore.open(repository_path(repository))


def parse_ns(text: str) -> Any:
    from chunkyard.names import BackupNamespace

    return BackupNamespace.parse(text)


def load_crypt(keyfile: str | None) -> Any:
    if keyfile is None:
        return None
    from chunkyard.formats.keyfile import load_key_file

    return load_key_file(keyfile, key_password())


GroupArg = Annotated[str, typer.Argument(help="Backup group, type/id")]


def parse_group(text: str) -> Any:
    from chunkyard.names import BackupGroup

    return BackupGroup.parse(text)


SnapshotArg = Annotated[str, typer.Argument(help="Snapshot, type/id/YYYY-MM-DDTHH:MM:SSZ")]


def parse_snapshot(text: str) -> Any:
    from chunkyard.names import BackupDir

    return BackupDir.parse(text)


def parse_boolean(text: str) -> bool:
    """PBS's parse_boolean: 1/on/yes/true and 0/off/no/false, any case."""
    value = text.strip().lower()
    if value in ("1", "on", "yes", "true"):
        return True
    if value in ("0", "off", "no", "false"):
        return False
    raise UsageError(f"{text!r} is not a boolean (use true or false)")
