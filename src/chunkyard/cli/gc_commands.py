"""`chunkyard gc`: garbage collection with progress and PBS's summary (spec §8.6)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from chunkyard.cli.context import local_authid, one_line_errors
from chunkyard.cli.options import Format, parse_boolean
from chunkyard.cli.output import OutputFormat, emit
from chunkyard.cli.target import Target, with_target


def register(app: typer.Typer) -> None:
    app.command("gc")(one_line_errors(with_target(gc)))


def gc(
    target: Target,
    atime_safety_check: Annotated[str, typer.Option(
        "--atime-safety-check", metavar="BOOL",
        help="Check that touching a chunk updates its atime first (default: true).")] = "true",
    atime_cutoff: Annotated[int, typer.Option(
        "--atime-cutoff", min=1, metavar="MINUTES",
        help="Chunks untouched for this long are removed (default: 1445 = 24 h 5 min).")
    ] = 1445,
    cache_capacity: Annotated[int, typer.Option(
        "--cache-capacity", min=0, help="Digests remembered while marking (default 1048576).")
    ] = 1024 * 1024,
    output_format: Format = OutputFormat.TEXT,
) -> None:
    """Remove chunks no index references any more (PBS's garbage collection).

    With --server the server's tuning options apply; the options here are local only."""
    from chunkyard.datastore.maintenance.gc import GcOptions

    options = GcOptions(parse_boolean(atime_safety_check), atime_cutoff, cache_capacity)
    target.run(lambda ds: _gc_local(ds, options, output_format),
               lambda api, prefix: str(api.post(prefix + "/gc")))


def _gc_local(ds: Any, options: Any, output_format: OutputFormat) -> None:
    from chunkyard.cli.progress import StepProgress
    from chunkyard.datastore.locking.tasks import new_task_upid
    from chunkyard.datastore.maintenance.gc import garbage_collection

    upid = str(new_task_upid("garbage_collection", ds.name, local_authid()))
    bars: dict[str, StepProgress] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            bars[phase] = StepProgress("marking" if phase == "mark" else "sweeping")
        bars[phase].update(done, total)

    try:
        status = garbage_collection(ds, upid=upid, progress=progress, options=options)
    finally:
        for bar in bars.values():
            bar.close()
    if output_format is OutputFormat.TEXT:
        typer.echo("\n".join(status.summary()))
    else:
        emit(status.to_json(), output_format)
