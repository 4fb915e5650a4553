"""proxmox-backup-client's way of naming a server, against a real `chunkyard serve` over HTTPS:
$PBS_REPOSITORY (`[[user@realm[!token]@]host[:port]:]datastore`), $PBS_PASSWORD (a password,
or the secret of the token the repository names), $PBS_FINGERPRINT, `--repository` in that
syntax; and tickets: renewal by posting the current ticket as the password (server), a stored
ticket renewed after an hour and refused when expired (CLI)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from chunkyard.client.api import InvalidRepository, PbsRepository
from chunkyard.server.auth.keys import AuthKey, AuthKeys
from chunkyard.server.auth.tickets import create_csrf_token, create_ticket
from chunkyard.server.state import DataDir
from tests.server_helpers import API, PASSWORD, Server, prepare, start_server, stop

CLI = [sys.executable, "-m", "chunkyard.cli.main"]
SCRUBBED = ("CHUNKYARD_REPOSITORY", "CHUNKYARD_TOKEN", "CHUNKYARD_PASSWORD")


def _fingerprint(srv: Server) -> str:
    return next(ln.split(": ", 1)[1] for ln in srv.output().splitlines()
                if ln.startswith("fingerprint: "))


@pytest.fixture(scope="module")
def pbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A prepared server on HTTPS (PBS speaks nothing else), with what a client needs."""
    root = tmp_path_factory.mktemp("pbs")
    secrets = prepare(root / "data", root / "src")
    srv = start_server(root / "data", http=False)
    try:
        port = urlsplit(srv.base).port
        yield {"srv": srv, "base": srv.base, "port": port, "fp": _fingerprint(srv),
               "token": secrets["token"], "secret": secrets["token"].split(":", 1)[1],
               "home": root / "home", "data": root / "data"}
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()


