"""A datastore's life through the API (create sparse, delete, delete while busy) and the
server's own (prompt shutdown over TLS), each against a real `chunkyard serve` process.

Deleting a store's data waits at most `CHUNKYARD_DELETE_WAIT` seconds for the store's tasks
and locks: the module's main server (`srv`) waits long enough for whatever the tests make
wait, the `quick` one gives up soon, for the tests of a store that stays busy. Busy stores
are made busy for real: lock holders are child processes taking a backup's or a GC's locks
(`store_helpers.holding`), and a server task is a real GC (its atime safety check alone
takes a second).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import CHUNKS_DIR
from chunkyard.datastore.locking import LockSession
from chunkyard.names import BackupDir, BackupNamespace
from tests.server_helpers import (
    API,
    PASSWORD,
    VM100,
    Api,
    Server,
    data_of,
    error_of,
    login,
    prepare,
    start_server,
    stop,
    wait_task,
)
from tests.store_helpers import T0, S, X, backup, backup_writer, holding

DELETE_WAIT = 15.0  # srv: longer than any test keeps a store busy
QUICK_WAIT = 0.5  # quick: shorter than a GC (whose atime check sleeps 1 s)


def _server(tmp_path_factory: pytest.TempPathFactory, wait: float) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("lifecycle")
    server = start_server(root / "data", env={"CHUNKYARD_DELETE_WAIT": str(wait)})
    try:
        yield server
    finally:
        assert stop(server) == 0, server.output()
        assert "Traceback" not in server.output()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, DELETE_WAIT)


@pytest.fixture(scope="module")
def adm(srv: Server) -> Api:
    return login(srv.base)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    for server in _server(tmp_path_factory, QUICK_WAIT):
        yield login(server.base)


def create_store(api: Api, name: str, path: Path, **extra: str) -> None:
    upid = data_of(api.post("/config/datastore", {"name": name, "path": str(path), **extra}))
    status = wait_task(api, upid)
    assert status["exitstatus"] == "OK", status


def destroy(api: Api, name: str) -> httpx.Response:
    return api.delete(f"/config/datastore/{name}", **{"destroy-data": "1"})


def store_with_backup(api: Api, name: str, path: Path, src: Path) -> Datastore:
    """A store made through the API, with one backup in it (taken in this process)."""
    create_store(api, name, path)
    src.mkdir(exist_ok=True)
    (src / "file.txt").write_text("data\n")
    ds = Datastore.open(str(path))
    backup(ds, src, "", VM100, T0)
    return ds


def groups(api: Api, name: str) -> httpx.Response:
    return api.get(f"/admin/datastore/{name}/groups")


def assert_intact(api: Api, name: str, path: Path) -> None:
    """Data, config entry and usability as before a refused delete."""
    assert (path / CHUNKS_DIR).is_dir() and (path / "vm" / "100").is_dir()
    entry = data_of(api.get(f"/config/datastore/{name}"))
    assert "maintenance-mode" not in entry, entry
    assert [g["backup-id"] for g in data_of(groups(api, name))] == ["100"]


def writer_with_chunk_store(snap: BackupDir) -> Any:
    """A running backup's locks, its chunk-store writer lock too."""
    take = backup_writer("", VM100, snap, T0 + 60)

    def run(s: LockSession) -> None:
        take(s)
        s.chunk_store(S)

    return run


# -- task 1: create honours --sparse-datastore; a deleted store is forgotten ------------------

