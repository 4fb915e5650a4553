"""Snapshot content, downloads, notes, protection, owner, deletion, prune, verify and GC
through the REST API (a real `chunkyard serve` process, a real HTTP client).

The module's own server runs on a data directory prepared like the shared one
(`server_helpers.prepare`) plus: a group `host/own` owned by backup@pbs holding a tar, an
image and a config blob; an encrypted snapshot; a snapshot in namespace `bad` whose index
no longer matches its manifest; groups to prune in namespace `p`; a power user
(DatastorePowerUser) and a token of backup@pbs.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.client.restore import iter_chunks
from chunkyard.config import ConfigDir
from chunkyard.config.accounts import create_token, set_password
from chunkyard.config.section import Section
from chunkyard.datastore.datastore import Datastore
from chunkyard.formats.crypt import CryptConfig
from chunkyard.names import Authid, BackupDir, BackupGroup, BackupNamespace, BackupType
from tests.server_helpers import (
    API,
    PASSWORD,
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
from tests.store_helpers import T0, backup, make_namespaces

STORE = "/admin/datastore/store1"
OWN = BackupGroup(BackupType.HOST, "own")
ENC = BackupGroup(BackupType.HOST, "enc")
BAD = BackupGroup(BackupType.HOST, "bad")
PRUNE = BackupGroup(BackupType.HOST, "prune")
IMAGE = bytes(range(256)) * 5000 + b"tail"  # not a multiple of the chunk size
CONF = b"memory: 2048\ncores: 4\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("content")
    data, src = root / "data", root / "src"
    secrets = prepare(data, src)
    cfg = ConfigDir(data / "etc")

    def users(config: Any) -> None:
        config.add(Section("user", "power@pbs", {}))

    cfg.update_user(users)
    set_password(cfg, Authid.parse("power@pbs"), PASSWORD)

    def acl(config: Any) -> None:
        config.insert("/datastore/store1", "power@pbs", "DatastorePowerUser", True)

    cfg.update_acl(acl)
    create_token(cfg, Authid.parse("backup@pbs!t"))
    (root / "disk.img").write_bytes(IMAGE)
    (root / "vm.conf").write_bytes(CONF)
    ds = Datastore.open(str(data / "store1"))
    root_ns = BackupNamespace.root()
    own = BackupDir(OWN, T0)
    run_backup(ds, BackupRequest(
        namespace=root_ns, group=OWN, backup_time=T0, owner=Authid.parse("backup@pbs"),
        archives=[ArchiveSpec.parse(f"root.tar:{src}"),
                  ArchiveSpec.parse(f"disk.img:{root / 'disk.img'}"),
                  ArchiveSpec.parse(f"vm.conf:{root / 'vm.conf'}")]))
    backup(ds, src, "", ENC, T0, crypt=CryptConfig(bytes(range(32))))
    make_namespaces(ds, "bad", "p", "p/q")
    bad = backup(ds, src, "bad", BAD, T0)
    src2 = root / "src2"
    src2.mkdir()
    (src2 / "other.txt").write_text("other content\n")
    other = backup(ds, src2, "bad", BAD, T0 + 1)  # its index differs from bad's
    bad_ns = BackupNamespace.parse("bad")
    snap_dir = Path(ds.path, "ns", "bad", "host", "bad")
    (snap_dir / bad.time_string / "root.tar.didx").write_bytes(
        (snap_dir / other.time_string / "root.tar.didx").read_bytes())
    assert ds.snapshot_exists(bad_ns, bad)
    for i in range(4):
        backup(ds, src, "p", PRUNE, T0 + 3600 * i)
        backup(ds, src, "p/q", PRUNE, T0 + 3600 * i)
    srv = start_server(data)
    try:
        yield {"server": srv, "secrets": secrets, "ds": ds, "own": own, "bad": bad,
               "root": root, "src": src}
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()


@pytest.fixture(scope="module")
def srv(env: dict[str, Any]) -> Server:
    server: Server = env["server"]
    return server


@pytest.fixture(scope="module")
def adm(srv: Server) -> Api:
    return login(srv.base)


def snap_params(group: BackupGroup, time: int, ns: str = "", **extra: str) -> dict[str, Any]:
    params: dict[str, Any] = {"backup-type": group.type.value, "backup-id": group.id,
                              "backup-time": str(time), **extra}
    if ns:
        params["ns"] = ns
    return params


def group_params(group: BackupGroup, ns: str = "", **extra: str) -> dict[str, Any]:
    params: dict[str, Any] = {"backup-type": group.type.value, "backup-id": group.id, **extra}
    if ns:
        params["ns"] = ns
    return params


def put(api: Api, path: str, data: dict[str, Any]) -> httpx.Response:
    return api.client.put(API + path, data=data,
                          headers={"CSRFPreventionToken": api.csrf} if api.csrf else {})


def task_log(api: Api, upid: str) -> list[str]:
    body = api.get(f"/nodes/localhost/tasks/{upid}/log", limit="0").json()
    return [line["t"] for line in body["data"]]


# -- status, files ---------------------------------------------------------------------------


def test_status(srv: Server, adm: Api) -> None:
    plain = data_of(adm.get(STORE + "/status"))
    assert set(plain) == {"total", "used", "avail", "backend-type"}
    assert plain["total"] >= plain["used"] > 0 and plain["backend-type"] == "filesystem"
    verbose = data_of(adm.get(STORE + "/status", verbose="1"))
    counts = verbose["counts"]
    assert counts["vm"] == {"groups": 1, "snapshots": 2}
    assert counts["host"]["groups"] >= 5  # own, enc, a/web1, bad/bad, p/prune, p/q/prune
    assert "index-file-count" in verbose["gc-status"]
    backup_user = login(srv.base, "backup@pbs")
    mine = data_of(backup_user.get(STORE + "/status", verbose="true"))
    assert mine["counts"] == {"host": {"groups": 1, "snapshots": 1}}
    assert "gc-status" not in mine
    data_of(login(srv.base, "audit@pbs").get(STORE + "/status"))
    error_of(login(srv.base, "nobody@pbs").get(STORE + "/status"), 403)
    error_of(login(srv.base, "nobody@pbs").get("/admin/datastore/nope/status"), 403)
    error_of(adm.get("/admin/datastore/nope/status"), 404)


def test_files(srv: Server, adm: Api) -> None:
    files = data_of(adm.get(STORE + "/files", **snap_params(OWN, T0)))
    names = [f["filename"] for f in files]
    assert names[-1] == "index.json.blob"
    assert set(names) == {"root.tar.didx", "disk.img.fidx", "vm.conf.blob", "index.json.blob"}
    assert all(f["crypt-mode"] == "none" and f["size"] > 0 for f in files)
    enc = data_of(adm.get(STORE + "/files", **snap_params(ENC, T0)))
    assert {f["crypt-mode"] for f in enc if f["filename"] != "index.json.blob"} == {"encrypt"}
    error_of(adm.get(STORE + "/files", **snap_params(OWN, T0 + 5)), 404)
    # Backup alone: own groups only; Audit sees all
    backup_user = login(srv.base, "backup@pbs")
    data_of(backup_user.get(STORE + "/files", **snap_params(OWN, T0)))
    error_of(backup_user.get(STORE + "/files", **snap_params(ENC, T0)), 403)
    data_of(login(srv.base, "audit@pbs").get(STORE + "/files", **snap_params(ENC, T0)))


# -- downloads -------------------------------------------------------------------------------

HOSTILE_FILES = ["../x.blob", "../../etc/passwd", "/etc/passwd", "/etc/x.blob", "a/../b.blob",
                 "index.json", "owner", ".protected", "root.tar", "x.txt", "..", ".",
                 "..blob", "a/b.blob", "%2e%2e/x.blob", "", "x" * 300 + ".blob"]


def test_download_raw_bytes(env: dict[str, Any], adm: Api) -> None:
    ds: Datastore = env["ds"]
    snap_dir = Path(ds.path, "host", "own", BackupDir(OWN, T0).time_string)
    for name in ("root.tar.didx", "disk.img.fidx", "vm.conf.blob", "index.json.blob"):
        r = adm.get(STORE + "/download", **snap_params(OWN, T0, **{"file-name": name}))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.content == (snap_dir / name).read_bytes()
    error_of(adm.get(STORE + "/download",
                     **snap_params(OWN, T0, **{"file-name": "client.log.blob"})), 404)


def test_download_hostile_names(srv: Server, adm: Api) -> None:
    for path in ("/download", "/download-decoded"):
        for bad in HOSTILE_FILES:
            r = adm.get(STORE + path, **snap_params(OWN, T0, **{"file-name": bad}))
            text = error_of(r, 400)
            assert "file-name" in text, (bad, text)
        error_of(adm.get(STORE + path, **snap_params(OWN, T0)), 400)  # file-name missing


def test_download_privileges(srv: Server, adm: Api) -> None:
    name = {"file-name": "vm.conf.blob"}
    backup_user = login(srv.base, "backup@pbs")
    assert backup_user.get(STORE + "/download", **snap_params(OWN, T0, **name)).status_code \
        == 200
    error_of(backup_user.get(STORE + "/download",
                             **snap_params(ENC, T0, **{"file-name": "root.tar.didx"})), 403)
    # Audit is not Read
    audit = login(srv.base, "audit@pbs")
    error_of(audit.get(STORE + "/download", **snap_params(OWN, T0, **name)), 403)
    error_of(audit.get(STORE + "/download-decoded", **snap_params(OWN, T0, **name)), 403)
    missing = BackupGroup(BackupType.VM, "nope")
    error_of(login(srv.base, "nobody@pbs").get(STORE + "/download",
                                               **snap_params(missing, T0, **name)), 403)


def test_download_decoded(env: dict[str, Any], adm: Api) -> None:
    ds: Datastore = env["ds"]
    root_ns = BackupNamespace.root()
    own = BackupDir(OWN, T0)

    def decoded(name: str, group: BackupGroup = OWN, ns: str = "",
                time: int = T0) -> httpx.Response:
        return adm.get(STORE + "/download-decoded",
                       **snap_params(group, time, ns, **{"file-name": name}))

    r = decoded("vm.conf.blob")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content == CONF
    assert decoded("disk.img.fidx").content == IMAGE
    tar = decoded("root.tar.didx").content
    expected = b"".join(iter_chunks(ds.chunk_store, ds.load_index(root_ns, own,
                                                                  "root.tar.didx"), None))
    assert tar == expected
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        name = next(n for n in t.getnames() if n.rstrip("/").endswith("file.txt"))
        member = t.extractfile(name)
        assert member is not None and member.read() == b"hello\n"
    assert b'"backup-id": "own"' in decoded("index.json.blob").content
    # encrypted: refused; an index that does not match the manifest: refused
    assert "is encrypted" in error_of(decoded("root.tar.didx", ENC), 400)
    assert "wrong" in error_of(decoded("root.tar.didx", BAD, "bad"), 400)
    error_of(decoded("other.img.fidx"), 404)


# -- notes, protection, owner ---------------------------------------------------------------


def test_notes_and_protection(srv: Server, adm: Api) -> None:
    snap = snap_params(OWN, T0)
    assert data_of(adm.get(STORE + "/notes", **snap)) == ""
    assert data_of(put(adm, STORE + "/notes", {**snap, "notes": "first line\nsecond"})) is None
    assert data_of(adm.get(STORE + "/notes", **snap)) == "first line\nsecond"
    group = group_params(OWN)
    assert data_of(adm.get(STORE + "/group-notes", **group)) == ""
    data_of(put(adm, STORE + "/group-notes", {**group, "notes": "group notes"}))
    assert data_of(adm.get(STORE + "/group-notes", **group)) == "group notes"
    assert data_of(adm.get(STORE + "/protected", **snap)) is False
    data_of(put(adm, STORE + "/protected", {**snap, "protected": "1"}))
    assert data_of(adm.get(STORE + "/protected", **snap)) is True
    error_of(put(adm, STORE + "/protected", {**snap, "protected": "maybe"}), 400)
    error_of(adm.get(STORE + "/notes", **snap_params(OWN, T0 + 9)), 404)
    # the owner (Backup only) may change its own group, not others'; Audit only reads
    owner = login(srv.base, "backup@pbs")
    data_of(put(owner, STORE + "/protected", {**snap, "protected": "false"}))
    data_of(put(owner, STORE + "/notes", {**snap, "notes": "mine"}))
    enc = snap_params(ENC, T0)
    error_of(put(owner, STORE + "/notes", {**enc, "notes": "x"}), 403)
    error_of(owner.get(STORE + "/group-notes", **group_params(ENC)), 403)
    audit = login(srv.base, "audit@pbs")
    assert data_of(audit.get(STORE + "/notes", **snap)) == "mine"
    error_of(put(audit, STORE + "/notes", {**snap, "notes": "x"}), 403)
    error_of(put(audit, STORE + "/protected", {**enc, "protected": "1"}), 403)
    error_of(put(login(srv.base, "nobody@pbs"), STORE + "/group-notes",
                 {**group, "notes": "x"}), 403)


def test_change_owner(srv: Server, adm: Api) -> None:
    group = group_params(OWN)
    path = STORE + "/change-owner"
    owner = login(srv.base, "backup@pbs")

    def current() -> str:
        rows = data_of(adm.get(STORE + "/groups"))
        return str(next(g["owner"] for g in rows if g["backup-id"] == "own"))

    # Backup alone: user -> own token -> user, never to another user
    data_of(owner.post(path, {**group, "new-owner": "backup@pbs!t"}))
    assert current() == "backup@pbs!t"
    data_of(owner.post(path, {**group, "new-owner": "backup@pbs"}))
    assert current() == "backup@pbs"
    error_of(owner.post(path, {**group, "new-owner": "audit@pbs"}), 403)
    error_of(owner.post(path, {**group_params(ENC), "new-owner": "backup@pbs"}), 403)
    error_of(login(srv.base, "audit@pbs").post(path, {**group, "new-owner": "audit@pbs"}),
             403)
    # Modify: anyone active; the new owner must exist
    assert "inactive or non-existent" in error_of(
        adm.post(path, {**group, "new-owner": "ghost@pbs"}), 400)
    assert "API token" in error_of(adm.post(path, {**group, "new-owner": "backup@pbs!nope"}),
                                   400)
    error_of(adm.post(path, {**group, "new-owner": "not an authid"}), 400)
    data_of(adm.post(path, {**group, "new-owner": "audit@pbs"}))
    assert current() == "audit@pbs"
    data_of(adm.post(path, {**group, "new-owner": "backup@pbs"}))
    error_of(adm.post(path, {**group_params(BackupGroup(BackupType.VM, "404")),
                             "new-owner": "audit@pbs"}), 404)


# -- deletion --------------------------------------------------------------------------------


def test_delete_snapshots_and_groups(env: dict[str, Any], srv: Server, adm: Api) -> None:
    ds: Datastore = env["ds"]
    group = BackupGroup(BackupType.HOST, "del")
    backup(ds, env["src"], "", group, T0)
    backup(ds, env["src"], "", group, T0 + 1)
    backup(ds, env["src"], "", group, T0 + 2)
    data_of(put(adm, STORE + "/protected", {**snap_params(group, T0), "protected": "1"}))
    # Backup or Audit alone may not delete; a protected snapshot stays
    error_of(login(srv.base, "backup@pbs").delete(STORE + "/snapshots",
                                                  **snap_params(OWN, T0)), 403)
    error_of(login(srv.base, "audit@pbs").delete(STORE + "/groups", **group_params(group)),
             403)
    assert "protected" in error_of(adm.delete(STORE + "/snapshots",
                                              **snap_params(group, T0)), 400)
    assert data_of(adm.delete(STORE + "/snapshots", **snap_params(group, T0 + 2))) is None
    error_of(adm.delete(STORE + "/snapshots", **snap_params(group, T0 + 2)), 404)
    assert "protected" in error_of(adm.delete(STORE + "/groups", **group_params(group)), 400)
    assert not ds.snapshot_exists(BackupNamespace.root(), BackupDir(group, T0 + 1))
    data_of(put(adm, STORE + "/protected", {**snap_params(group, T0), "protected": "0"}))
    assert data_of(adm.delete(STORE + "/groups", **group_params(group))) == {
        "removed-groups": 1, "protected-snapshots": 0, "removed-snapshots": 1}
    error_of(adm.delete(STORE + "/groups", **group_params(group)), 404)


# -- prune -----------------------------------------------------------------------------------


def test_prune_group(srv: Server, adm: Api) -> None:
    path = STORE + "/prune"
    params = group_params(PRUNE, "p/q", **{"keep-last": "2"})
    rows = data_of(adm.post(path, {**params, "dry-run": "1"}))
    assert [r["backup-time"] for r in rows] == [T0 + 3600 * i for i in range(4)]
    assert [r["keep"] for r in rows] == [False, False, True, True]
    assert all(r["ns"] == "p/q" and r["protected"] is False for r in rows)
    assert set(rows[0]) == {"backup-type", "backup-id", "backup-time", "keep", "protected",
                            "ns"}
    # Audit or Backup alone (not the owner) may not prune
    error_of(login(srv.base, "audit@pbs").post(path, params), 403)
    error_of(login(srv.base, "power@pbs").post(path, params), 403)  # root@pam owns it
    error_of(adm.post(path, {**params, "keep-last": "0"}), 400)
    upid = data_of(adm.post(path, {**params, "keep-last": "3", "use-task": "1"}))
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "OK" and status["type"] == "prune", status
    assert status["id"] == "store1:p/q:host/prune"
    log = task_log(adm, upid)
    assert any("retention options: --keep-last 3" in line for line in log)
    assert log[-1].endswith("TASK OK")
    left = data_of(adm.get(STORE + "/snapshots", ns="p/q"))
    assert [s["backup-time"] for s in left] == [T0 + 3600 * i for i in range(1, 4)]
    rows = data_of(adm.post(path, params))  # inline, still a logged task
    assert [r["keep"] for r in rows] == [False, True, True]
    assert len(data_of(adm.get(STORE + "/snapshots", ns="p/q"))) == 2
    error_of(adm.post(path, group_params(BackupGroup(BackupType.VM, "404"))), 404)


def test_prune_datastore(srv: Server, adm: Api) -> None:
    path = STORE + "/prune-datastore"
    upid = data_of(adm.post(path, {"ns": "p", "max-depth": "0", "keep-last": "1",
                                   "dry-run": "true"}))
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "OK" and status["id"] == "store1:p", status
    log = task_log(adm, upid)
    assert any("Pruning group p:host/prune" in line for line in log)
    assert not any("p/q" in line for line in log)  # max-depth 0
    assert len(data_of(adm.get(STORE + "/snapshots", ns="p"))) == 4
    error_of(login(srv.base, "audit@pbs").post(path, {"ns": "p", "keep-last": "1"}), 403)
    # Prune without Modify: only owned groups (none of p's)
    upid = data_of(login(srv.base, "power@pbs").post(path, {"ns": "p", "keep-last": "1"}))
    assert wait_task(adm, upid)["exitstatus"] == "OK"
    assert len(data_of(adm.get(STORE + "/snapshots", ns="p"))) == 4
    upid = data_of(adm.post(path, {"ns": "p", "max-depth": "0", "keep-last": "1"}))
    assert wait_task(adm, upid)["exitstatus"] == "OK"
    assert len(data_of(adm.get(STORE + "/snapshots", ns="p"))) == 1
    assert any("progress: 100%" in line for line in task_log(adm, upid))
    error_of(adm.post(path, {"ns": "nothere", "keep-last": "1"}), 404)


# -- verify ----------------------------------------------------------------------------------


def test_verify(srv: Server, adm: Api, env: dict[str, Any]) -> None:
    path = STORE + "/verify"
    upid = data_of(adm.post(path, {**group_params(OWN), "ignore-verified": "false"}))
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "OK", (status, task_log(adm, upid))
    assert status["type"] == "verify_group" and status["id"] == "store1:/host/own"
    snaps = data_of(adm.get(STORE + "/snapshots", **group_params(OWN)))
    assert snaps[0]["verification"] == {"upid": upid, "state": "ok"}
    # a snapshot whose index does not match: the task fails with PBS's message
    upid = data_of(adm.post(path, snap_params(BAD, T0, "bad")))
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "verification failed - please check the log for details"
    assert status["type"] == "verify_snapshot"
    assert status["id"] == f"store1:ns/bad/host/bad/{T0:08X}"  # PBS: ns/a/ns/b form
    log = task_log(adm, upid)
    assert "Failed to verify the following snapshots/groups:" in "\n".join(log)
    # the whole root namespace only (max-depth 0), recently verified ones skipped
    upid = data_of(adm.post(path, {"max-depth": "0"}))
    status = wait_task(adm, upid)
    assert status["exitstatus"] == "OK" and status["type"] == "verify"
    assert status["id"] == "store1"
    assert any("SKIPPED" in line and "host/own" in line for line in task_log(adm, upid))
    # Backup alone: own groups; a namespace-wide verify covers only those
    owner = login(srv.base, "backup@pbs")
    error_of(owner.post(path, group_params(ENC)), 403)
    upid = data_of(owner.post(path, {"max-depth": "0", "ignore-verified": "0"}))
    assert wait_task(owner, upid)["exitstatus"] == "OK"
    log = "\n".join(task_log(owner, upid))
    assert "1 snapshot(s) to verify" in log and "host/own" in log
    error_of(login(srv.base, "audit@pbs").post(path, {}), 403)
    error_of(adm.post(path, {"backup-type": "vm"}), 400)
    error_of(adm.post(path, {"read-threads": "33"}), 400)
    error_of(adm.post(path, snap_params(OWN, T0 + 7)), 404)


# -- garbage collection ----------------------------------------------------------------------


def test_gc(srv: Server, adm: Api) -> None:
    before = data_of(adm.get(STORE + "/gc"))
    assert before["store"] == "store1" and "index-file-count" in before
    error_of(login(srv.base, "audit@pbs").post(STORE + "/gc"), 403)
    error_of(login(srv.base, "backup@pbs").get(STORE + "/gc"), 403)
    upid = data_of(adm.post(STORE + "/gc"))
    status = wait_task(adm, upid)
    log = task_log(adm, upid)
    assert status["exitstatus"] == "OK", log
    assert status["type"] == "garbage_collection" and status["id"] == "store1"
    assert "Start GC phase1 (mark used chunks)" in log[1], log
    assert any("Start GC phase2 (sweep unused chunks)" in line for line in log[2:]), log
    assert any(line.endswith("On-Disk chunks: " + line.rsplit(" ", 1)[-1])
               for line in log if "On-Disk chunks" in line)
    after = data_of(login(srv.base, "audit@pbs").get(STORE + "/gc"))
    assert after["upid"] == upid and after["last-run-state"] == "OK"
    assert after["index-file-count"] > 0 and after["duration"] >= 0
    assert "last-run-endtime" in after
    error_of(adm.get("/admin/datastore/nope/gc"), 404)


def test_gc_abort(srv: Server, adm: Api) -> None:
    """A GC task stopped during its atime check (two 1 s sleeps) ends at the next index with
    PBS's abort message, and `.gc-status` keeps the last complete run."""
    done = data_of(adm.post(STORE + "/gc"))
    assert wait_task(adm, done)["exitstatus"] == "OK"
    upid = data_of(adm.post(STORE + "/gc"))
    deadline = time.monotonic() + 10
    while not any("starting garbage collection" in line for line in task_log(adm, upid)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # inside the check's first second
    data_of(adm.delete(f"/nodes/localhost/tasks/{upid}"))
    status = wait_task(adm, upid)
    log = task_log(adm, upid)
    assert status["exitstatus"] == "abort requested - aborting task", log
    assert "received abort request ..." in "\n".join(log)
    assert not any("Removed garbage" in line for line in log)
    assert data_of(adm.get(STORE + "/gc"))["upid"] == done
