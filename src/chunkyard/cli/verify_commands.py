"""`chunkyard verify`: PBS's verify (spec §10) of a snapshot, a group or a namespace tree."""

from __future__ import annotations

import sys
import threading
import time
from typing import Annotated, Any

import typer

from chunkyard.cli.context import UsageError, local_authid, one_line_errors
from chunkyard.cli.options import (
    Format,
    Namespace,
    parse_boolean,
    parse_ns,
)
from chunkyard.cli.output import OutputFormat, emit, human_bytes
from chunkyard.cli.target import Target, with_target
from chunkyard.errors import ChunkyardError

What = Annotated[str | None, typer.Argument(
    metavar="[TYPE/ID[/TIME]]",
    help="A group (all its snapshots, newest first) or one snapshot; default: every group of "
         "--ns and its descendants.")]


def register(app: typer.Typer) -> None:
    app.command("verify")(one_line_errors(with_target(verify)))


def verify(
    target: Target,
    what: What = None,
    ns: Namespace = "",
    max_depth: Annotated[int | None, typer.Option(
        "--max-depth", min=0, max=7,
        help="Levels below --ns to include (default: all); only without TYPE/ID.")] = None,
    ignore_verified: Annotated[str, typer.Option(
        "--ignore-verified", metavar="BOOL",
        help="Skip snapshots verified before (ok or failed) unless outdated (default: true).")
    ] = "true",
    outdated_after: Annotated[int | None, typer.Option(
        "--outdated-after", min=0, metavar="DAYS",
        help="With --ignore-verified: re-verify when the last verification is more than DAYS "
             "days old (default: never).")] = None,
    read_threads: Annotated[int, typer.Option(
        "--read-threads", min=1, max=32, help="Threads reading chunks (default: 1).")] = 1,
    verify_threads: Annotated[int, typer.Option(
        "--verify-threads", min=1, max=32,
        help="Threads decoding and hashing chunks (default: 4).")] = 4,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Verify snapshots: blobs, indexes and every chunk they reference (CRC, digest, size).

    Records the result in each manifest, renames corrupt chunks to <digest>.N.bad and exits
    non-zero if any snapshot failed. Busy snapshots are skipped and count as success.
    """
    from chunkyard.datastore.maintenance.verify import VerifyOptions
    from chunkyard.names import BackupDir, BackupGroup

    namespace = parse_ns(ns)
    parsed: BackupGroup | BackupDir | None = None
    if what is not None:
        parts = what.split("/")
        if len(parts) == 2:
            parsed = BackupGroup.parse(what)
        elif len(parts) == 3:
            parsed = BackupDir.parse(what)
        else:
            raise UsageError(f"{what!r} is neither TYPE/ID nor TYPE/ID/TIME")
        if max_depth is not None:
            raise UsageError("--max-depth applies only without TYPE/ID")
    options = VerifyOptions(ignore_verified=parse_boolean(ignore_verified),
                            outdated_after=outdated_after, read_threads=read_threads,
                            decode_threads=verify_threads)

    def remote(api: Any, prefix: str) -> str:
        params: dict[str, Any] = {
            "ns": str(namespace) or None, "max-depth": max_depth,
            "ignore-verified": options.ignore_verified, "outdated-after": outdated_after,
            "read-threads": read_threads, "verify-threads": verify_threads}
        if parsed is not None:
            snap = parsed if isinstance(parsed, BackupDir) else None
            group = snap.group if snap is not None else parsed
            assert isinstance(group, BackupGroup)
            params.update({"backup-type": group.type.value, "backup-id": group.id,
                           "backup-time": snap.time if snap is not None else None})
        return str(api.post(prefix + "/verify", params))

    target.run(lambda ds: _verify_local(ds, namespace, parsed, max_depth, options,
                                        output_format), remote)


def _verify_local(ds: Any, namespace: Any, parsed: Any, max_depth: int | None, options: Any,
                  output_format: OutputFormat) -> None:
    from chunkyard.datastore.maintenance.verify import run_verify
    from chunkyard.names import Authid

    authid = str(Authid.parse(local_authid()))
    text = output_format is OutputFormat.TEXT
    bar = _Bar() if sys.stderr.isatty() else None
    # result lines go to standard output, through the bar's console when both are the terminal
    say = bar.print if bar is not None and sys.stdout.isatty() else typer.echo

    def on_result(result: Any) -> None:
        if text:
            _print_result(result, say)

    report = run_verify(ds, authid=authid, ns=namespace, target=parsed, max_depth=max_depth,
                        options=options, progress=bar, on_result=on_result)
    if text:
        _print_summary(report)
    else:
        emit(report.as_dict(), output_format)
    if not report.success:
        failed = ", ".join(r.label() for r in report.failed)
        raise ChunkyardError(
            f"verification failed - please check the log for details ({len(report.failed)} "
            f"snapshot(s): {failed})")


def _print_result(result: Any, say: Any) -> None:
    label = result.label()
    if result.outcome == "ok":
        say(f"ok       {label}")
    elif result.outcome == "skipped":
        say(f"skipped  {label} ({result.reason})")
    else:
        say(f"FAILED   {label}")
        for line in result.errors:
            say(f"    {line}")
        for line in result.details:
            say(f"      {line}")


def _print_summary(report: Any) -> None:
    c = report.counts()
    typer.echo(f"verified {c['snapshots']} snapshot(s) in {report.seconds:.2f} s: {c['ok']} ok, "
               f"{c['failed']} failed, {c['skipped']} skipped; chunks: "
               f"{report.chunks_verified} ok, {report.chunks_corrupt} corrupt "
               f"({len(report.renamed)} renamed to .bad), {human_bytes(report.bytes_read)} read")
    typer.echo(f"task {report.upid}")


class _Bar:
    """Snapshots done of all, the read rate and the ETA on standard error (a terminal)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TextColumn("snapshots"),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=self._console, transient=True)
        self._task: Any = None
        self._lock = threading.Lock()
        self._bytes = 0
        self._started = time.monotonic()

    def print(self, line: str) -> None:
        self._console.print(line, highlight=False, markup=False, soft_wrap=True)

    def start(self, total_snapshots: int) -> None:
        self._started = time.monotonic()
        self._progress.start()
        self._task = self._progress.add_task("", total=total_snapshots, rate="")

    def snapshot_done(self, done: int, result: Any) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=done)

    def read(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            total = self._bytes
        elapsed = time.monotonic() - self._started
        if self._task is not None and elapsed > 0:
            self._progress.update(self._task, rate=f"{human_bytes(total / elapsed)}/s")

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None
