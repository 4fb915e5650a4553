"""The REST API through a real HTTP client against a real `chunkyard serve` process.

One server (plain HTTP on loopback, a sparse default datastore, no failed-auth delay) serves
most tests; shutdown and HTTPS start their own. Before it starts, the data directory gets
the embedded default plus a few users, a token and backups made with the library.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

from tests.server_helpers import (
    API,
    JSON_TYPE,
    PASSWORD,
    Api,
    Server,
    data_of,
    error_of,
    login,
    start_server,
    stop,
    wait_task,
)
from tests.store_helpers import T0

# -- authentication -------------------------------------------------------------------------


def test_version_needs_authentication(server: tuple[Server, dict[str, str]],
                                      admin: Api) -> None:
    base = server[0].base
    r = httpx.get(base + API + "/version")
    assert error_of(r, 401) == "authentication failure"
    data = data_of(admin.get("/version"))
    assert set(data) == {"version", "release", "repoid"}
    assert json.loads(admin.get("/version").content) == {"data": data}


def test_login_failures_and_rate_limit(server: tuple[Server, dict[str, str]]) -> None:
    base = server[0].base + API + "/access/ticket"
    assert error_of(httpx.post(base, data={"username": "admin@pbs", "password": "nope"}),
                    401) == "authentication failure"
    error_of(httpx.post(base, data={"username": "admin@pbs"}), 400)
    for _ in range(5):
        error_of(httpx.post(base, data={"username": "ghost@pbs", "password": "x"}), 401)
    assert "too many failed login" in error_of(
        httpx.post(base, data={"username": "ghost@pbs", "password": "x"}), 429)
    # the JSON form works too, and renewing with the ticket as password
    r = httpx.post(base, json={"username": "admin@pbs", "password": PASSWORD})
    ticket = data_of(r)["ticket"]
    assert data_of(httpx.post(base, json={"username": "admin@pbs", "password": ticket}))


def test_extjs_format(server: tuple[Server, dict[str, str]], admin: Api) -> None:
    """/api2/extjs answers every endpoint with HTTP 200 and PBS's ExtJS envelope."""
    base = server[0].base + "/api2/extjs"
    client = admin.client
    extjs = "/api2/extjs"
    r = client.get(extjs + "/admin/datastore/store1/namespace")
    assert r.status_code == 200 and r.headers["content-type"] == JSON_TYPE
    body = r.json()
    assert body["success"] is True
    assert body["data"] == data_of(admin.get("/admin/datastore/store1/namespace"))
    r = client.get(extjs + "/admin/datastore/store1/groups", params={"ns": "no/such"})
    assert r.status_code == 200 and r.json()["success"] is False
    assert r.json()["status"] == 404 and r.json()["message"]
    r = client.get(extjs + "/admin/datastore/store1/groups", params={"bogus": "1"})
    assert r.json() == {"success": False, "message": "parameter verification errors",
                        "errors": {"bogus": r.json()["errors"]["bogus"]}, "status": 400}
    r = httpx.get(base + "/version")  # no credentials: PBS's delay, then the envelope
    assert r.status_code == 200 and r.json()["success"] is False
    assert r.json()["status"] == 401 and r.json()["message"] == "authentication failure"
    r = httpx.post(base + "/access/ticket", data={"username": "admin@pbs", "password": PASSWORD})
    assert r.json()["success"] is True and r.json()["data"]["ticket"].startswith("PBS:")
    r = client.get(extjs + "/no/such/path")
    assert r.status_code == 200 and r.json()["status"] == 404
    r = client.put(extjs + "/version", headers={"CSRFPreventionToken": admin.csrf})
    assert r.status_code == 200 and r.json()["status"] == 501
    assert client.get(API + "/no/such/path").status_code == 404  # /api2/json unchanged


def test_csrf_token_required_for_ticket_writes(admin: Api) -> None:
    no_csrf = Api(admin.client, "")
    error_of(no_csrf.post("/admin/datastore/store1/namespace", {"name": "csrf"}), 401)
    bad = Api(admin.client, admin.csrf[:-2] + "AA")
    error_of(bad.post("/admin/datastore/store1/namespace", {"name": "csrf"}), 401)
    assert data_of(admin.post("/admin/datastore/store1/namespace", {"name": "csrf"})) == "csrf"
    data_of(admin.delete("/admin/datastore/store1/namespace", ns="csrf"))


