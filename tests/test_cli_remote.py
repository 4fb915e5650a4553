"""The admin commands against a real `chunkyard serve` (`--server`): the real CLI in a
subprocess, authenticated by an API token or by the ticket `chunkyard login` stored."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_helpers import API, PASSWORD

CLI = [sys.executable, "-m", "chunkyard.cli.main"]


@pytest.fixture(scope="module")
def remote(server: tuple[Any, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
           ) -> dict[str, Any]:
    srv, secrets = server
    home = tmp_path_factory.mktemp("home")
    return {"base": srv.base, "token": secrets["token"], "home": home, "data": srv.data}


def run(remote: dict[str, Any], *args: str, token: bool = True,
        env: dict[str, str] | None = None, local: bool = False
        ) -> subprocess.CompletedProcess[str]:
    auth = ["--token", remote["token"]] if token else []
    environ = {k: v for k, v in os.environ.items()
               if k not in ("CHUNKYARD_REPOSITORY", "CHUNKYARD_TOKEN", "PBS_REPOSITORY",
                            "PBS_PASSWORD", "PBS_FINGERPRINT")}
    environ.update({"HOME": str(remote["home"]), "XDG_CACHE_HOME": str(remote["home"] / "c"),
                    **(env or {})})
    cmd = [*CLI, *args]
    if args[0] != "login" and not local:
        cmd += ["--server", remote["base"], *auth]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ,
                          stdin=subprocess.DEVNULL)


def run_local(remote: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """The same command on the server's datastore directory (`--repository`)."""
    return run(remote, *args, "--repository", str(remote["data"] / "store1"), local=True)


