"""How long-running client work reports progress; the CLI renders it, tests can record it."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    # True when the reporter shows an ETA, so an unknown total is worth estimating
    wants_estimate: bool

    def start(self, label: str, total: int | None) -> None:
        """Begin a phase of `total` bytes (None: unknown, e.g. a first backup)."""

    def set_total(self, total: int) -> None:
        """A (better) estimate of the current phase's size; may come from another thread."""

    def advance(self, nbytes: int) -> None: ...

    def finish(self) -> None: ...

    def warn(self, message: str) -> None: ...


class NullReporter:
    """Reports nothing; warnings are kept so callers can still show or test them."""

    wants_estimate = False

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def start(self, label: str, total: int | None) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)