def test_api_token(server: tuple[Server, dict[str, str]]) -> None:
    srv, secrets = server
    client = httpx.Client(base_url=srv.base, timeout=30,
                          headers={"Authorization": f"PBSAPIToken={secrets['token']}"})
    api = Api(client)
    assert [d["store"] for d in data_of(api.get("/admin/datastore"))] == ["store1"]
    assert data_of(api.post("/admin/datastore/store1/namespace", {"name": "tok"})) == "tok"
    data_of(api.delete("/admin/datastore/store1/namespace", ns="tok"))
    spaced = httpx.get(srv.base + API + "/version",
                       headers={"Authorization": f"PBSAPIToken {secrets['token']}"})
    data_of(spaced)
    wrong = httpx.get(srv.base + API + "/version",
                      headers={"Authorization": "PBSAPIToken=admin@pbs!tok:" + "0" * 36})
    error_of(wrong, 401)
    garbage = httpx.get(srv.base + API + "/version",
                        headers={"Authorization": "PBSAPIToken=../../etc:x"})
    error_of(garbage, 401)
    error_of(httpx.get(srv.base + API + "/version",
                       headers={"Cookie": "PBSAuthCookie=PBS:admin@pbs:00000000::AAAA"}), 401)


# -- parameters and envelope ----------------------------------------------------------------


def test_parameter_rules(server: tuple[Server, dict[str, str]], admin: Api) -> None:
    text = error_of(admin.get("/admin/datastore/store1/groups", bogus="1"), 400)
    assert text.startswith("parameter verification errors")
    assert "parameter 'bogus': schema does not allow additional properties." in text
    data_of(admin.get("/admin/datastore/store1/groups", _dc="12345"))
    rows = data_of(admin.get("/nodes/localhost/tasks", running="YES"))
    assert isinstance(rows, list)
    assert "boolean" in error_of(admin.get("/nodes/localhost/tasks", running="maybe"), 400)
    assert "parameter 'limit'" in error_of(admin.get("/nodes/localhost/tasks", limit="-1"),
                                           400)
    path = API + "/admin/datastore/store1/namespace"
    # a JSON body ignores the query string; a form body merges it
    r = admin.client.post(path + "?name=fromquery", json={"name": "fromjson"},
                          headers={"CSRFPreventionToken": admin.csrf})
    assert data_of(r) == "fromjson"
    r = admin.client.post(path + "?parent=fromjson", data={"name": "x"},
                          headers={"CSRFPreventionToken": admin.csrf})
    assert data_of(r) == "fromjson/x"
    data_of(admin.delete("/admin/datastore/store1/namespace", ns="fromjson"))
    r = admin.client.post(path, content=b"name=y", headers={
        "CSRFPreventionToken": admin.csrf, "Content-Type": "text/plain"})
    assert "unsupported content type" in error_of(r, 400)
    r = admin.client.post(path, content=b"{", headers={
        "CSRFPreventionToken": admin.csrf, "Content-Type": "application/json"})
    error_of(r, 400)
    r = admin.client.post(path, content=b"x" * (512 * 1024 + 1), headers={
        "CSRFPreventionToken": admin.csrf,
        "Content-Type": "application/x-www-form-urlencoded"})
    error_of(r, 413)
    error_of(admin.post("/admin/datastore/store1/namespace", {"name": ["a", "b"]}), 400)
    assert error_of(admin.get("/no/such/path"), 404).startswith("Path '")
    error_of(admin.client.put(API + "/version", headers={"CSRFPreventionToken": admin.csrf}),
             501)


HOSTILE = ["..", "../etc", "a/../b", "/etc", ".hidden", "a\x00b", "a\nb", "x" * 300, "%2e%2e",
           "a//b", "ns/a", "-a", " a"]


def test_hostile_names(admin: Api) -> None:
    for bad in HOSTILE:
        for path in (f"/admin/datastore/{bad}/groups", f"/admin/datastore/{bad}/namespace",
                     f"/nodes/localhost/tasks/UPID:{bad}/status"):
            if bad.isprintable():  # httpx refuses control characters in a path
                r = admin.client.get(API + path.replace("%", "%25"))
                assert r.status_code in (400, 404), (bad, r.status_code, r.text)
        if bad in ("a//b", "ns/a"):  # valid syntax for a namespace ("ns" is a name)
            continue
        error_of(admin.get("/admin/datastore/store1/groups", ns=bad), 400)
        error_of(admin.get("/admin/datastore/store1/snapshots", **{"backup-id": bad}), 400)
        error_of(admin.post("/admin/datastore/store1/namespace", {"name": bad}), 400)
        error_of(admin.delete("/admin/datastore/store1/namespace", ns=bad or "x"), 400)
        error_of(admin.post("/admin/datastore/store1/move-group", {
            "backup-type": "vm", "backup-id": bad}), 400)
    error_of(admin.get("/admin/datastore/store1/snapshots", **{"backup-type": "pc"}), 400)
    error_of(admin.get("/nodes/bad_node!/tasks"), 400)


