"""Progress bars with rate and ETA on standard error (only when it is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import Any

from chunkyard.client.progress import NullReporter


class RichReporter:
    """A `Reporter` drawing one rich progress bar per phase; warnings go above the bar."""

    wants_estimate = True

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(), console=self._console, transient=False)
        self._task: Any = None

    def start(self, label: str, total: int | None) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(label, total=total)

    def set_total(self, total: int) -> None:
        task = self._task
        if task is not None:
            self._progress.update(task, total=total)

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, total=task.completed)
            self._progress.stop()
            self._task = None

    def warn(self, message: str) -> None:
        self._console.print(f"[yellow]warning:[/] {message}", highlight=False)


class WarningReporter(NullReporter):
    """Non-interactive: no bars, warnings on standard error."""

    def warn(self, message: str) -> None:
        sys.stderr.write(f"warning: {message}\n")


def make_reporter(enabled: bool | None = None) -> RichReporter | WarningReporter:
    if enabled is None:
        enabled = sys.stderr.isatty()
    return RichReporter() if enabled else WarningReporter()


class StepProgress:
    """A bar counting the steps of a plan (a move's renames), with rate and ETA."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]} steps/s"),
                                  TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
        self._task: Any = None
        self._started = 0.0

    def update(self, done: int, total: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("", total=total, rate="-")
            self._started = time.monotonic()
        elapsed = time.monotonic() - self._started
        rate = f"{done / elapsed:.0f}" if elapsed > 0 else "-"
        self._progress.update(self._task, completed=done, rate=rate)

    def close(self) -> None:
        if self._task is not None:
            self._progress.stop()
