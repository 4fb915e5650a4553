"""A real `chunkyard serve` process and a real HTTP client for API tests: start, stop, log in,
read the envelope, wait for tasks. `prepare` fills a data directory before the start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkyard.config import ConfigDir
from chunkyard.config.accounts import create_token, set_password
from chunkyard.config.section import Section
from chunkyard.datastore.datastore import Datastore
from chunkyard.names import Authid, BackupGroup, BackupType
from chunkyard.server.state import DataDir, ensure_defaults
from tests.store_helpers import T0, backup, make_namespaces

PASSWORD = "correct horse battery"
API = "/api2/json"
JSON_TYPE = "application/json;charset=UTF-8"
VM100 = BackupGroup(BackupType.VM, "100")
CT200 = BackupGroup(BackupType.CT, "200")
HOST1 = BackupGroup(BackupType.HOST, "web1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    data: Path
    out: Path

    def output(self) -> str:
        return self.out.read_text()


def start_server(data: Path, *extra: str, http: bool = True,
                 env: dict[str, str] | None = None) -> Server:
    port = free_port()
    out = data.parent / f"{data.name}.out"
    args = [sys.executable, "-m", "chunkyard.cli.main", "serve", "--data-dir", str(data),
            "--listen", f"127.0.0.1:{port}", "--sparse-datastore",
            "--auth-failure-delay", "0", *extra]
    if http:
        args.append("--http")
    environ = {**os.environ, "CHUNKYARD_ADMIN_PASSWORD": PASSWORD, **(env or {})}
    with open(out, "wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=environ)
    scheme = "http" if http else "https"
    server = Server(proc, f"{scheme}://127.0.0.1:{port}", data, out)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {server.output()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start: {server.output()}")


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=30)


def prepare(data: Path, src: Path) -> dict[str, str]:
    """The embedded default, then users, a token, ACLs and backups; returns the secrets."""
    ensure_defaults(DataDir(str(data)), sparse=True,
                    environ={"CHUNKYARD_ADMIN_PASSWORD": PASSWORD})
    cfg = ConfigDir(data / "etc")

    def users(config: Any) -> None:
        for name in ("audit@pbs", "nobody@pbs", "backup@pbs"):
            config.add(Section("user", name, {}))

    cfg.update_user(users)
    for name in ("audit@pbs", "nobody@pbs", "backup@pbs"):
        set_password(cfg, Authid.parse(name), PASSWORD)

    def acl(config: Any) -> None:
        config.insert("/datastore/store1", "audit@pbs", "DatastoreAudit", True)
        config.insert("/datastore/store1", "backup@pbs", "DatastoreBackup", True)
        config.insert("/", "admin@pbs!tok", "Admin", True)

    cfg.update_acl(acl)
    secret = create_token(cfg, Authid.parse("admin@pbs!tok"))
    src.mkdir()
    (src / "file.txt").write_text("hello\n")
    ds = Datastore.open(str(data / "store1"))
    make_namespaces(ds, "a", "a/b", "c")
    backup(ds, src, "", VM100, T0)
    backup(ds, src, "", VM100, T0 + 60)
    backup(ds, src, "", CT200, T0)
    backup(ds, src, "a", HOST1, T0)
    return {"token": f"admin@pbs!tok:{secret}"}


def running_server(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[tuple[Server, dict[str, str]]]:
    """The body of the `server` fixture (tests/conftest.py): a prepared server, stopped and
    checked for internal errors at the end."""
    root = tmp_path_factory.mktemp("server")
    secrets = prepare(root / "data", root / "src")
    srv = start_server(root / "data")
    try:
        yield srv, secrets
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()  # no request ended in an internal error


@dataclass
class Api:
    client: httpx.Client
    csrf: str = ""

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(API + path, params=params)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        headers = {"CSRFPreventionToken": self.csrf} if self.csrf else {}
        return self.client.post(API + path, data=data, headers=headers, **kw)

    def delete(self, path: str, **params: Any) -> httpx.Response:
        headers = {"CSRFPreventionToken": self.csrf} if self.csrf else {}
        return self.client.delete(API + path, params=params, headers=headers)


def login(base: str, user: str = "admin@pbs", password: str = PASSWORD) -> Api:
    client = httpx.Client(base_url=base, timeout=30)
    r = client.post(API + "/access/ticket", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["username"] == user
    assert data["ticket"].startswith(f"PBS:{user}:")
    client.cookies.set("PBSAuthCookie", data["ticket"])
    return Api(client, data["CSRFPreventionToken"])


def data_of(r: httpx.Response) -> Any:
    assert r.status_code == 200, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"] == JSON_TYPE
    return r.json()["data"]


def error_of(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"] == JSON_TYPE
    return r.text


def wait_task(api: Api, upid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        status = data_of(api.get(f"/nodes/localhost/tasks/{upid}/status"))
        if status["status"] == "stopped" or time.monotonic() > deadline:
            return dict(status)
        time.sleep(0.05)
