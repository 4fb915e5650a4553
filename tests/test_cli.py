"""The `chunkyard` command line as a user runs it: every lifecycle command in a subprocess.

Checks the interface only (the semantics are in test_lifecycle.py): exit codes, JSON output
with PBS's keys (spec §11.3), and errors as ONE line `Error: ...` on stderr, exit code 1, no
traceback, including a refused lock that names its holder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.namespaces import create_namespace
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace

_SCRIPT = Path(sys.executable).with_name("chunkyard")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkyard.cli.main"]
T0 = 1_700_000_000
WEB = BackupGroup.parse("host/web")
GROUP_KEYS = {"backup-type", "backup-id", "last-backup", "backup-count", "files", "owner"}
SNAPSHOT_KEYS = {"backup-type", "backup-id", "backup-time", "files", "size", "owner",
                 "protected"}
STATS_KEYS = {"removed-groups", "protected-snapshots", "removed-snapshots"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CHUNKYARD_REPOSITORY", None)
    env["CHUNKYARD_AUTHID"] = "root@pam"
    env["COLUMNS"] = "200"
    return env


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=_env(), stdin=subprocess.DEVNULL)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, (args, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--output-format", "json"))


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit code 1, nothing on stdout, exactly one stderr line starting with 'Error: '."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


def fails(*args: str) -> str:
    return assert_one_line_error(cli(*args))


@pytest.fixture
def repo(tmp_path: Path) -> Datastore:
    return Datastore.create(str(tmp_path / "store"), sparse=True)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "hello.txt").write_text("hello\n")
    return d


def api_backup(ds: Datastore, src: Path, ns: str, group: BackupGroup, when: int) -> BackupDir:
    req = BackupRequest(namespace=BackupNamespace.parse(ns), group=group, backup_time=when,
                        archives=[ArchiveSpec.parse(f"root.tar:{src}")],
                        owner=Authid.parse("root@pam"))
    return run_backup(ds, req).snapshot


# -- namespaces ----------------------------------------------------------------------------

def test_namespace_create_list_delete(repo: Datastore) -> None:
    r = ("--repository", repo.path)
    assert "a" in ok("namespace", "create", "a", *r)
    ok("namespace", "create", "a/b", *r)
    ok("namespace", "create", "c", *r)
    assert ok_json("namespace", "list", *r) == [{"ns": ""}, {"ns": "a"}, {"ns": "a/b"},
                                                 {"ns": "c"}]
    assert ok_json("namespace", "list", "--max-depth", "0", "--ns", "a", *r) == [{"ns": "a"}]
    text = ok("namespace", "list", *r)
    assert "a/b" in text and "<root>" in text
    assert "already exists" in fails("namespace", "create", "a", *r)
    assert "parent" in fails("namespace", "create", "x/y", *r)
    assert "32" in fails("namespace", "create", "n" * 33, *r)
    stats = ok_json("namespace", "delete", "c", *r)
    assert stats == {"removed-groups": 0, "protected-snapshots": 0, "removed-snapshots": 0}
    assert "root" in fails("namespace", "delete", "", *r)
    assert ok_json("namespace", "list", *r) == [{"ns": ""}, {"ns": "a"}, {"ns": "a/b"}]


def test_namespace_delete_with_groups(repo: Datastore, src: Path) -> None:
    r = ("--repository", repo.path)
    create_namespace(repo, BackupNamespace.parse("a"))
    snap = api_backup(repo, src, "a", WEB, T0)
    api_backup(repo, src, "a", WEB, T0 + 1)
    assert "not empty" in fails("namespace", "delete", "a", *r)
    ok("snapshot", "protected", "update", str(snap), "true", "--ns", "a", *r)
    line = fails("namespace", "delete", "a", "--delete-groups", *r)
    assert "protected" in line
    stats = ok_json("namespace", "delete", "a", "--delete-groups", "--no-error-on-protected",
                    *r)
    assert set(stats) == STATS_KEYS
    assert stats == {"removed-groups": 0, "protected-snapshots": 1, "removed-snapshots": 0}
    assert [row["backup-time"] for row in ok_json("snapshot", "list", "--ns", "a", *r)] == [T0]


# -- backup, listing, groups, snapshots -----------------------------------------------------

def test_backup_and_listings_have_pbs_keys(repo: Datastore, src: Path) -> None:
    r = ("--repository", repo.path)
    create_namespace(repo, BackupNamespace.parse("a"))
    made = ok_json("backup", f"root.tar:{src}", "--ns", "a", "--backup-id", "web",
                   "--backup-time", str(T0), *r)
    assert made["snapshot"] == str(BackupDir(WEB, T0))
    api_backup(repo, src, "a", WEB, T0 + 60)
    groups = ok_json("list", "--ns", "a", *r)
    assert len(groups) == 1
    assert set(groups[0]) >= GROUP_KEYS
    g = groups[0]
    assert (g["backup-type"], g["backup-id"], g["backup-count"], g["last-backup"],
            g["owner"]) == ("host", "web", 2, T0 + 60, "root@pam")
    assert set(g["files"]) == {"root.tar.didx", "index.json.blob"}
    assert ok_json("list", *r) == []  # the root namespace holds nothing
    snaps = ok_json("snapshot", "list", "--ns", "a", *r)
    assert [s["backup-time"] for s in snaps] == [T0, T0 + 60]
    for s in snaps:
        assert set(s) >= SNAPSHOT_KEYS, s
        assert s["protected"] is False
        files = {f["filename"]: f for f in s["files"]}
        assert set(files) == {"root.tar.didx", "index.json.blob"}
        assert files["index.json.blob"]["crypt-mode"] == "none"
        assert files["root.tar.didx"]["crypt-mode"] == "none"
        assert s["size"] == sum(f["size"] for f in s["files"])
    assert ok_json("snapshot", "list", "host/web", "--ns", "a", *r) == snaps
    text = ok("snapshot", "list", "--ns", "a", *r)
    assert str(BackupDir(WEB, T0)) in text and str(BackupDir(WEB, T0 + 60)) in text
    assert "host/web" in ok("list", "--ns", "a", *r)


def test_group_commands(repo: Datastore, src: Path) -> None:
    r = ("--repository", repo.path, "--ns", "a")
    create_namespace(repo, BackupNamespace.parse("a"))
    api_backup(repo, src, "a", WEB, T0)
    api_backup(repo, src, "a", WEB, T0 + 1)
    assert ok_json("group", "notes", "show", "host/web", *r) == ""
    ok("group", "notes", "update", "host/web", "first line\nsecond", *r)
    assert ok_json("group", "notes", "show", "host/web", *r) == "first line\nsecond"
    assert ok("group", "notes", "show", "host/web", *r) == "first line\nsecond\n"
    assert ok_json("list", *r)[0]["comment"] == "first line"
    ok("group", "change-owner", "host/web", "backup@pbs!nightly", *r)
    assert ok_json("list", *r)[0]["owner"] == "backup@pbs!nightly"
    assert "auth id" in fails("group", "change-owner", "host/web", "nobody", *r)
    stats = ok_json("group", "delete", "host/web", *r)
    assert stats == {"removed-groups": 1, "protected-snapshots": 0, "removed-snapshots": 2}
    assert ok_json("list", *r) == []


def test_snapshot_commands(repo: Datastore, src: Path) -> None:
    r = ("--repository", repo.path, "--ns", "a")
    create_namespace(repo, BackupNamespace.parse("a"))
    old = str(api_backup(repo, src, "a", WEB, T0))
    new = str(api_backup(repo, src, "a", WEB, T0 + 1))
    assert ok("snapshot", "protected", "show", old, *r) == "false\n"
    ok("snapshot", "protected", "update", old, "true", *r)
    assert ok_json("snapshot", "protected", "show", old, *r) is True
    assert [s["protected"] for s in ok_json("snapshot", "list", *r)] == [True, False]
    assert "protected" in fails("snapshot", "forget", old, *r)
    assert "boolean" in fails("snapshot", "protected", "update", old, "maybe", *r)
    ok("snapshot", "protected", "update", old, "0", *r)  # PBS's boolean words
    ok("snapshot", "notes", "update", new, "hello\nworld", *r)
    assert ok_json("snapshot", "notes", "show", new, *r) == "hello\nworld"
    assert ok_json("snapshot", "list", *r)[1]["comment"] == "hello"
    ok("snapshot", "forget", old, *r)
    assert [s["backup-time"] for s in ok_json("snapshot", "list", *r)] == [T0 + 1]
    ok("snapshot", "forget", new, *r)
    assert ok_json("list", *r) == []  # the emptied group went with its last snapshot


# -- one-line errors -----------------------------------------------------------------------

SNAP = str(BackupDir(WEB, T0))

ERROR_CASES: list[tuple[list[str], str]] = [
    (["namespace", "create", "../x"], "'..'"),
    (["namespace", "create", "a//b"], "a//b"),
    (["namespace", "create", "a/b/c/d/e/f/g/h"], "deep"),
    (["list", "--ns", "../x"], "'..'"),
    (["snapshot", "forget", SNAP, "--ns", "a/b/c/d/e/f/g/h"], "deep"),
    (["snapshot", "forget", "host/web"], "host/web"),
    (["snapshot", "notes", "show", "host/web/yesterday"], "yesterday"),
    (["snapshot", "protected", "show", "foo/web/2023-11-14T22:13:20Z"], "foo"),
    (["snapshot", "forget", "host/web/2023-13-14T22:13:20Z"], "2023-13-14"),
    (["list", "--ns", "nope"], "nope"),
    (["namespace", "delete", "nope"], "nope"),
    (["snapshot", "forget", SNAP], "does not exist"),
    (["group", "notes", "show", "host/web"], "does not exist"),
]


@pytest.mark.parametrize(("args", "needle"), ERROR_CASES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_errors_are_one_line(repo: Datastore, args: list[str], needle: str) -> None:
    line = fails(*args, "--repository", repo.path)
    assert needle in line, line


def test_missing_repository(tmp_path: Path) -> None:
    assert "repository" in fails("list")
    missing = str(tmp_path / "nowhere")
    assert "nowhere" in fails("snapshot", "list", "--repository", missing)
    assert "nowhere" in fails("namespace", "delete", "a", "--repository", missing)
    assert not os.path.exists(missing)


# -- a refused lock names its holder; --wait outlasts it ------------------------------------

def test_refused_lock_names_the_holder_and_wait_outlasts_it(repo: Datastore,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    create_namespace(repo, BackupNamespace.parse("a"))
    snap = str(api_backup(repo, src, "a", WEB, T0))
    r = ("--repository", repo.path, "--ns", "a")
    # A restore into a pipe nobody reads: it blocks on the full pipe, holding SN(s) S.
    restore = subprocess.Popen([*CLI, "restore", snap, "root.tar", "-", *r], env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    waiter: subprocess.Popen[str] | None = None
    try:
        assert restore.stdout is not None
        # One byte straight from the fd (a buffered read would hide more from communicate).
        first = os.read(restore.stdout.fileno(), 1)
        assert first  # it has started writing, so it holds its locks
        line = fails("snapshot", "forget", snap, *r)
        assert f"pid {restore.pid} " in line and f"restore {snap}" in line, line
        line = fails("namespace", "delete", "a", "--delete-groups", "--repository", repo.path)
        assert f"pid {restore.pid} " in line and "restore" in line, line
        line = fails("group", "delete", "host/web", *r)
        assert f"pid {restore.pid} " in line, line
        waiter = subprocess.Popen([*CLI, "snapshot", "forget", snap, "--wait", "30", *r],
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, stdin=subprocess.DEVNULL)
        time.sleep(0.5)
        assert waiter.poll() is None, waiter.communicate()  # still waiting for the reader
        assert repo.snapshot_exists(BackupNamespace.parse("a"), BackupDir.parse(snap))
        out, err = restore.communicate(timeout=60)  # drain the pipe: the restore finishes
        assert restore.returncode == 0, err
        assert len(first + out) > 2 * 1024 * 1024
        _, w_err = waiter.communicate(timeout=60)
        assert waiter.returncode == 0, w_err
        assert "Traceback" not in w_err
    finally:
        for proc in (restore, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not repo.snapshot_exists(BackupNamespace.parse("a"), BackupDir.parse(snap))
    assert ok_json("list", *r) == []


@pytest.mark.parametrize("args, needle", [
    (["backup", "x.tar:/tmp", "--backup-time", "-5"], "--backup-time"),
    (["frobnicate"], "No such command"),
    (["list", "--output-format", "xml"], "--output-format"),
    (["restore", "host/x/2020-01-01T00:00:00Z"], "Missing argument"),
])
def test_usage_errors_are_one_line_too(args: list[str], needle: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]


def test_done_when_namespace_delete_waits_for_a_streaming_restore(repo: Datastore,
                                                                 tmp_path: Path) -> None:
    """Issue 3's acceptance: while `restore ... -` streams into a slow reader, deleting its
    namespace or any ancestor is refused naming the restore's pid; afterwards it succeeds."""
    src = tmp_path / "big"
    src.mkdir()
    (src / "random.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    for name in ("a", "a/b", "a/b/c"):
        create_namespace(repo, BackupNamespace.parse(name))
    snap = str(api_backup(repo, src, "a/b/c", WEB, T0))
    restore = subprocess.Popen(
        [*CLI, "restore", snap, "root.tar", "-", "--repository", repo.path, "--ns", "a/b/c"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert restore.stdout is not None
        assert os.read(restore.stdout.fileno(), 1)  # streaming, and stalled on the pipe
        for ns in ("a/b/c", "a/b", "a"):
            line = fails("namespace", "delete", ns, "--delete-groups", "--repository", repo.path)
            assert f"pid {restore.pid} " in line and f"restore {snap}" in line, line
        assert repo.snapshot_exists(BackupNamespace.parse("a/b/c"), BackupDir.parse(snap))
        restore.communicate(timeout=60)
        assert restore.returncode == 0
    finally:
        if restore.poll() is None:
            restore.kill()
            restore.wait()
    ok("namespace", "delete", "a", "--delete-groups", "--repository", repo.path)
    assert [row["ns"] for row in ok_json("namespace", "list", "--repository", repo.path)] == [""]