# -- datastore endpoints --------------------------------------------------------------------


def test_listings(admin: Api) -> None:
    stores = data_of(admin.get("/admin/datastore"))
    assert stores == [{"store": "store1", "mount-status": "nonremovable",
                       "backend-type": "filesystem"}]
    groups = data_of(admin.get("/admin/datastore/store1/groups"))
    by_name = {f"{g['backup-type']}/{g['backup-id']}": g for g in groups}
    assert by_name["vm/100"]["backup-count"] == 2
    assert by_name["vm/100"]["last-backup"] == T0 + 60
    assert by_name["vm/100"]["owner"] == "root@pam"
    snaps = data_of(admin.get("/admin/datastore/store1/snapshots",
                              **{"backup-type": "vm", "backup-id": "100"}))
    assert [s["backup-time"] for s in snaps] == [T0, T0 + 60]
    assert "index.json.blob" in {f["filename"] for f in snaps[0]["files"]}
    cts = data_of(admin.get("/admin/datastore/store1/snapshots", **{"backup-type": "ct"}))
    assert {s["backup-id"] for s in cts} == {"200"}
    in_a = data_of(admin.get("/admin/datastore/store1/groups", ns="a"))
    assert [g["backup-id"] for g in in_a] == ["web1"]
    nss = [n["ns"] for n in data_of(admin.get("/admin/datastore/store1/namespace"))]
    assert nss[0] == "" and {"a", "a/b", "c"} <= set(nss)
    assert [n["ns"] for n in data_of(admin.get("/admin/datastore/store1/namespace",
                                               parent="a", **{"max-depth": "0"}))] == ["a"]
    assert "no such datastore" in error_of(admin.get("/admin/datastore/nope/groups"), 404)
    error_of(admin.get("/admin/datastore/store1/groups", ns="missing"), 404)
    error_of(admin.get("/admin/datastore/store1/namespace", parent="missing"), 404)
    error_of(admin.get("/admin/datastore/store1/namespace", **{"max-depth": "8"}), 400)


def test_namespace_create_and_delete(admin: Api) -> None:
    ns = "/admin/datastore/store1/namespace"
    assert data_of(admin.post(ns, {"name": "n1"})) == "n1"
    assert data_of(admin.post(ns, {"name": "n2", "parent": "n1"})) == "n1/n2"
    assert "already exists" in error_of(admin.post(ns, {"name": "n1"}), 400)
    error_of(admin.post(ns, {"name": "x", "parent": "nothere"}), 404)
    error_of(admin.post(ns, {"name": "x" * 33}), 400)
    assert data_of(admin.delete(ns, ns="n1")) == {
        "removed-groups": 0, "protected-snapshots": 0, "removed-snapshots": 0}
    error_of(admin.delete(ns, ns="n1"), 404)
    error_of(admin.delete(ns), 400)  # ns is required; the root cannot be deleted anyway
    error_of(admin.delete(ns, ns=""), 400)
    # a namespace holding groups is kept without delete-groups (its empty child goes)
    assert "not empty" in error_of(admin.delete(ns, ns="a"), 400)


def test_privileges(server: tuple[Server, dict[str, str]]) -> None:
    base = server[0].base
    audit = login(base, "audit@pbs")
    assert [d["store"] for d in data_of(audit.get("/admin/datastore"))] == ["store1"]
    assert len(data_of(audit.get("/admin/datastore/store1/groups"))) >= 2
    assert "permission" in error_of(
        audit.post("/admin/datastore/store1/namespace", {"name": "z"}), 403)
    error_of(audit.post("/admin/datastore/store1/move-group",
                        {"backup-type": "vm", "backup-id": "100", "target-ns": "c"}), 403)
    nobody = login(base, "nobody@pbs")
    assert data_of(nobody.get("/admin/datastore")) == []
    error_of(nobody.get("/admin/datastore/store1/groups"), 403)
    error_of(nobody.get("/admin/datastore/nope/groups"), 403)  # not 404: existence hidden
    error_of(nobody.get("/admin/datastore/store1/namespace"), 403)
    error_of(nobody.get("/admin/datastore/store1/namespace", parent="missing"), 403)
    # Backup alone: only owned groups (root@pam owns them all here)
    backup_user = login(base, "backup@pbs")
    assert data_of(backup_user.get("/admin/datastore/store1/groups")) == []
    assert data_of(backup_user.get("/admin/datastore/store1/snapshots")) == []
    # others' tasks are invisible to them
    assert data_of(nobody.get("/nodes/localhost/tasks")) == []


