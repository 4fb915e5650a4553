"""Who holds a lock (rule 6): `/proc/locks` by inode, `/proc/<pid>/comm`, the task registry.

`/proc/locks` lines look like (checked on Linux 6.x)::

    1: POSIX  ADVISORY  READ 5371 fe:00:2146450 0 EOF
    2: FLOCK  ADVISORY  WRITE 5372 fe:00:2146437 0 EOF
    3: -> FLOCK  ADVISORY  WRITE 5373 fe:00:2146437 0 EOF      (a blocked waiter)

The device is `MAJOR:MINOR` in hex of the inode's superblock, the inode number is decimal.
Waiters (`->`) are not holders. On stacked filesystems (overlayfs, btrfs subvolumes) the
superblock device may differ from `st_dev`; if no line matches device and inode, lines that
match the inode alone are reported, which is right for the tmpfs lock directory and good enough
for diagnostics elsewhere. This module is only read on the failure path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from chunkyard.datastore.locking.keys import Mode
from chunkyard.datastore.locking.tasks import TaskInfo, read_tasks
from chunkyard.errors import ChunkyardError


@dataclass(frozen=True, slots=True)
class Holder:
    """One process holding a lock, with what the task registry knows about it."""

    pid: int
    program: str
    mode: Mode | None
    tasks: tuple[TaskInfo, ...] = ()

    def describe(self) -> str:
        parts = [self.program]
        if self.mode is not None:
            parts.append(str(self.mode))
        for t in self.tasks:
            op = f"operation {t.operation!r}" if t.operation else "operation unnamed"
            parts.append(f"{op} (task {t.task_id})" if t.task_id else op)
        if self.pid == os.getpid():
            parts.append("this process")
        return f"pid {self.pid} ({', '.join(parts)})"


class LockBusy(ChunkyardError):
    """A lock could not be taken before its deadline; the message names every holder."""

    def __init__(self, what: str, wanted: Mode, holders: list[Holder], waited: float) -> None:
        self.what = what
        self.wanted = wanted
        self.holders = holders
        self.waited = waited
        after = f" after waiting {waited:.1f} s" if waited > 0 else ""
        if holders:
            by = "held by " + "; ".join(h.describe() for h in holders)
        else:
            by = "held by a process that could not be identified (it may have just released it)"
        super().__init__(f"{what} is locked{after}: wanted {wanted}, {by}")

    def __reduce__(self) -> tuple[type[LockBusy], tuple[str, Mode, list[Holder], float]]:
        return (LockBusy, (self.what, self.wanted, self.holders, self.waited))


def program_name(pid: int) -> str:
    """`/proc/<pid>/comm`, else the base name of argv[0], else '?'."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip().decode(errors="replace")
        if comm:
            return comm
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        if argv0:
            return os.path.basename(argv0.decode(errors="replace"))
    except OSError:
        pass
    return "?"


@dataclass(frozen=True, slots=True)
class LockLine:
    """One held lock from `/proc/locks`."""

    kind: str  # FLOCK, POSIX, OFDLCK, ...
    mode: Mode
    pid: int
    major: int
    minor: int
    inode: int
    start: int = 0
    end: int | None = None  # None: to the end of the file (EOF)


def parse_proc_locks(text: str) -> list[LockLine]:
    """The holder lines of `/proc/locks`; malformed lines and waiters are skipped."""
    out: list[LockLine] = []
    for line in text.splitlines():
        tok = line.split()
        if len(tok) < 6 or tok[1] == "->":
            continue
        try:
            maj, minor, ino = tok[5].split(":")
            out.append(LockLine(
                kind=tok[1],
                mode=Mode.EXCLUSIVE if tok[3] == "WRITE" else Mode.SHARED,
                pid=int(tok[4]),
                major=int(maj, 16),
                minor=int(minor, 16),
                inode=int(ino),
                start=int(tok[6]) if len(tok) > 6 else 0,
                end=None if len(tok) < 8 or tok[7] == "EOF" else int(tok[7]),
            ))
        except ValueError:
            continue
    return out


def locks_on(st_dev: int, st_ino: int, proc_locks: str | None = None) -> list[LockLine]:
    """Every lock held on the inode, from `/proc/locks` (`proc_locks` replaces it in tests)."""
    if proc_locks is None:
        try:
            with open("/proc/locks") as f:
                proc_locks = f.read()
        except OSError:
            return []
    lines = parse_proc_locks(proc_locks)
    same_inode = [ln for ln in lines if ln.inode == st_ino]
    major, minor = os.major(st_dev), os.minor(st_dev)
    exact = [ln for ln in same_inode if (ln.major, ln.minor) == (major, minor)]
    return exact or same_inode


def conflicts(ln: LockLine, byte: int, wanted: Mode) -> bool:
    """Whether the held lock `ln` keeps a lock of mode `wanted` on `byte` from being taken:
    it covers the byte, and one of the two is exclusive."""
    covers = ln.start <= byte and (ln.end is None or byte <= ln.end)
    return covers and (wanted == Mode.EXCLUSIVE or ln.mode == Mode.EXCLUSIVE)


def find_holders(st_dev: int, st_ino: int, lock_dir: str | None,
                 proc_locks: str | None = None, *,
                 blocking: tuple[int, Mode] | None = None) -> list[Holder]:
    """Every process holding a lock on the inode, with program and registered tasks; with
    `blocking=(byte, mode)` only those whose lock conflicts with that one (a record lock
    file where several locks on different bytes coexist).

    `proc_locks` replaces the contents of `/proc/locks` (for tests)."""
    holders: list[Holder] = []
    seen: set[tuple[int, Mode]] = set()
    for ln in locks_on(st_dev, st_ino, proc_locks):
        if ln.pid <= 0 or (ln.pid, ln.mode) in seen:  # OFD locks show pid -1
            continue
        if blocking is not None and not conflicts(ln, *blocking):
            continue
        seen.add((ln.pid, ln.mode))
        tasks = tuple(read_tasks(lock_dir, ln.pid)) if lock_dir else ()
        holders.append(Holder(ln.pid, program_name(ln.pid), ln.mode, tasks))
    return holders
