"""Users, API tokens, passwords, ACLs, permissions and datastore configuration through the
REST API, against a real `chunkyard serve` process (tests/server_helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from chunkyard.datastore.datastore import Datastore
from tests.server_helpers import (
    API,
    PASSWORD,
    Api,
    Server,
    data_of,
    error_of,
    login,
    wait_task,
)

SrvFixture = tuple[Server, dict[str, str]]
CHANGED = "detected modified configuration - file changed by other user? Try again."


def put(api: Api, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"CSRFPreventionToken": api.csrf} if api.csrf else {}
    return api.client.put(API + path, data=data, headers=headers)


def token_api(srv: Server, tokenid: str, secret: str) -> Api:
    client = httpx.Client(base_url=srv.base, timeout=30,
                          headers={"Authorization": f"PBSAPIToken={tokenid}:{secret}"})
    return Api(client)


def make_user(admin: Api, userid: str, **extra: Any) -> None:
    data_of(admin.post("/access/users", {"userid": userid, "password": PASSWORD, **extra}))


def grant(admin: Api, path: str, authid: str, role: str, **extra: Any) -> None:
    data_of(put(admin, "/access/acl", {"path": path, "auth-id": authid, "role": role,
                                       **extra}))


def get(api: Api, endpoint: str, /, **params: Any) -> httpx.Response:
    """GET with any parameter names (`Api.get` takes `path` itself)."""
    return api.client.get(API + endpoint, params=params)


def acl_of(api: Api, ugid: str | None = None, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data_of(get(api, "/access/acl", **params))
    return [r for r in rows if ugid is None or r["ugid"] == ugid]


# -- users ------------------------------------------------------------------------------------

def test_user_lifecycle_and_digest(server: SrvFixture, admin: Api) -> None:
    make_user(admin, "alice@pbs", comment="first", email="alice@example.com")
    assert "already exists" in error_of(admin.post("/access/users", {"userid": "alice@pbs"}),
                                        400)
    r = admin.get("/access/users/alice@pbs")
    user, digest = data_of(r), r.json()["digest"]
    assert user == {"userid": "alice@pbs", "comment": "first", "email": "alice@example.com"}
    listed = admin.get("/access/users")
    assert "alice@pbs" in [u["userid"] for u in data_of(listed)]
    assert len(listed.json()["digest"]) == 64
    data_of(put(admin, "/access/users/alice@pbs", {"comment": "second", "digest": digest,
                                                    "delete": "email", "expire": "0"}))
    assert data_of(admin.get("/access/users/alice@pbs")) == {"userid": "alice@pbs",
                                                              "comment": "second"}
    assert error_of(put(admin, "/access/users/alice@pbs", {"comment": "x", "digest": digest}),
                    400) == CHANGED
    login(server[0].base, "alice@pbs")  # the password works
    data_of(put(admin, "/access/users/alice@pbs", {"enable": "0"}))
    r = httpx.post(server[0].base + API + "/access/ticket",
                   data={"username": "alice@pbs", "password": PASSWORD})
    error_of(r, 401)
    error_of(admin.get("/access/users/ghost@pbs"), 404)
    error_of(admin.delete("/access/users/ghost@pbs"), 404)
    data_of(admin.delete("/access/users/alice@pbs"))
    assert "alice@pbs" not in [u["userid"] for u in data_of(admin.get("/access/users"))]


def test_hostile_user_ids_and_values(admin: Api) -> None:
    for bad in ("bad user@pbs", "x@pbs!tok", "a,b@pbs", "a/b@pbs", "x@pb s", "x@pbs\n",
                "a" * 70 + "@pbs", "nobody"):
        assert "parameter 'userid'" in error_of(admin.post("/access/users",
                                                           {"userid": bad}), 400), bad
    for field, bad in (("comment", "two\nlines"), ("firstname", "x"), ("expire", "-1"),
                       ("enable", "maybe")):
        error_of(admin.post("/access/users", {"userid": "ok@pbs", field: bad}), 400)
    error_of(put(admin, "/access/users/audit@pbs", {"delete": "userid"}), 400)
    error_of(admin.post("/access/users", {"userid": "pamuser@pam", "password": PASSWORD}),
             400)
    error_of(admin.get("/access/users/admin@pbs/token/bad name"), 400)


def test_non_admin_rules_and_own_password(server: SrvFixture, admin: Api) -> None:
    make_user(admin, "bob@pbs")
    bob = login(server[0].base, "bob@pbs")
    error_of(bob.post("/access/users", {"userid": "evil@pbs"}), 403)
    error_of(bob.delete("/access/users/audit@pbs"), 403)
    error_of(bob.get("/access/users/audit@pbs"), 403)
    assert [u["userid"] for u in data_of(bob.get("/access/users"))] == ["bob@pbs"]
    assert data_of(bob.get("/access/users/bob@pbs"))["userid"] == "bob@pbs"
    data_of(put(bob, "/access/users/bob@pbs", {"comment": "mine"}))
    error_of(put(bob, "/access/users/bob@pbs", {"enable": "1"}), 403)
    # ACLs: no Permissions.Modify, so only its own tokens' entries
    error_of(put(bob, "/access/acl", {"path": "/", "auth-id": "bob@pbs", "role": "Admin"}),
             403)
    error_of(put(bob, "/access/acl", {"path": "/", "auth-id": "audit@pbs!t",
                                      "role": "Admin"}), 403)
    error_of(put(bob, "/access/acl", {"path": "/", "group": "g", "role": "Admin"}), 403)
    # passwords: its own, not another's
    error_of(put(bob, "/access/password", {"userid": "audit@pbs", "password": "hijack123"}),
             403)
    data_of(put(bob, "/access/password", {"userid": "bob@pbs", "password": "new secret"}))
    login(server[0].base, "bob@pbs", "new secret")
    error_of(put(bob, "/access/password", {"userid": "bob@pbs", "password": "abc"}), 400)
    # an admin changes another's
    data_of(put(admin, "/access/password", {"userid": "bob@pbs", "password": PASSWORD}))
    login(server[0].base, "bob@pbs")
    error_of(put(admin, "/access/password", {"userid": "ghost@pbs", "password": PASSWORD}),
             404)


# -- tokens -------------------------------------------------------------------------------------

def test_token_lifecycle_and_capped_privileges(server: SrvFixture, admin: Api) -> None:
    srv = server[0]
    make_user(admin, "carol@pbs")
    grant(admin, "/datastore/store1", "carol@pbs", "DatastoreAudit")
    carol = login(srv.base, "carol@pbs")
    created = data_of(carol.post("/access/users/carol@pbs/token/t1", {"comment": "ci"}))
    assert created["tokenid"] == "carol@pbs!t1" and created["value"]
    error_of(carol.post("/access/users/carol@pbs/token/t1"), 400)  # exists
    error_of(carol.post("/access/users/audit@pbs/token/t1"), 403)  # not hers
    tokens = data_of(carol.get("/access/users/carol@pbs/token"))
    assert tokens == [{"tokenid": "carol@pbs!t1", "comment": "ci", "token-name": "t1"}]
    with_tokens = data_of(admin.get("/access/users", include_tokens="1"))
    assert [u.get("tokens") for u in with_tokens if u["userid"] == "carol@pbs"] == [
        [{"tokenid": "carol@pbs!t1", "comment": "ci"}]]
    tok = token_api(srv, "carol@pbs!t1", created["value"])
    # works at once, but without ACL entries of its own it has no privileges
    data_of(tok.get("/version"))
    error_of(tok.get("/admin/datastore/store1/groups"), 403)
    # carol may give her own token any role: it never exceeds her privileges
    grant(carol, "/", "carol@pbs!t1", "Admin")
    assert data_of(tok.get("/admin/datastore/store1/groups"))
    error_of(tok.post("/admin/datastore/store1/namespace", {"name": "tokns"}), 403)
    perms = data_of(tok.get("/access/permissions"))
    assert perms == {"/datastore/store1": {"Datastore.Audit": True}}
    assert data_of(carol.get("/access/permissions", **{"auth-id": "carol@pbs!t1"})) == perms
    error_of(carol.get("/access/permissions", **{"auth-id": "admin@pbs"}), 403)
    # a token changes no password and no ACL without Permissions.Modify
    error_of(put(tok, "/access/password", {"userid": "carol@pbs", "password": "whatever"}),
             403)
    error_of(put(tok, "/access/acl", {"path": "/", "auth-id": "carol@pbs!t1",
                                      "role": "NoAccess"}), 403)
    # carol sees the entries of her tokens only
    assert acl_of(carol) == [{"path": "/", "ugid": "carol@pbs!t1", "ugid_type": "user",
                              "roleid": "Admin", "propagate": True}]
    assert acl_of(tok) == []
    # regenerate: the old secret stops working, the new one works
    r = data_of(put(carol, "/access/users/carol@pbs/token/t1",
                    {"regenerate": "1", "delete": "comment"}))
    assert r["tokenid"] == "carol@pbs!t1"
    error_of(tok.get("/version"), 401)
    tok2 = token_api(srv, "carol@pbs!t1", r["secret"])
    data_of(tok2.get("/version"))
    assert data_of(carol.get("/access/users/carol@pbs/token/t1")) == {
        "tokenid": "carol@pbs!t1"}
    data_of(put(carol, "/access/users/carol@pbs/token/t1", {"enable": "0"}))
    error_of(tok2.get("/version"), 401)
    data_of(put(carol, "/access/users/carol@pbs/token/t1", {"enable": "1"}))
    data_of(tok2.get("/version"))
    # DELETE: the secret stops working, the token's ACL entries are gone
    data_of(carol.delete("/access/users/carol@pbs/token/t1"))
    error_of(tok2.get("/version"), 401)
    assert acl_of(admin, "carol@pbs!t1") == []
    error_of(carol.get("/access/users/carol@pbs/token/t1"), 404)


def test_admin_token_secret_works_and_delete_user_cleans_up(server: SrvFixture,
                                                            admin: Api) -> None:
    srv = server[0]
    make_user(admin, "dave@pbs")
    created = data_of(admin.post("/access/users/dave@pbs/token/job"))
    grant(admin, "/datastore/store1", "dave@pbs", "DatastoreAdmin")
    grant(admin, "/datastore/store1", "dave@pbs!job", "DatastoreReader", propagate="0")
    tok = token_api(srv, "dave@pbs!job", created["value"])
    assert data_of(tok.get("/admin/datastore/store1/groups"))
    assert len(acl_of(admin, "dave@pbs")) == 1 and len(acl_of(admin, "dave@pbs!job")) == 1
    digest = admin.get("/access/users").json()["digest"]
    data_of(admin.post("/access/users/dave@pbs/token/other"))
    error_of(admin.delete("/access/users/dave@pbs", digest=digest), 400)  # stale digest
    data_of(admin.delete("/access/users/dave@pbs"))
    assert acl_of(admin, "dave@pbs") == [] and acl_of(admin, "dave@pbs!job") == []
    error_of(tok.get("/version"), 401)
    error_of(admin.get("/access/users/dave@pbs/token"), 404)
    # deleting an ACL entry of a vanished user is allowed (PBS)
    data_of(put(admin, "/access/acl", {"path": "/", "auth-id": "dave@pbs", "role": "Admin",
                                       "delete": "1"}))


# -- ACLs --------------------------------------------------------------------------------------

def test_acl_updates_filters_and_validation(admin: Api) -> None:
    make_user(admin, "erin@pbs")
    r = admin.get("/access/acl")
    digest = r.json()["digest"]
    grant(admin, "/datastore/store1/a", "erin@pbs", "DatastoreReader", propagate="0",
          digest=digest)
    error_of(put(admin, "/access/acl", {"path": "/", "auth-id": "erin@pbs",
                                        "role": "Audit", "digest": digest}), 400)
    assert acl_of(admin, "erin@pbs", path="/datastore/store1/a", exact="1") == [
        {"path": "/datastore/store1/a", "ugid": "erin@pbs", "ugid_type": "user",
         "roleid": "DatastoreReader", "propagate": False}]
    assert acl_of(admin, "erin@pbs", path="/datastore/store1", exact="1") == []
    assert len(acl_of(admin, "erin@pbs", path="/datastore")) == 1
    assert acl_of(admin, path="/datastore/nowhere") == []
    # the target must exist, paths and roles must be valid
    assert "no such user" in error_of(put(admin, "/access/acl", {
        "path": "/", "auth-id": "ghost@pbs", "role": "Admin"}), 400)
    assert "no such API token" in error_of(put(admin, "/access/acl", {
        "path": "/", "auth-id": "erin@pbs!none", "role": "Admin"}), 400)
    for path in ("/datastore/../etc", "//", "/foo", "datastore", "/datastore/store1/a\nb",
                 "/datastore/s1/" + "/".join("n" * 9), "/access/bogus", "/datastore/x y"):
        error_of(put(admin, "/access/acl", {"path": path, "auth-id": "erin@pbs",
                                            "role": "Admin"}), 400)
    for role in ("Superuser", "admin", "Admin,Audit", ""):
        error_of(put(admin, "/access/acl", {"path": "/", "auth-id": "erin@pbs",
                                            "role": role}), 400)
    for authid in ("erin", "a,b@pbs", "x@pbs:y"):
        error_of(put(admin, "/access/acl", {"path": "/", "auth-id": authid,
                                            "role": "Admin"}), 400)
    assert "groups are currently not supported" in error_of(put(admin, "/access/acl", {
        "path": "/", "group": "ops", "role": "Admin"}), 400)
    error_of(put(admin, "/access/acl", {"path": "/", "role": "Admin"}), 400)
    error_of(get(admin, "/access/acl", path="../x"), 400)
    # permissions: of another user needs Sys.Audit on /access (admin has it)
    perms = data_of(admin.get("/access/permissions", **{"auth-id": "erin@pbs"}))
    assert perms == {"/datastore/store1/a": {"Datastore.Audit": False,
                                             "Datastore.Read": False,
                                             "Datastore.Verify": False}}
    assert data_of(get(admin, "/access/permissions", path="/datastore/store1",
                             **{"auth-id": "erin@pbs"})) == {}
    assert data_of(get(admin, "/access/permissions", path="/"))["/"]["Sys.Audit"] is True
    data_of(put(admin, "/access/acl", {"path": "/datastore/store1/a", "auth-id": "erin@pbs",
                                       "role": "DatastoreReader", "delete": "1"}))
    assert acl_of(admin, "erin@pbs") == []


def test_namespace_move_rewrites_acl_paths(admin: Api) -> None:
    data_of(admin.post("/admin/datastore/store1/namespace", {"name": "mvsrc"}))
    data_of(admin.post("/admin/datastore/store1/namespace", {"name": "inner",
                                                              "parent": "mvsrc"}))
    grant(admin, "/datastore/store1/mvsrc", "audit@pbs", "DatastoreReader")
    grant(admin, "/datastore/store1/mvsrc/inner", "backup@pbs", "DatastorePowerUser")
    upid = data_of(admin.post("/admin/datastore/store1/move-namespace",
                              {"ns": "mvsrc", "target-ns": "mvdst"}))
    assert wait_task(admin, upid)["exitstatus"] == "OK"
    paths = {(r["path"], r["ugid"]) for r in acl_of(admin, path="/datastore/store1")}
    assert ("/datastore/store1/mvdst", "audit@pbs") in paths
    assert ("/datastore/store1/mvdst/inner", "backup@pbs") in paths
    assert not [p for p, _ in paths if p.startswith("/datastore/store1/mvsrc")]


# -- /config/datastore ---------------------------------------------------------------------------

def test_config_datastore(server: SrvFixture, admin: Api, tmp_path: Path) -> None:
    srv = server[0]
    rows = data_of(admin.get("/config/datastore"))
    assert [r["name"] for r in rows] == ["store1"]
    assert rows[0]["path"].endswith("store1")
    nobody = login(srv.base, "nobody@pbs")
    assert data_of(nobody.get("/config/datastore")) == []
    path = tmp_path / "second"
    Datastore.create(str(path), sparse=True)
    error_of(nobody.post("/config/datastore", {"name": "second", "path": str(path),
                                               "reuse-datastore": "1"}), 403)
    error_of(nobody.get("/config/datastore/store1"), 403)
    for name in ("../x", "a b", "x", "s/t"):
        error_of(admin.post("/config/datastore", {"name": name, "path": str(path)}), 400)
    for bad in ({"path": "relative"}, {"path": str(path), "tuning": "sync-level=bogus"},
                {"path": str(path), "backend": "type=s3"},
                {"path": str(srv.data / "store1" / "sub")},
                {"path": str(path), "comment": "a\nb"}):
        error_of(admin.post("/config/datastore", {"name": "second", **bad}), 400)
    assert "already exists" in error_of(admin.post("/config/datastore", {
        "name": "store1", "path": str(tmp_path / "other")}), 400)
    # a directory with contents is refused by the task (nothing is configured)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    upid = data_of(admin.post("/config/datastore", {"name": "busy", "path": str(busy)}))
    assert wait_task(admin, upid)["exitstatus"] != "OK"
    error_of(admin.get("/config/datastore/busy"), 404)
    # create (re-using a sparse store: a full one takes seconds), visible to the server
    upid = data_of(admin.post("/config/datastore", {
        "name": "second", "path": str(path), "reuse-datastore": "1", "comment": "two",
        "tuning": "sync-level=file"}))
    assert upid.split(":")[6] == "create-datastore"
    assert wait_task(admin, upid)["exitstatus"] == "OK"
    r = admin.get("/config/datastore/second")
    entry, digest = data_of(r), r.json()["digest"]
    assert entry == {"name": "second", "path": str(path), "comment": "two",
                     "tuning": "sync-level=file"}
    assert data_of(admin.get("/admin/datastore/second/groups")) == []
    assert "second" in [d["store"] for d in data_of(admin.get("/admin/datastore"))]
    # update, delete list, digest
    data_of(put(admin, "/config/datastore/second", {"gc-schedule": "daily",
                                                     "delete": "comment", "digest": digest}))
    assert error_of(put(admin, "/config/datastore/second", {"comment": "x",
                                                             "digest": digest}), 400) == CHANGED
    error_of(put(admin, "/config/datastore/second", {"path": "/elsewhere"}), 400)
    error_of(put(admin, "/config/datastore/second", {"delete": "path"}), 400)
    error_of(put(nobody, "/config/datastore/second", {"comment": "x"}), 403)
    data_of(put(admin, "/config/datastore/second", {"maintenance-mode": "offline"}))
    error_of(admin.get("/admin/datastore/second/groups"), 400)
    entry = data_of(admin.get("/config/datastore/second"))
    assert entry["gc-schedule"] == "daily" and entry["maintenance-mode"] == "type=offline"
    assert "comment" not in entry
    data_of(put(admin, "/config/datastore/second", {"delete": "maintenance-mode"}))
    data_of(admin.get("/admin/datastore/second/groups"))
    # delete: without destroy-data the data stays; with it, it goes
    error_of(nobody.delete("/config/datastore/second"), 403)
    error_of(admin.delete("/config/datastore/second", digest=digest), 400)
    assert wait_task(admin, data_of(admin.delete("/config/datastore/second")))[
        "exitstatus"] == "OK"
    error_of(admin.get("/config/datastore/second"), 404)
    error_of(admin.get("/admin/datastore/second/groups"), 404)
    assert (path / ".chunks").is_dir()
    upid = data_of(admin.post("/config/datastore", {"name": "third", "path": str(path),
                                                    "reuse-datastore": "1"}))
    assert wait_task(admin, upid)["exitstatus"] == "OK"
    upid = data_of(admin.delete("/config/datastore/third", **{"destroy-data": "1"}))
    assert wait_task(admin, upid)["exitstatus"] == "OK"
    assert not path.exists()
    error_of(admin.delete("/config/datastore/third"), 404)
