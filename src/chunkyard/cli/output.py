"""Render results as PBS's client does: `--output-format text|json|json-pretty`."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import Any


class OutputFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"
    JSON_PRETTY = "json-pretty"


def emit(data: Any, fmt: OutputFormat, columns: Sequence[tuple[str, str]] = ()) -> None:
    """Print `data` (a list of row dicts for tables) in the requested format."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
        return
    if fmt is OutputFormat.JSON_PRETTY:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    if isinstance(data, list):
        _table(data, columns)
    elif data is not None:
        sys.stdout.write(f"{data}\n")


def _table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=True, header_style="bold")
    for _, title in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for key, _ in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(200, console.width))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