# -- tasks ----------------------------------------------------------------------------------


def test_move_group_and_namespace_tasks(admin: Api) -> None:
    r = admin.post("/admin/datastore/store1/move-group",
                   {"backup-type": "ct", "backup-id": "200", "target-ns": "c"})
    upid = data_of(r)
    assert upid.startswith("UPID:") and ":move-group:" in upid
    status = wait_task(admin, upid)
    assert status["status"] == "stopped" and status["exitstatus"] == "OK", status
    assert status["type"] == "move-group" and status["user"] == "admin@pbs"
    assert status["id"] == "store1:/ct/200:c"  # PBS: "{store}:{ns}/{group}:{target}"
    in_c = data_of(admin.get("/admin/datastore/store1/groups", ns="c"))
    assert [g["backup-id"] for g in in_c] == ["200"]
    r = admin.get(f"/nodes/localhost/tasks/{upid}/log", **{"test-status": "1", "limit": "0"})
    body = r.json()
    assert body["total"] == len(body["data"]) and body["active"] is False
    assert body["data"][-1]["t"].endswith("TASK OK")
    assert [line["n"] for line in body["data"]] == list(range(1, body["total"] + 1))

    r = admin.post("/admin/datastore/store1/move-namespace", {"ns": "a", "target-ns": "c/a2"})
    upid2 = data_of(r)
    status = wait_task(admin, upid2)
    assert status["exitstatus"] == "OK", status
    assert status["id"] == "store1:a:c/a2"
    nss = [n["ns"] for n in data_of(admin.get("/admin/datastore/store1/namespace"))]
    assert "c/a2" in nss and "a" not in nss
    assert [g["backup-id"] for g in data_of(
        admin.get("/admin/datastore/store1/groups", ns="c/a2"))] == ["web1"]

    tasks = admin.get("/nodes/localhost/tasks", limit="1")
    assert tasks.json()["total"] >= 2 and len(tasks.json()["data"]) == 1
    listed = {t["upid"] for t in data_of(admin.get("/nodes/localhost/tasks", limit="0"))}
    assert {upid, upid2} <= listed
    assert "not running" in error_of(admin.delete(f"/nodes/localhost/tasks/{upid}"), 400)

    # a failing move: the task ends with the error, the API call itself succeeded
    r = admin.post("/admin/datastore/store1/move-group",
                   {"backup-type": "vm", "backup-id": "999", "target-ns": "c"})
    status = wait_task(admin, data_of(r))
    assert status["exitstatus"] not in ("OK", None) and "999" in status["exitstatus"]
    # refused before any task: the root namespace cannot be moved
    error_of(admin.post("/admin/datastore/store1/move-namespace",
                        {"ns": "", "target-ns": "x"}), 400)
    unknown = upid.replace(":move-group:", ":move-namespace:")
    error_of(admin.get(f"/nodes/localhost/tasks/{unknown}/status"), 404)


# -- process ----------------------------------------------------------------------------------


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data")
    api = login(srv.base)
    data_of(api.post("/admin/datastore/store1/namespace", {"name": "kept"}))
    assert stop(srv) == 0, srv.output()
    assert "stopped" in srv.output()
    leftovers = [p for p in (tmp_path / "data").rglob("*") if ".tmp" in p.name]
    assert leftovers == []
    assert (tmp_path / "data" / "store1" / "ns" / "kept").is_dir()
    # a second start keeps the configuration and prints no new password
    again = start_server(tmp_path / "data", env={"CHUNKYARD_ADMIN_PASSWORD": ""})
    try:
        login(again.base)
    finally:
        assert stop(again) == 0
    assert "created" not in again.output()


def test_generated_password_printed_once(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", env={"CHUNKYARD_ADMIN_PASSWORD": ""})
    try:
        lines = [ln for ln in srv.output().splitlines() if "with password:" in ln]
        assert len(lines) == 1
        login(srv.base, password=lines[0].rsplit(": ", 1)[1])
    finally:
        assert stop(srv) == 0


def test_https_fingerprint(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", http=False)
    try:
        printed = next(ln.split(": ", 1)[1] for ln in srv.output().splitlines()
                       if ln.startswith("fingerprint: "))
        host, port = srv.base.removeprefix("https://").split(":")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, int(port))) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        served = ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest())
        assert served == printed
        r = httpx.get(srv.base + API + "/version", verify=False)
        assert r.status_code == 401
    finally:
        assert stop(srv) == 0


def test_http_refused_off_loopback(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "chunkyard.cli.main", "serve", "--http",
                        "--listen", "0.0.0.0:8007", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "loopback" in r.stderr
    assert not (tmp_path / "d").exists()