def ok(remote: dict[str, Any], *args: str, **kw: Any) -> str:
    r = run(remote, *args, **kw)
    assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def api_get(remote: dict[str, Any], path: str, **params: Any) -> Any:
    r = httpx.get(remote["base"] + API + path, params=params,
                  headers={"Authorization": f"PBSAPIToken={remote['token']}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_namespaces(remote: dict[str, Any]) -> None:
    assert "created namespace 'a/new'" in ok(remote, "namespace", "create", "a/new")
    rows = json.loads(ok(remote, "namespace", "list", "--ns", "a", "--output-format", "json"))
    assert {"ns": "a/new"} in rows and rows[0] == {"ns": "a"}
    out = ok(remote, "namespace", "delete", "a/new")
    assert "removed 0 group(s)" in out
    rows = json.loads(ok(remote, "namespace", "list", "--output-format", "json"))
    assert {"ns": "a/new"} not in rows
    missing = run(remote, "namespace", "create", "nope/child")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: ") and missing.stderr.count("\n") == 1


def test_snapshot_list_json_equals_the_api(remote: dict[str, Any]) -> None:
    cli_rows = json.loads(ok(remote, "snapshot", "list", "--output-format", "json"))
    assert cli_rows == api_get(remote, "/admin/datastore/store1/snapshots")
    assert len(cli_rows) == 3
    groups = json.loads(ok(remote, "list", "--output-format", "json"))
    assert groups == api_get(remote, "/admin/datastore/store1/groups")
    assert "vm/100" in ok(remote, "snapshot", "list", "vm/100")


def test_notes_and_protection(remote: dict[str, Any]) -> None:
    snap = "ct/200/2023-11-14T22:13:20Z"
    ok(remote, "snapshot", "notes", "update", snap, "remote notes")
    assert ok(remote, "snapshot", "notes", "show", snap) == "remote notes\n"
    ok(remote, "snapshot", "protected", "update", snap, "true")
    assert ok(remote, "snapshot", "protected", "show", snap) == "true\n"
    ok(remote, "snapshot", "protected", "update", snap, "false")
    ok(remote, "group", "notes", "update", "ct/200", "group notes")
    assert ok(remote, "group", "notes", "show", "ct/200") == "group notes\n"


def test_prune_dry_run(remote: dict[str, Any]) -> None:
    out = ok(remote, "prune", "vm/100", "--keep-last", "1", "--dry-run")
    assert "dry run: would remove 1, kept 1 of 2 snapshot(s)" in out
    rows = json.loads(ok(remote, "prune", "vm/100", "--keep-last", "1", "--dry-run",
                         "--output-format", "json"))
    assert [r["keep"] for r in rows] == [False, True]
    assert len(api_get(remote, "/admin/datastore/store1/snapshots")) == 3  # nothing removed


def test_group_move_verify_and_tasks(remote: dict[str, Any]) -> None:
    out = ok(remote, "group", "move", "host/web1", "--ns", "a", "--target-ns", "c")
    assert "moving group host/web1" in out and "TASK OK" in out
    groups = json.loads(ok(remote, "list", "--ns", "c", "--output-format", "json"))
    assert [g["backup-id"] for g in groups] == ["web1"]
    out = ok(remote, "verify", "vm/100")
    assert "TASK OK" in out
    out = ok(remote, "prune-datastore", "--ns", "c", "--keep-last", "5", "--dry-run")
    assert "TASK OK" in out
    tasks = json.loads(ok(remote, "task", "list", "--output-format", "json"))
    move = next(t for t in tasks if t["worker_type"] == "move-group")
    assert move["status"] == "OK"
    log = ok(remote, "task", "log", move["upid"])
    assert "moving group host/web1" in log and log.rstrip().endswith("TASK OK")
    assert "move-group" in ok(remote, "task", "list")


def test_login_stores_a_ticket(remote: dict[str, Any]) -> None:
    out = ok(remote, "login", "--server", remote["base"], "--user", "admin@pbs",
             env={"CHUNKYARD_PASSWORD": PASSWORD})
    path = Path(out.rsplit(" ", 1)[1].strip())
    assert path.is_file() and stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = json.loads(ok(remote, "namespace", "list", "--output-format", "json", token=False))
    assert {"ns": "c"} in rows
    # a write with the ticket needs its CSRF token
    ok(remote, "namespace", "create", "ticketed", token=False)
    ok(remote, "namespace", "delete", "ticketed", token=False)
    bad = run(remote, "login", "--server", remote["base"], "--user", "admin@pbs",
              env={"CHUNKYARD_PASSWORD": "wrong"})
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ")
    assert bad.stderr.count("\n") == 1


def test_errors_are_one_line(remote: dict[str, Any]) -> None:
    wrong = run(remote, "namespace", "list", token=False,
                env={"CHUNKYARD_TOKEN": "admin@pbs!tok:wrong-secret",
                     "XDG_CACHE_HOME": str(remote["home"] / "empty")})
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stderr.startswith("Error: ") and wrong.stderr.count("\n") == 1
    assert "401" in wrong.stderr
    both = run(remote, "namespace", "list", "--repository", "/nowhere")
    assert both.returncode == 1
    assert both.stderr == "Error: --server and --repository exclude each other\n"
    nologin = run(remote, "list", token=False,
                  env={"XDG_CACHE_HOME": str(remote["home"] / "empty")})
    assert nologin.returncode == 1 and "not logged in" in nologin.stderr
    unknown = run(remote, "snapshot", "forget", "vm/999/2023-11-14T22:13:20Z")
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1


def test_https_with_a_pinned_fingerprint(tmp_path: Path) -> None:
    from tests.server_helpers import start_server, stop

    srv = start_server(tmp_path / "data", http=False)
    try:
        printed = next(ln.split(": ", 1)[1] for ln in srv.output().splitlines()
                       if ln.startswith("fingerprint: "))
        remote = {"base": srv.base, "token": "", "home": tmp_path}
        login = ["login", "--server", srv.base, "--user", "admin@pbs"]
        env = {"CHUNKYARD_PASSWORD": PASSWORD}
        unpinned = run(remote, *login, env=env)
        assert unpinned.returncode == 1
        assert "certificate verification failed" in unpinned.stderr
        wrong = run(remote, *login, "--fingerprint", "00:" * 31 + "00", env=env)
        assert wrong.returncode == 1 and "fingerprint mismatch" in wrong.stderr
        ok(remote, *login, "--fingerprint", printed, env=env)
        rows = json.loads(ok(remote, "namespace", "list", "--output-format", "json",
                             token=False, env={"PBS_FINGERPRINT": printed}))
        assert rows == [{"ns": ""}]
    finally:
        assert stop(srv) == 0


# -- dry runs through the server (chunkyard's `dry-run` extension of the move API) -----------

DRY_RUNS = [
    ("group", "move", "vm/100", "--target-ns", "a"),
    ("group", "move", "ct/200", "--target-ns", "a/b", "--merge-group", "false"),
    ("namespace", "move", "a", "--target-ns", "z"),
    ("namespace", "move", "a", "--target-ns", "c/a", "--max-depth", "0",
     "--delete-source", "false"),
]


@pytest.mark.parametrize("args", DRY_RUNS, ids=lambda a: " ".join(a[:3]))
def test_remote_dry_run_prints_what_a_local_one_prints(remote: dict[str, Any],
                                                       args: tuple[str, ...]) -> None:
    groups = api_get(remote, "/admin/datastore/store1/groups")
    namespaces = api_get(remote, "/admin/datastore/store1/namespace")
    tasks = len(api_get(remote, "/nodes/localhost/tasks", limit=0))
    text = ok(remote, *args, "--dry-run")
    assert text.startswith("dry run: would move ") and "nothing was changed" in text
    local = run_local(remote, *args, "--dry-run")
    assert local.returncode == 0, local.stderr
    assert text == local.stdout
    plan = json.loads(ok(remote, *args, "--dry-run", "--output-format", "json"))
    local = run_local(remote, *args, "--dry-run", "--output-format", "json")
    assert plan == json.loads(local.stdout)
    assert plan["dry-run"] is True and plan["conflicts"] == []
    assert plan["groups"] or plan["namespaces"]
    pretty = ok(remote, *args, "--dry-run", "--output-format", "json-pretty")
    assert json.loads(pretty) == plan and "\n  " in pretty
    # nothing moved, and no task was started
    assert api_get(remote, "/admin/datastore/store1/groups") == groups
    assert api_get(remote, "/admin/datastore/store1/namespace") == namespaces
    assert len(api_get(remote, "/nodes/localhost/tasks", limit=0)) == tasks


def test_remote_dry_run_errors_are_the_moves_errors(remote: dict[str, Any]) -> None:
    missing = run(remote, "group", "move", "vm/999", "--target-ns", "a", "--dry-run")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("Error: ") and "404" in missing.stderr
    same = run(remote, "namespace", "move", "a", "--target-ns", "a", "--dry-run")
    assert same.returncode == 1 and same.stderr.count("\n") == 1
    assert "source and target namespace are the same" in same.stderr


def test_move_dry_run_api_checks_privileges_and_starts_no_task(
        server: tuple[Any, dict[str, str]], admin: Any) -> None:
    from tests.server_helpers import data_of, error_of, login

    store = "/admin/datastore/store1"
    group = {"backup-type": "vm", "backup-id": "100", "target-ns": "a", "dry-run": "1"}
    ns = {"ns": "a", "target-ns": "y", "dry-run": "true"}
    plan = data_of(admin.post(store + "/move-group", group))
    assert plan["dry-run"] is True and plan["kind"] == "group"
    assert plan["groups"][0]["snapshots"] == 2
    plan = data_of(admin.post(store + "/move-namespace", ns))
    assert plan["dry-run"] is True and plan["kind"] == "namespace"
    for user in ("audit@pbs", "nobody@pbs", "backup@pbs"):
        api = login(server[0].base, user)
        assert "permission" in error_of(api.post(store + "/move-group", group), 403).lower()
        error_of(api.post(store + "/move-namespace", ns), 403)
    assert "boolean" in error_of(admin.post(store + "/move-group", {
        **group, "dry-run": "perhaps"}), 400)
    tasks = data_of(admin.get("/nodes/localhost/tasks", limit=0))
    assert not any(t["worker_type"] == "move-namespace" for t in tasks)