def test_store_created_through_the_api_is_sparse(adm: Api, tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    create_store(adm, "sparse1", path)
    # sparse: only the zero chunk's prefix directory; a full store has 65,536
    assert len(os.listdir(path / CHUNKS_DIR)) < 16
    assert data_of(groups(adm, "sparse1")) == []


def test_deleted_store_is_forgotten_and_a_new_one_opened(adm: Api, tmp_path: Path) -> None:
    path = tmp_path / "cycled"
    ds = store_with_backup(adm, "cycled", path, tmp_path / "src")
    assert [g["backup-id"] for g in data_of(groups(adm, "cycled"))] == ["100"]  # now cached
    # the replacement exists before the old one goes: it cannot get the old one's inode
    spare = tmp_path / "spare"
    Datastore.create(str(spare), sparse=True)
    upid = data_of(destroy(adm, "cycled"))
    assert wait_task(adm, upid)["exitstatus"] == "OK"
    assert not path.exists()
    assert "no such datastore 'cycled'" in error_of(groups(adm, "cycled"), 404)
    assert "no such datastore" in error_of(adm.get("/config/datastore/cycled"), 404)
    # a new store of the same name at the same path: the server must use it, not the old
    # handle (whose lock directory belongs to the old store's identity)
    os.rename(spare, path)
    create_store(adm, "cycled", path, **{"reuse-datastore": "1"})
    new = Datastore.open(str(path))
    assert new.identity != ds.identity
    assert data_of(groups(adm, "cycled")) == []
    snap = backup(new, tmp_path / "src", "", VM100, T0)
    with holding(new, "backup vm/100", writer_with_chunk_store(snap)) as pid:
        message = error_of(adm.delete("/admin/datastore/cycled/groups",
                                      **{"backup-type": "vm", "backup-id": "100"}), 400)
        assert f"pid {pid} " in message and "backup vm/100" in message, message
    assert [g["backup-id"] for g in data_of(groups(adm, "cycled"))] == ["100"]


# -- task 2: destroy-data waits for the store to be free, or fails naming the holder -----------

def test_destroy_waits_for_a_backup_in_another_process(adm: Api, tmp_path: Path) -> None:
    path = tmp_path / "waited"
    ds = store_with_backup(adm, "waited", path, tmp_path / "src")
    snap = BackupDir(VM100, T0)
    result: dict[str, Any] = {}

    def delete() -> None:
        started = time.monotonic()
        result["response"] = destroy(adm, "waited")
        result["seconds"] = time.monotonic() - started

    with holding(ds, "backup vm/100", writer_with_chunk_store(snap)):
        worker = threading.Thread(target=delete)
        worker.start()
        deadline = time.monotonic() + 5
        while True:  # marked at once: new operations and a second delete are refused
            r = groups(adm, "waited")
            if r.status_code == 400 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert "datastore 'waited' is being deleted" in error_of(r, 400)
        assert "being deleted" in error_of(destroy(adm, "waited"), 400)
        assert "being deleted" in error_of(
            adm.client.put(API + "/config/datastore/waited", data={"comment": "x"},
                           headers={"CSRFPreventionToken": adm.csrf}), 400)
        time.sleep(0.5)
        assert worker.is_alive(), result  # still waiting for the backup's locks
        assert (path / "vm" / "100").is_dir()
    worker.join(DELETE_WAIT + 5)
    upid = data_of(result["response"])
    assert 0.5 < result["seconds"] < DELETE_WAIT
    assert wait_task(adm, upid)["exitstatus"] == "OK"
    assert not path.exists()
    error_of(adm.get("/config/datastore/waited"), 404)
    log = "\n".join(line["t"] for line in
                    data_of(adm.get(f"/nodes/localhost/tasks/{upid}/log", limit=0)))
    assert "maintenance mode 'delete'" in log and "is locked: deleting its data" in log


@pytest.mark.parametrize("operation", ["backup vm/100", "garbage collection"])
def test_destroy_refused_while_another_process_holds_the_store(
        quick: Api, tmp_path: Path, operation: str) -> None:
    name = "held" + ("b" if operation.startswith("backup") else "g")
    path = tmp_path / name
    ds = store_with_backup(quick, name, path, tmp_path / "src")
    # a running backup (NS S and below, CS S) or a GC (CS X) of another process
    take = writer_with_chunk_store(BackupDir(VM100, T0)) if operation.startswith("backup") \
        else (lambda s: s.chunk_store(X))
    with holding(ds, operation, take) as pid:
        started = time.monotonic()
        message = error_of(destroy(quick, name), 400)
        assert time.monotonic() - started > QUICK_WAIT - 0.1
        assert message.startswith(f"datastore '{name}' is in use: "), message
        assert f"pid {pid} " in message and repr(operation) in message, message
        assert_intact(quick, name, path)
    # once free, the same delete goes through
    upid = data_of(destroy(quick, name))
    assert wait_task(quick, upid)["exitstatus"] == "OK"
    assert not path.exists()


def test_destroy_waits_for_a_server_task(adm: Api, tmp_path: Path) -> None:
    """GC holds the chunk-store lock in the server's own process, where a record lock does
    not conflict with another of the same process: only waiting for the task protects it."""
    path = tmp_path / "gcwait"
    store_with_backup(adm, "gcwait", path, tmp_path / "src")
    gc = data_of(adm.post("/admin/datastore/gcwait/gc"))
    started = time.monotonic()
    upid = data_of(destroy(adm, "gcwait"))
    assert time.monotonic() - started > 0.3  # the atime check alone sleeps 1 s
    assert wait_task(adm, gc)["exitstatus"] == "OK"  # not cut off by the delete
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "OK", status
    log = [line["t"] for line in data_of(adm.get(f"/nodes/localhost/tasks/{upid}/log",
                                                 limit=0))]
    assert any(f"waiting for task {gc}" in line for line in log), log
    assert not path.exists()


def test_destroy_refused_while_a_server_task_runs(quick: Api, tmp_path: Path) -> None:
    path = tmp_path / "gcbusy"
    store_with_backup(quick, "gcbusy", path, tmp_path / "src")
    gc = data_of(quick.post("/admin/datastore/gcbusy/gc"))
    message = error_of(destroy(quick, "gcbusy"), 400)
    assert message == (f"datastore 'gcbusy' is in use: task {gc} still runs after "
                       f"waiting {QUICK_WAIT:g} s"), message
    assert wait_task(quick, gc)["exitstatus"] == "OK"
    assert_intact(quick, "gcbusy", path)
    tasks = data_of(quick.get("/nodes/localhost/tasks", typefilter="delete-datastore"))
    assert message in [t.get("status") for t in tasks], tasks


def test_delete_without_destroy_keeps_the_data(adm: Api, tmp_path: Path) -> None:
    path = tmp_path / "kept"
    ds = store_with_backup(adm, "kept", path, tmp_path / "src")
    with holding(ds, "backup vm/100", writer_with_chunk_store(BackupDir(VM100, T0))):
        upid = data_of(adm.delete("/config/datastore/kept"))  # nothing to wait for
        assert wait_task(adm, upid)["exitstatus"] == "OK"
    error_of(groups(adm, "kept"), 404)
    assert (path / "vm" / "100").is_dir()
    assert ds.list_groups(BackupNamespace.root())


# -- task 3: prompt shutdown over TLS --------------------------------------------------------

def https(srv: Server) -> http.client.HTTPSConnection:
    host, port = srv.base.removeprefix("https://").split(":")
    return http.client.HTTPSConnection(host, int(port), timeout=30,
                                       context=ssl._create_unverified_context())


def exit_within(srv: Server, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    code = srv.proc.wait(timeout=30)
    return code, time.monotonic() - started


def test_sigterm_with_an_idle_tls_keepalive_connection(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", http=False)
    try:
        conn = https(srv)
        conn.request("GET", API + "/version")
        r = conn.getresponse()
        assert r.status == 401 and r.read()
        assert r.getheader("connection") is None  # kept alive, now idle
        time.sleep(0.2)
        srv.proc.send_signal(signal.SIGTERM)
        code, seconds = exit_within(srv, 30)
        assert code == 0 and seconds < 3, (code, seconds, srv.output())
        assert "graceful shutdown exceeded" not in srv.output()
        conn.close()
    finally:
        stop(srv)


def test_sigterm_lets_an_inflight_download_finish(tmp_path: Path) -> None:
    prepare(tmp_path / "data", tmp_path / "src")
    snapdir = tmp_path / "data" / "store1" / "vm" / "100" / "2023-11-14T22:13:20Z"
    assert snapdir.is_dir()
    big = os.urandom(48 << 20)  # far more than the socket buffers hold
    (snapdir / "big.img.fidx").write_bytes(big)
    srv = start_server(tmp_path / "data", http=False)
    try:
        conn = https(srv)
        conn.request("POST", API + "/access/ticket",
                     body=urllib.parse.urlencode({"username": "admin@pbs",
                                                  "password": PASSWORD}),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        login_reply = conn.getresponse()
        ticket = json.loads(login_reply.read())["data"]["ticket"]
        query = urllib.parse.urlencode({"backup-type": "vm", "backup-id": "100",
                                        "backup-time": T0, "file-name": "big.img.fidx"})
        conn.request("GET", f"{API}/admin/datastore/store1/download?{query}",
                     headers={"Cookie": f"PBSAuthCookie={urllib.parse.quote(ticket)}"})
        r = conn.getresponse()
        assert r.status == 200 and int(r.getheader("content-length", "0")) == len(big)
        head = r.read(1 << 16)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert srv.proc.poll() is None, srv.output()  # the download holds the shutdown
        rest = r.read()
        assert head + rest == big
        code, seconds = exit_within(srv, 30)  # the connection stays open on our side
        assert code == 0 and seconds < 3, (code, seconds, srv.output())
        assert "graceful shutdown exceeded" not in srv.output()
        conn.close()
    finally:
        stop(srv)
