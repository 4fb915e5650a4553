"""Server-only commands: `chunkyard login`, `chunkyard task list` and `chunkyard task log`."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

from chunkyard.cli.context import UsageError, one_line_errors
from chunkyard.cli.options import Format
from chunkyard.cli.output import OutputFormat, emit
from chunkyard.cli.target import Target, with_target

task_app = typer.Typer(no_args_is_help=True, help="List server tasks and show their logs.")


def register(app: typer.Typer) -> None:
    app.command("login")(one_line_errors(login))
    app.add_typer(task_app, name="task")
    task_app.command("list")(one_line_errors(with_target(task_list)))
    task_app.command("log")(one_line_errors(with_target(task_log)))


def login(
    server: Annotated[str, typer.Option("--server", help="https://HOST[:8007]")],
    user: Annotated[str, typer.Option("--user", help="user@realm, e.g. admin@pbs")],
    fingerprint: Annotated[str | None, typer.Option(
        "--fingerprint", help="The server certificate's SHA-256 fingerprint (or "
                              "$PBS_FINGERPRINT).")] = None,
) -> None:
    """Log in with a password ($CHUNKYARD_PASSWORD or asked) and store the ticket."""
    from chunkyard.client.api import ServerUrl
    from chunkyard.client.api import login as api_login

    password = os.environ.get("CHUNKYARD_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password: set CHUNKYARD_PASSWORD or use a terminal")
        password = getpass.getpass(f"Password for {user}: ")
    path = api_login(ServerUrl.parse(server), user, password,
                     fingerprint or os.environ.get("PBS_FINGERPRINT"))
    typer.echo(f"logged in as {user}; ticket stored in {path}")


def task_list(
    target: Target,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most N tasks (0: all).")
                     ] = 50,
    running: Annotated[bool, typer.Option("--running", help="Only running tasks.")] = False,
    errors: Annotated[bool, typer.Option("--errors", help="Only failed tasks.")] = False,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """List the server's tasks (running first, then the newest)."""
    from chunkyard.client.api import NODE

    api = target.client()
    rows = api.get(f"/nodes/{NODE}/tasks", {
        "limit": limit, "running": running or None, "errors": errors or None})
    if output_format is OutputFormat.TEXT:
        for row in rows:
            row["start"] = _time(row.get("starttime"))
            row["end"] = _time(row.get("endtime"))
            row["state"] = row.get("status") or "running"
    emit(rows, output_format, [("start", "start"), ("end", "end"),
                               ("worker_type", "type"), ("user", "user"),
                               ("state", "status"), ("upid", "upid")])


def task_log(target: Target, upid: Annotated[str, typer.Argument(help="The task's UPID")]
             ) -> None:
    """Print a task's log (following it while it runs); fails if the task failed."""
    api = target.client()
    api.wait_task(upid, typer.echo)


def _time(epoch: object) -> str:
    from chunkyard.names import epoch_to_rfc3339

    return epoch_to_rfc3339(epoch) if isinstance(epoch, int) and epoch else ""
