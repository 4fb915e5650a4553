"""A third-party PBS API client (proxmoxer, `service="PBS"`) against a real `chunkyard serve`
over HTTPS with its self-signed certificate: ticket login (cookie `PBSAuthCookie`, header
`CSRFPreventionToken` on writes) and API tokens (`Authorization: PBSAPIToken=...`).

The issue's acceptance: it logs in, lists datastores, namespaces, groups and snapshots,
creates a namespace, starts a move-group and sees its task finish OK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import proxmoxer
import pytest

from tests.server_helpers import PASSWORD, Server, prepare, start_server, stop
from tests.store_helpers import T0

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Server, dict[str, str]]]:
    root = tmp_path_factory.mktemp("thirdparty")
    secrets = prepare(root / "data", root / "src")
    srv = start_server(root / "data", http=False)
    try:
        yield srv, secrets
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()


def host_port(srv: Server) -> tuple[str, int]:
    host, port = srv.base.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def password_client(srv: Server) -> Any:
    host, port = host_port(srv)
    return proxmoxer.ProxmoxAPI(host, port=port, user="admin@pbs", password=PASSWORD,
                                service="PBS", verify_ssl=False, timeout=30)


def token_client(srv: Server, token: str) -> Any:
    host, port = host_port(srv)
    tokenid, secret = token.split(":", 1)
    user, name = tokenid.split("!")
    return proxmoxer.ProxmoxAPI(host, port=port, user=user, token_name=name,
                                token_value=secret, service="PBS", verify_ssl=False,
                                timeout=30)


def close(pbs: Any) -> None:
    """Drop proxmoxer's keep-alive connection: an idle HTTPS connection left open delays the
    server's SIGTERM stop by its whole graceful timeout (10 s; see the report)."""
    pbs._store["session"].close()


def status_of(call: Any) -> int:
    """The HTTP status of a refused call. Not `pytest.raises`: its kept traceback keeps
    requests' connection alive, which then delays the server's stop (see `close`)."""
    try:
        call()
    except proxmoxer.ResourceException as err:
        return int(err.status_code)
    raise AssertionError("the call succeeded")


def wait_finished(pbs: Any, upid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status: dict[str, Any] = pbs.nodes("localhost").tasks(upid).status.get()
        if status["status"] == "stopped" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def acceptance(pbs: Any, new_ns: str, group: tuple[str, str], source_ns: str) -> None:
    """The issue's steps, through proxmoxer's resource objects only."""
    assert pbs.version.get()["version"]
    stores = pbs.admin.datastore.get()
    assert [s["store"] for s in stores] == ["store1"]
    store = pbs.admin.datastore("store1")
    namespaces = [n["ns"] for n in store.namespace.get()]
    assert namespaces[0] == "" and {"a", "a/b", "c"} <= set(namespaces)
    groups = store.groups.get(ns=source_ns)
    assert (group[0], group[1]) in {(g["backup-type"], g["backup-id"]) for g in groups}
    snaps = store.snapshots.get(ns=source_ns, **{"backup-type": group[0],
                                                 "backup-id": group[1]})
    assert snaps and all(s["backup-time"] >= T0 for s in snaps)
    assert store.namespace.post(name=new_ns) == new_ns
    assert new_ns in [n["ns"] for n in store.namespace.get()]
    upid = store("move-group").post(ns=source_ns, **{"backup-type": group[0],
                                                     "backup-id": group[1],
                                                     "target-ns": new_ns})
    assert isinstance(upid, str) and upid.startswith("UPID:") and ":move-group:" in upid
    status = wait_finished(pbs, upid)
    assert status["status"] == "stopped" and status["exitstatus"] == "OK", status
    moved = store.groups.get(ns=new_ns)
    assert [(g["backup-type"], g["backup-id"]) for g in moved] == [group]
    assert len(store.snapshots.get(ns=new_ns)) == len(snaps)
    log = pbs.nodes("localhost").tasks(upid).log.get(limit=0)
    assert log[-1]["t"].endswith("TASK OK")
    listed = pbs.nodes("localhost").tasks.get(limit=0)
    assert upid in {t["upid"] for t in listed}


def test_proxmoxer_ticket_login(https_server: tuple[Server, dict[str, str]]) -> None:
    srv = https_server[0]
    pbs = password_client(srv)
    ticket, csrf = pbs.get_tokens()
    assert ticket.startswith("PBS:admin@pbs:") and csrf
    acceptance(pbs, "moved", ("vm", "100"), "")
    # proxmoxer's errors carry PBS's status and message
    assert status_of(lambda: pbs.admin.datastore("store1").namespace.post(name="moved")) == 400
    close(pbs)
    with pytest.raises(proxmoxer.AuthenticationError):
        host, port = host_port(srv)
        proxmoxer.ProxmoxAPI(host, port=port, user="admin@pbs", password="wrong",
                             service="PBS", verify_ssl=False, timeout=30)


def test_proxmoxer_api_token(https_server: tuple[Server, dict[str, str]]) -> None:
    srv, secrets = https_server
    pbs = token_client(srv, secrets["token"])
    assert pbs.get_tokens() == (None, None)
    acceptance(pbs, "moved-by-token", ("host", "web1"), "a")
    upid = pbs.admin.datastore("store1")("move-group").post(
        ns="moved-by-token", **{"backup-type": "host", "backup-id": "web1",
                                "target-ns": "a"})
    status = wait_finished(pbs, upid)
    assert status["exitstatus"] == "OK", status
    # PBS's task status: `user` is the user, `tokenid` the token name; the UPID has both
    assert status["user"] == "admin@pbs" and status["tokenid"] == "tok", status
    assert upid.endswith(":admin@pbs!tok:")
    bad = token_client(srv, secrets["token"].rsplit(":", 1)[0] + ":" + "0" * 36)
    assert status_of(bad.admin.datastore.get) == 401
    close(pbs)
    close(bad)
