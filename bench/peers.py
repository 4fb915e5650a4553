"""Runners for chunkyard and its peers (restic, borg) with the same three measurements.

Each measurement is the wall-clock time of one whole command as a subprocess (process start
included): the first backup into a fresh repository, a re-backup of the unchanged tree, and a
full restore into an empty directory. Setting up a repository, listing snapshots and checking
the restore are not timed. A failing tool raises ToolError and is reported, never fatal.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import treecmp

MEASUREMENTS = ("first backup", "unchanged backup", "restore")
STEP_TIMEOUT = 1800  # seconds; a hung tool must not hang the whole benchmark


class ToolError(Exception):
    """A tool is missing, exited non-zero, or restored the wrong bytes."""


@dataclass
class Command:
    argv: list[str]
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def display(self) -> str:
        prefix = f"(cd {self.cwd} && " if self.cwd else ""
        return prefix + shlex.join(self.argv) + (")" if self.cwd else "")


def run(cmd: Command, log: Path) -> float:
    """Run `cmd`, its output going to `log`; return its wall-clock seconds or raise ToolError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **cmd.env}
    with log.open("wb") as out:
        out.write(f"$ {cmd.display()}\n".encode())
        out.flush()
        # Write back what earlier steps left dirty (read caches stay hot), so that one
        # command's writes are not billed to the next one.
        os.sync()
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd.argv,
                cwd=cmd.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=STEP_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ToolError(f"{cmd.argv[0]}: not found ({exc.strerror})") from None
        except subprocess.TimeoutExpired:
            raise ToolError(f"`{cmd.display()}` did not finish in {STEP_TIMEOUT} s") from None
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()[1:]  # past the "$ cmd"
        tail = " | ".join(line.strip() for line in lines[-6:])
        raise ToolError(f"`{cmd.display()}` exited with {proc.returncode} (log {log}): {tail}")
    return elapsed


def run_stdout(cmd: Command, log: Path) -> str:
    """Run `cmd` untimed and return its stdout alone (stderr goes to `log`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            cmd.argv,
            cwd=cmd.cwd,
            env={**os.environ, **cmd.env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ToolError(f"{cmd.argv[0]}: not found ({exc.strerror})") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"`{cmd.display()}` did not finish in {STEP_TIMEOUT} s") from None
    log.write_text(f"$ {cmd.display()}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-6:])
        raise ToolError(f"`{cmd.display()}` exited with {proc.returncode} (log {log}): {tail}")
    return proc.stdout


def du_bytes(path: Path) -> int:
    """Disk usage of `path` in bytes, as `du` counts it (allocated blocks)."""
    out = subprocess.run(
        ["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[0])


class Tool(ABC):
    """One backup tool; commands are built here, run and timed by `measure_once`."""

    name: str
    notes: str  # settings that matter when comparing (encryption, compression, chunk size)

    def __init__(self, home: Path) -> None:
        self.home = home  # this tool's private state (caches, config) under bench/work

    @abstractmethod
    def executable(self) -> str: ...

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def init(self, repo: Path) -> Command: ...

    @abstractmethod
    def backup(self, repo: Path, data: Path, index: int, backup_time: int) -> Command: ...

    def before_restore(self, repo: Path, log: Path) -> None:  # noqa: B027 (optional hook)
        """Untimed work a restore needs first (finding the snapshot name)."""

    @abstractmethod
    def restore(self, repo: Path, target: Path) -> Command: ...

    def prepare_target(self, target: Path) -> None:
        """Make the empty restore target (some tools want it to exist, some to be absent)."""
        target.mkdir(parents=True)

    def reset_state(self) -> None:
        """Drop caches left by the previous repetition's repository (not timed)."""
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)


def _version_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else f"unknown (exit {out.returncode})"


class Restic(Tool):
    name = "restic"
    notes = (
        "encryption always on (AES-256-CTR + Poly1305, cannot be disabled; password from "
        "RESTIC_PASSWORD), repository format v2 with default compression `auto` (zstd), "
        "content-defined chunks of ~1 MiB average"
    )

    def executable(self) -> str:
        return shutil.which("restic") or "restic"

    def _env(self) -> dict[str, str]:
        return {"RESTIC_PASSWORD": "chunkyard-bench", "RESTIC_CACHE_DIR": str(self.home / "cache")}

    def version(self) -> str:
        return _version_line([self.executable(), "version"])

    def init(self, repo: Path) -> Command:
        return Command([self.executable(), "init", "--repo", str(repo)], env=self._env())

    def backup(self, repo: Path, data: Path, index: int, backup_time: int) -> Command:
        return Command(
            [self.executable(), "--repo", str(repo), "backup", str(data)], env=self._env()
        )

    def restore(self, repo: Path, target: Path) -> Command:
        return Command(
            [self.executable(), "--repo", str(repo), "restore", "latest", "--target", str(target)],
            env=self._env(),
        )


