"""Fault-injection points for crash tests, driven by the environment.

`CHUNKYARD_FAULT=<point>[@<n>][:<action>]` (several separated by commas) makes the process
act when it reaches `<point>` for the n-th time (default 1):

- `kill`: SIGKILL itself, as a power cut or `kill -9` would (the default);
- `stop`: SIGSTOP itself, so a test can inspect or race the frozen process, then SIGCONT it.

Without the variable a point costs one dict lookup. The points are named in the modules
that call `fault_point`; the crash tests enumerate them from `KNOWN_POINTS`.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENV = "CHUNKYARD_FAULT"

# Every point a caller may name, so tests can iterate over them and typos fail loudly.
KNOWN_POINTS = (
    "move.locked",           # a move holds its locks and has a plan; nothing changed yet
    "move.journaled",        # the GC journal has the destinations
    "move.intent-written",   # the intent log is durable; no rename yet
    "move.step",             # after each step of the plan (use @n for the n-th)
    "move.synced",           # every step done and synced
    "move.references",       # references rewritten
    "move.cleaned",          # stale lock files unlinked; the intent log is still there
    "gc.listed",             # GC walked the tree for index files; nothing marked yet
    "gc.group-listed",       # GC listed a group's snapshots (@n: the n-th group)
    "gc.marked",             # phase 1 done, journal drained; the sweep is next
    "gc.remove-candidate",   # the sweep judged a chunk unused (@n: the n-th), not yet removed
)


@dataclass
class _Fault:
    nth: int
    action: str
    seen: int = 0


_parsed: tuple[str | None, dict[str, _Fault]] = (None, {})


def _faults() -> dict[str, _Fault]:
    global _parsed
    raw = os.environ.get(ENV)
    if raw == _parsed[0]:
        return _parsed[1]
    faults: dict[str, _Fault] = {}
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        point, _, action = item.partition(":")
        point, _, nth = point.partition("@")
        if point not in KNOWN_POINTS or action not in ("", "kill", "stop") or (
            nth and not nth.isdigit()
        ):
            raise ValueError(f"{ENV}: cannot parse {item!r}")
        faults[point] = _Fault(int(nth or 1), action or "kill")
    _parsed = (raw, faults)
    return faults


def fault_point(name: str) -> None:
    """Act if `CHUNKYARD_FAULT` names this point and its count is reached."""
    faults = _faults()
    if not faults:
        return
    fault = faults.get(name)
    if fault is None:
        return
    fault.seen += 1
    if fault.seen != fault.nth:
        return
    os.kill(os.getpid(), signal.SIGKILL if fault.action == "kill" else signal.SIGSTOP)
