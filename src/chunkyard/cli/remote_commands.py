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
from chunkyard.cli.target import Target, pbs_password, with_target

task_app = typer.Typer(no_args_is_help=True, help="List server tasks and show their logs.")


def register(app: typer.Typer) -> None:
    app.command("login")(one_line_errors(login))
    app.add_typer(task_app, name="task")
    task_app.command("list")(one_line_errors(with_target(task_list)))
    task_app.command("log")(one_line_errors(with_target(task_log)))


def login(
    server: Annotated[str | None, typer.Option(
        "--server", help="https://HOST[:8007] (default: the host of $PBS_REPOSITORY)")] = None,
    user: Annotated[str | None, typer.Option(
        "--user", help="user@realm, e.g. admin@pbs (default: the user of $PBS_REPOSITORY, "
                       "root@pam if it names none)")] = None,
    fingerprint: Annotated[str | None, typer.Option(
        "--fingerprint", help="The server certificate's SHA-256 fingerprint (or "
                              "$PBS_FINGERPRINT).")] = None,
) -> None:
    """Log in with a password ($CHUNKYARD_PASSWORD, $PBS_PASSWORD or asked) and store the
    ticket (valid two hours; renewed by every command that uses it after one hour)."""
    from chunkyard.client.api import PbsRepository, RemoteError, ServerUrl
    from chunkyard.client.api import login as api_login

    if server is None:
        from_env = os.environ.get("PBS_REPOSITORY")
        if not from_env:
            raise UsageError("--server is required (or set PBS_REPOSITORY)")
        try:
            repo = PbsRepository.parse(from_env)
        except RemoteError as err:
            raise UsageError(f"$PBS_REPOSITORY: {err}") from None
        if repo.host is None:
            raise UsageError(f"--server is required (PBS_REPOSITORY {from_env!r} names no "
                             "host)")
        url, user = repo.server(), user or repo.user
    else:
        url = ServerUrl.parse(server)
    if not user:
        raise UsageError("--user is required with --server")
    if "!" in user:
        raise UsageError(f"{user} is an API token: tokens do not log in (use --token, or "
                         "PBS_PASSWORD with a repository naming the token)")
    password = os.environ.get("CHUNKYARD_PASSWORD")
    if password is None:
        password = pbs_password()
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password: set CHUNKYARD_PASSWORD (or PBS_PASSWORD) or use "
                             "a terminal")
        password = getpass.getpass(f"Password for {user}: ")
    path = api_login(url, user, password, fingerprint or os.environ.get("PBS_FINGERPRINT"))
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