class Borg(Tool):
    name = "borg"
    notes = (
        "`--encryption=none`, default compression lz4, default chunker (buzhash, ~2 MiB "
        "average); `borg create` runs in the data's parent with a relative path and "
        "`borg extract` in the empty target, so archives hold `data/...`"
    )
    archives = ("first", "unchanged")

    def executable(self) -> str:
        return shutil.which("borg") or "borg"

    def _env(self) -> dict[str, str]:
        return {
            "BORG_BASE_DIR": str(self.home),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def version(self) -> str:
        return _version_line([self.executable(), "--version"])

    def init(self, repo: Path) -> Command:
        return Command([self.executable(), "init", "--encryption=none", str(repo)], env=self._env())

    def backup(self, repo: Path, data: Path, index: int, backup_time: int) -> Command:
        return Command(
            [self.executable(), "create", f"{repo}::{self.archives[index]}", data.name],
            cwd=data.parent,
            env=self._env(),
        )

    def restore(self, repo: Path, target: Path) -> Command:
        return Command(
            [self.executable(), "extract", f"{repo}::{self.archives[-1]}"],
            cwd=target,
            env=self._env(),
        )


class Chunkyard(Tool):
    name = "chunkyard"
    notes = (
        "unencrypted PBS-format datastore; `datastore create` (65536 chunk dirs) is set-up, "
        "not timed; archive `data.tar` of the data directory, backup id `bench`"
    )

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.snapshot: str | None = None

    def executable(self) -> str:
        beside = Path(sys.executable).parent / "chunkyard"
        return str(beside) if beside.exists() else (shutil.which("chunkyard") or "chunkyard")

    def version(self) -> str:
        try:
            from importlib.metadata import version

            ver = version("chunkyard")
        except Exception:  # not installed: the CLI run will report it
            ver = "not installed"
        repo = Path(__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return f"chunkyard {ver} (git {rev or '?'}{', uncommitted changes' if dirty else ''})"

    def init(self, repo: Path) -> Command:
        return Command([self.executable(), "datastore", "create", str(repo)])

    def backup(self, repo: Path, data: Path, index: int, backup_time: int) -> Command:
        return Command(
            [
                self.executable(),
                "backup",
                f"data.tar:{data}",
                "--repository",
                str(repo),
                "--backup-id",
                "bench",
                "--backup-time",
                str(backup_time),
            ]
        )

    def before_restore(self, repo: Path, log: Path) -> None:
        cmd = Command(
            [
                self.executable(),
                "snapshot",
                "list",
                "--repository",
                str(repo),
                "--output-format",
                "json",
            ]
        )
        output = run_stdout(cmd, log)
        try:
            listed = json.loads(output)
            times = [
                int(s["backup-time"])
                for s in listed
                if s.get("backup-type") == "host" and s.get("backup-id") == "bench"
            ]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ToolError(
                f"`{cmd.display()}` printed no snapshot list ({exc}); log {log}"
            ) from None
        if len(times) != 2:
            raise ToolError(f"expected 2 snapshots of host/bench after two backups, listed {times}")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(times)))
        self.snapshot = f"host/bench/{stamp}"

    def prepare_target(self, target: Path) -> None:
        # Restoring into a path that does not exist yet is the common case for a PBS-style
        # client; its parent exists and the directory is created empty by the restore.
        target.parent.mkdir(parents=True, exist_ok=True)

    def restore(self, repo: Path, target: Path) -> Command:
        if self.snapshot is None:
            raise ToolError("no snapshot to restore (snapshot list was not run)")
        return Command(
            [
                self.executable(),
                "restore",
                self.snapshot,
                "data.tar",
                str(target),
                "--repository",
                str(repo),
            ]
        )


TOOLS: dict[str, type[Tool]] = {"chunkyard": Chunkyard, "restic": Restic, "borg": Borg}


@dataclass
class ToolResult:
    """All repetitions of one tool; `error` is set once the tool failed and was dropped."""

    name: str
    version: str = ""
    notes: str = ""
    times: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASUREMENTS})
    repo_bytes: list[int] = field(default_factory=list)
    error: str | None = None


def measure_once(
    tool: Tool,
    data: Path,
    source: treecmp.TreeSummary,
    work: Path,
    rep: int,
    result: ToolResult,
) -> None:
    """One repetition: fresh repository and target, three timed commands, checked restore."""
    base = work / "runs" / tool.name
    logs = work / "logs" / tool.name / f"run{rep}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    repo, target = base / "repo", base / "restore"
    tool.reset_state()
    try:
        run(tool.init(repo), logs / "0-init.log")
        now = int(time.time())
        timed: dict[str, float] = {}
        timed["first backup"] = run(tool.backup(repo, data, 0, now), logs / "1-backup.log")
        repo_size = du_bytes(repo)
        timed["unchanged backup"] = run(
            tool.backup(repo, data, 1, now + 1), logs / "2-backup-unchanged.log"
        )
        tool.before_restore(repo, logs / "3-list.log")
        tool.prepare_target(target)
        timed["restore"] = run(tool.restore(repo, target), logs / "4-restore.log")
        try:
            root = treecmp.locate_restored_root(target, data, source)
            treecmp.compare(source, root)
        except treecmp.TreeMismatch as exc:
            raise ToolError(f"RESTORE VERIFICATION FAILED: {exc}") from None
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for m in MEASUREMENTS:
        result.times[m].append(timed[m])
    result.repo_bytes.append(repo_size)