def cli(pbs: dict[str, Any], *args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI with a clean environment: no PBS_* or CHUNKYARD_* credentials unless
    given, and its own ticket cache."""
    base = home or pbs["home"]
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("PBS_") and k not in SCRUBBED}
    environ.update({"HOME": str(base), "XDG_CACHE_HOME": str(base / "cache"), **(env or {})})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=environ, cwd=cwd, stdin=subprocess.DEVNULL)


def ok(pbs: dict[str, Any], *args: str, **kw: Any) -> str:
    r = cli(pbs, *args, **kw)
    assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def fails(pbs: dict[str, Any], *args: str, **kw: Any) -> str:
    """A one-line error (no traceback), exit code 1; the line without `Error: `."""
    r = cli(pbs, *args, **kw)
    assert r.returncode == 1, f"{args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr[len("Error: "):].rstrip("\n")


def api_groups(pbs: dict[str, Any]) -> Any:
    r = httpx.get(pbs["base"] + API + "/admin/datastore/store1/groups", verify=False,
                  headers={"Authorization": f"PBSAPIToken={pbs['token']}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def repo(pbs: dict[str, Any], authid: str = "admin@pbs", host: str = "127.0.0.1") -> str:
    return f"{authid}@{host}:{pbs['port']}:store1"


def env_for(pbs: dict[str, Any], repository: str, password: str | None = None
            ) -> dict[str, str]:
    env = {"PBS_REPOSITORY": repository, "PBS_FINGERPRINT": pbs["fp"]}
    if password is not None:
        env["PBS_PASSWORD"] = password
    return env


# -- the repository syntax ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "authid", "host", "port", "store"), [
    # the examples of PBS's documentation (backup-client.rst, "Backup Repository Locations")
    ("mydatastore", None, None, None, "mydatastore"),
    ("myhostname:mydatastore", None, "myhostname", None, "mydatastore"),
    ("user@pbs@myhostname:mydatastore", "user@pbs", "myhostname", None, "mydatastore"),
    ("user@pbs!token@host:store", "user@pbs!token", "host", None, "store"),
    ("192.168.55.55:1234:mydatastore", None, "192.168.55.55", 1234, "mydatastore"),
    ("[ff80::51]:mydatastore", None, "ff80::51", None, "mydatastore"),
    ("[ff80::51]:1234:mydatastore", None, "ff80::51", 1234, "mydatastore"),
    ("admin@pbs@localhost:8007:store1", "admin@pbs", "localhost", 8007, "store1"),
    ("root@pam!backup-1@[::1]:8007:s_1.x", "root@pam!backup-1", "::1", 8007, "s_1.x"),
])
def test_repository_syntax(text: str, authid: str | None, host: str | None,
                           port: int | None, store: str) -> None:
    parsed = PbsRepository.parse(text)
    assert (parsed.authid, parsed.host, parsed.port, parsed.store) == (authid, host, port,
                                                                       store)
    assert parsed.user == (authid or "root@pam")
    assert parsed.server().port == (port or 8007) and parsed.server().scheme == "https"


@pytest.mark.parametrize("text", [
    "", "host:", ":store", "host:store/x", "a/b:c", "admin@pbs@:store1", "@host:store",
    "host:99999:store", "host:0:store", "host:123456:store", "[zz::1]:store", "[::1:store",
    "::1:store", "user@pbs!a!b@host:store", "us er@pbs@host:store", "host::store",
    "-host:store", "host:store:", "x" * 300,
])
def test_malformed_repositories_are_refused(text: str) -> None:
    with pytest.raises(InvalidRepository, match="invalid repository"):
        PbsRepository.parse(text)


# -- $PBS_REPOSITORY, $PBS_PASSWORD, $PBS_FINGERPRINT ----------------------------------------

def test_repository_naming_a_token_with_its_secret(pbs: dict[str, Any]) -> None:
    # PBS_PASSWORD counts up to its first line end, as in proxmox-backup-client
    env = env_for(pbs, repo(pbs, "admin@pbs!tok"), pbs["secret"] + "\nignored")
    groups = json.loads(ok(pbs, "list", "--output-format", "json", env=env))
    assert groups == api_groups(pbs) and len(groups) == 2
    assert "created namespace 'viatoken'" in ok(pbs, "namespace", "create", "viatoken",
                                                env=env)
    ok(pbs, "namespace", "delete", "viatoken", env=env)
    # the API follows the token's (Admin) privileges, and a move runs as a followed task
    assert "TASK OK" in ok(pbs, "verify", "vm/100", env=env)


def test_repository_naming_a_user_with_a_password(pbs: dict[str, Any]) -> None:
    env = env_for(pbs, repo(pbs), PASSWORD)
    rows = json.loads(ok(pbs, "namespace", "list", "--output-format", "json", env=env))
    assert {"ns": "a"} in rows
    # a write: the ticket got with the password, and its CSRF token
    ok(pbs, "namespace", "create", "viapassword", env=env)
    ok(pbs, "namespace", "delete", "viapassword", env=env)
    plan = json.loads(ok(pbs, "group", "move", "vm/100", "--target-ns", "a", "--dry-run",
                         "--output-format", "json", env=env))
    assert plan["dry-run"] is True and plan["moved-snapshots"] == 2
    # the password's ticket is used, not stored: `chunkyard login` stores tickets
    assert not (pbs["home"] / "cache" / "chunkyard" / "tickets").exists()


def test_credential_errors_are_one_line(pbs: dict[str, Any]) -> None:
    url = f"https://127.0.0.1:{pbs['port']}"
    wrong = fails(pbs, "list", env=env_for(pbs, repo(pbs), "wrong password"))
    assert wrong == (f"login as admin@pbs on {url} failed: authentication failure "
                     "(HTTP 401)")
    bad_secret = fails(pbs, "list", env=env_for(pbs, repo(pbs, "admin@pbs!tok"), "0" * 36))
    assert "authentication failure (HTTP 401)" in bad_secret
    no_secret = fails(pbs, "list", env=env_for(pbs, repo(pbs, "admin@pbs!tok")))
    assert "admin@pbs!tok needs its secret: set PBS_PASSWORD" in no_secret
    # the default user is root@pam, as in proxmox-backup-client; nobody logged in as it
    anonymous = f"127.0.0.1:{pbs['port']}:store1"
    no_login = fails(pbs, "list", env=env_for(pbs, anonymous))
    assert no_login.startswith(f"not logged in to {url} as root@pam: set PBS_PASSWORD")
    assert "empty" in fails(pbs, "list", env=env_for(pbs, repo(pbs), ""))
    pinned_wrong = {**env_for(pbs, repo(pbs), PASSWORD), "PBS_FINGERPRINT": "00:" * 31 + "00"}
    assert "fingerprint mismatch" in fails(pbs, "list", env=pinned_wrong)
    unpinned = env_for(pbs, repo(pbs), PASSWORD)
    del unpinned["PBS_FINGERPRINT"]
    assert "certificate verification failed" in fails(pbs, "list", env=unpinned)
    # a successful login clears the failures counted above for admin@pbs
    ok(pbs, "list", env=env_for(pbs, repo(pbs), PASSWORD))


@pytest.mark.parametrize("value", [
    "admin@pbs@:store1", "127.0.0.1:99999:store1", "[zz::1]:store1", "host:store1/x",
    "admin@pbs@host:", "a b@pbs@host:store1",
])
def test_malformed_pbs_repository(pbs: dict[str, Any], value: str) -> None:
    message = fails(pbs, "list", env={"PBS_REPOSITORY": value, "PBS_PASSWORD": PASSWORD})
    assert message.startswith("$PBS_REPOSITORY: invalid repository ")
    assert "[[user@realm[!token]@]host[:port]:]datastore" in message or "port" in message


def test_pbs_repository_without_a_host_names_no_server(pbs: dict[str, Any]) -> None:
    message = fails(pbs, "list", env={"PBS_REPOSITORY": "store1"})
    assert "no repository given" in message and "names no host" in message


def test_explicit_options_win_over_the_environment(pbs: dict[str, Any],
                                                   tmp_path: Path) -> None:
    from chunkyard.datastore.datastore import Datastore

    Datastore.create(str(tmp_path / "local"), sparse=True)
    env = env_for(pbs, repo(pbs), PASSWORD)
    assert len(json.loads(ok(pbs, "list", "--output-format", "json", env=env))) == 2
    local = ok(pbs, "list", "--output-format", "json", "--repository",
               str(tmp_path / "local"), env=env)
    assert json.loads(local) == []
    chunkyard_env = {**env, "CHUNKYARD_REPOSITORY": str(tmp_path / "local")}
    assert json.loads(ok(pbs, "list", "--output-format", "json", env=chunkyard_env)) == []
    # a malformed PBS_REPOSITORY is not even read when an option names the target
    broken = {"PBS_REPOSITORY": "::broken::", "PBS_FINGERPRINT": pbs["fp"]}
    ok(pbs, "list", "--repository", str(tmp_path / "local"), env=broken)
    served = ok(pbs, "list", "--output-format", "json", "--server", pbs["base"], "--token",
                pbs["token"], env=broken)
    assert json.loads(served) == api_groups(pbs)
    # --token beats PBS_PASSWORD; --fingerprint beats PBS_FINGERPRINT
    tokened = {**env_for(pbs, repo(pbs), "wrong password"), "PBS_FINGERPRINT": "00:" * 32}
    ok(pbs, "list", "--token", pbs["token"], "--fingerprint", pbs["fp"], env=tokened)


def test_repository_option_in_pbs_syntax(pbs: dict[str, Any], tmp_path: Path) -> None:
    from chunkyard.datastore.datastore import Datastore

    env = {"PBS_PASSWORD": pbs["secret"], "PBS_FINGERPRINT": pbs["fp"]}
    remote = repo(pbs, "admin@pbs!tok")
    rows = json.loads(ok(pbs, "list", "--output-format", "json", "--repository", remote,
                         env=env))
    assert rows == api_groups(pbs)
    assert "store1" in fails(pbs, "list", "--repository", remote, "--store", "other",
                             env=env)
    ok(pbs, "list", "--repository", remote, "--store", "store1", env=env)
    # an existing path is local, whatever it looks like
    Datastore.create(str(tmp_path / f"127.0.0.1:{pbs['port']}:store1"), sparse=True)
    local = ok(pbs, "list", "--output-format", "json", "--repository",
               f"127.0.0.1:{pbs['port']}:store1", env=env, cwd=tmp_path)
    assert json.loads(local) == []
    # a value with a ':' that is neither a path nor a repository
    message = fails(pbs, "list", "--repository", "no such:thing", env=env, cwd=tmp_path)
    assert message.startswith("--repository: invalid repository 'no such:thing'")
    assert message.endswith("(and no such local path)")
    # with a '/', or without a ':', it is a local path (that does not exist here)
    for local_path in ("./local:x", "store1"):
        message = fails(pbs, "list", "--repository", local_path, env=env, cwd=tmp_path)
        assert message == f"datastore {tmp_path / local_path.lstrip('./')} does not exist"


def test_login_from_pbs_repository_then_its_ticket(pbs: dict[str, Any],
                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = env_for(pbs, repo(pbs), PASSWORD)
    out = ok(pbs, "login", env=env, home=home)
    assert out.startswith("logged in as admin@pbs; ticket stored in ")
    path = Path(out.rsplit(" ", 1)[1].strip())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    no_password = env_for(pbs, repo(pbs))
    rows = json.loads(ok(pbs, "list", "--output-format", "json", env=no_password, home=home))
    assert rows == api_groups(pbs)
    ok(pbs, "namespace", "create", "viaticket", env=no_password, home=home)
    ok(pbs, "namespace", "delete", "viaticket", env=no_password, home=home)
    # the ticket is admin@pbs's: a repository naming another user does not get it
    other = fails(pbs, "list", env=env_for(pbs, repo(pbs, "audit@pbs")), home=home)
    assert "as audit@pbs" in other and "chunkyard login" in other
    token = fails(pbs, "login", env=env_for(pbs, repo(pbs, "admin@pbs!tok"), "x"), home=home)
    assert "is an API token" in token


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_repository(pbs: dict[str, Any], tmp_path: Path) -> None:
    secret = prepare(tmp_path / "data", tmp_path / "src")["token"].split(":", 1)[1]
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "v6.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(tmp_path / "data"), "--listen", f"[::1]:{port}",
             "--sparse-datastore", "--auth-failure-delay", "0"],
            stdout=f, stderr=subprocess.STDOUT,
            env={**os.environ, "CHUNKYARD_ADMIN_PASSWORD": PASSWORD})
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, out.read_text()
            try:
                with socket.create_connection(("::1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.05)
        fingerprint = next(ln.split(": ", 1)[1] for ln in out.read_text().splitlines()
                           if ln.startswith("fingerprint: "))
        env = {"PBS_REPOSITORY": f"admin@pbs!tok@[::1]:{port}:store1",
               "PBS_PASSWORD": secret, "PBS_FINGERPRINT": fingerprint}
        rows = json.loads(ok(pbs, "list", "--output-format", "json", env=env))
        assert [(g["backup-type"], g["backup-id"]) for g in rows] == [("ct", "200"),
                                                                      ("vm", "100")]
        assert "Traceback" not in out.read_text()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, out.read_text()


# -- tickets: renewal on the server, stored tickets in the CLI --------------------------------

def _keys(pbs: dict[str, Any]) -> AuthKeys:
    return AuthKeys.load_or_create(DataDir(str(pbs["data"])).etc)


def _ticket_time(ticket: str) -> int:
    return int(ticket.split(":")[2], 16)


def _forged(user: str, stamp: int) -> str:
    return create_ticket(AuthKey.generate(), user, now=stamp)


def test_server_renews_a_valid_ticket_and_refuses_others(pbs: dict[str, Any]) -> None:
    keys = _keys(pbs)
    base = pbs["base"] + API + "/access/ticket"
    now = int(time.time())

    def post(user: str, password: str) -> httpx.Response:
        return httpx.post(base, data={"username": user, "password": password}, verify=False)

    old = create_ticket(keys.signing, "backup@pbs", now=now - 3700)
    r = post("backup@pbs", old)
    assert r.status_code == 200, r.text
    renewed = r.json()["data"]
    assert renewed["username"] == "backup@pbs"
    assert _ticket_time(renewed["ticket"]) >= now
    # expired, forged, another user's: refused as a wrong password is, each one counted
    refused = [create_ticket(keys.signing, "backup@pbs", now=now - 7300),
               _forged("backup@pbs", now - 3700), renewed["ticket"][:-4] + "AAAA",
               create_ticket(keys.signing, "audit@pbs", now=now - 60),
               create_ticket(keys.signing, "backup@pbs", now=now + 3600)]
    for ticket in refused:
        r = post("backup@pbs", ticket)
        assert (r.status_code, r.text) == (401, "authentication failure"), ticket
    # the fifth failure of the pair: now even the right password waits
    r = post("backup@pbs", PASSWORD)
    assert r.status_code == 429 and "too many failed login" in r.text


def _store(path: Path, pbs: dict[str, Any], ticket: str, csrf: str, created: int) -> None:
    path.write_text(json.dumps({"username": "admin@pbs", "ticket": ticket,
                                "CSRFPreventionToken": csrf, "created": created}))
    path.chmod(0o600)


def _login(pbs: dict[str, Any], home: Path) -> Path:
    out = ok(pbs, "login", "--server", pbs["base"], "--user", "admin@pbs", "--fingerprint",
             pbs["fp"], env={"CHUNKYARD_PASSWORD": PASSWORD}, home=home)
    return Path(out.rsplit(" ", 1)[1].strip())


def _server_args(pbs: dict[str, Any]) -> list[str]:
    return ["--server", pbs["base"], "--fingerprint", pbs["fp"]]


def test_a_stored_ticket_older_than_an_hour_is_renewed(pbs: dict[str, Any],
                                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _login(pbs, home)
    keys = _keys(pbs)
    then = int(time.time()) - 3700
    old = create_ticket(keys.signing, "admin@pbs", now=then)
    _store(path, pbs, old, create_csrf_token(keys.csrf, "admin@pbs", now=then), then)
    rows = json.loads(ok(pbs, "namespace", "list", "--output-format", "json",
                         *_server_args(pbs), home=home))
    assert {"ns": "a"} in rows
    record = json.loads(path.read_text())
    assert record["username"] == "admin@pbs" and record["ticket"] != old
    assert _ticket_time(record["ticket"]) >= then + 3600
    assert record["created"] >= then + 3600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left
    # the renewed ticket and its CSRF token work for writes too, and are not renewed again
    ok(pbs, "namespace", "create", "renewed", *_server_args(pbs), home=home)
    ok(pbs, "namespace", "delete", "renewed", *_server_args(pbs), home=home)
    assert json.loads(path.read_text())["ticket"] == record["ticket"]


def test_an_expired_stored_ticket_asks_for_a_new_login(pbs: dict[str, Any],
                                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _login(pbs, home)
    keys = _keys(pbs)
    then = int(time.time()) - 7300
    _store(path, pbs, create_ticket(keys.signing, "admin@pbs", now=then),
           create_csrf_token(keys.csrf, "admin@pbs", now=then), then)
    message = fails(pbs, "namespace", "list", *_server_args(pbs), home=home)
    assert "has expired" in message
    assert message.endswith(f"run 'chunkyard login --server {pbs['base']} --user admin@pbs' "
                            "again")


def test_a_forged_stored_ticket_is_refused_at_renewal(pbs: dict[str, Any],
                                                      tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _login(pbs, home)
    then = int(time.time()) - 3700
    forged = _forged("admin@pbs", then)
    _store(path, pbs, forged, "00000000:AAAA", then)
    message = fails(pbs, "namespace", "list", *_server_args(pbs), home=home)
    assert message.startswith("renewing the ticket of admin@pbs on ")
    assert "was refused (authentication failure (HTTP 401))" in message
    assert "chunkyard login" in message
    assert json.loads(path.read_text())["ticket"] == forged  # left for the user to replace
    # a fresh forged ticket (not due for renewal) is refused by the request itself
    _store(path, pbs, _forged("admin@pbs", int(time.time())), "00000000:AAAA",
           int(time.time()))
    message = fails(pbs, "namespace", "list", *_server_args(pbs), home=home)
    assert "(HTTP 401)" in message and "run 'chunkyard login" in message
