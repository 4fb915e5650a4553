"""The privilege matrix: every endpoint x every role, owner and non-owner, against a real
`chunkyard serve` (tests/server_helpers).

The expectations are written here as data from PBS's documented rules (spec
pbs-datastore-format.md 11.2-11.3, pbs-move-series.md 6, PBS's role table and the access
descriptions of its API), not from the server's code: `ROLE_PRIVS` is PBS's role table,
`RULES` each endpoint's rule. A caller never sees or touches what its ACL does not grant;
a token never exceeds its user (the `capped-token` role has Admin on / but its user only
DatastoreAudit, so it must behave exactly like `audit`).

Writes use requests that would succeed for an allowed caller but leave the shared data
reusable (dry-run prune, notes set to their value, per-role throwaway groups, namespaces,
users and tokens); a refused caller must get 403 and change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from chunkyard.client.backup import ArchiveSpec, BackupRequest, run_backup
from chunkyard.config import ConfigDir
from chunkyard.config.accounts import create_token, set_password
from chunkyard.config.section import Section
from chunkyard.datastore.datastore import Datastore
from chunkyard.names import Authid, BackupGroup, BackupNamespace, BackupType
from chunkyard.server.endpoints import all_endpoints
from tests.server_helpers import (
    API,
    PASSWORD,
    Api,
    Server,
    data_of,
    login,
    prepare,
    start_server,
    stop,
    wait_task,
)
from tests.store_helpers import T0, make_namespaces

STORE = "/admin/datastore/store1"
W = "w"  # the namespace of the per-role throwaway groups

# -- PBS's rules, as data ----------------------------------------------------------------------

AUDIT, MODIFY, READ, BACKUP, PRUNE, VERIFY = ("Audit", "Modify", "Read", "Backup", "Prune",
                                              "Verify")
ROLE_PRIVS: dict[str, frozenset[str]] = {  # pbs-api-types acl.rs, on /datastore/...
    "Admin": frozenset({AUDIT, MODIFY, READ, BACKUP, PRUNE, VERIFY}),
    "DatastoreAdmin": frozenset({AUDIT, MODIFY, READ, BACKUP, PRUNE, VERIFY}),
    "DatastoreReader": frozenset({AUDIT, READ, VERIFY}),
    "DatastoreAudit": frozenset({AUDIT}),
    "DatastoreBackup": frozenset({BACKUP}),
    "DatastorePowerUser": frozenset({PRUNE, BACKUP}),
    "NoAccess": frozenset(),
}
NS_PRIVS_OK = frozenset({AUDIT, MODIFY, READ, BACKUP})


@dataclass(frozen=True)
class Role:
    name: str
    authid: str
    privs: frozenset[str]  # effective on /datastore/store1 and every namespace below
    owns: bool = False  # the groups the role acts on are owned by its caller
    superuser: bool = False  # Admin on /: Sys.Audit, Sys.Modify, Permissions.Modify, ...

    @property
    def user(self) -> str:
        return self.authid.split("!")[0]


ROLES = [
    Role("admin", "admin@pbs", ROLE_PRIVS["Admin"], superuser=True),
    Role("datastore-admin", "dsadmin@pbs", ROLE_PRIVS["DatastoreAdmin"]),
    Role("reader", "reader@pbs", ROLE_PRIVS["DatastoreReader"]),
    Role("audit", "audit@pbs", ROLE_PRIVS["DatastoreAudit"]),
    Role("backup-owner", "backup@pbs", ROLE_PRIVS["DatastoreBackup"], owns=True),
    Role("backup-other", "backup@pbs", ROLE_PRIVS["DatastoreBackup"]),
    Role("power-owner", "power@pbs", ROLE_PRIVS["DatastorePowerUser"], owns=True),
    Role("power-other", "power@pbs", ROLE_PRIVS["DatastorePowerUser"]),
    # DatastoreAdmin on /datastore, NoAccess on /datastore/store1: nothing on store1
    Role("noaccess", "noaccess@pbs", ROLE_PRIVS["NoAccess"]),
    Role("no-acl", "nobody@pbs", frozenset()),
    Role("capped-token", "audit@pbs!adm", ROLE_PRIVS["DatastoreAudit"]),
]
ACLS = [("/datastore/store1", "dsadmin@pbs", "DatastoreAdmin"),
        ("/datastore/store1", "reader@pbs", "DatastoreReader"),
        ("/datastore/store1", "power@pbs", "DatastorePowerUser"),
        ("/datastore", "noaccess@pbs", "DatastoreAdmin"),
        ("/datastore/store1", "noaccess@pbs", "NoAccess"),
        ("/", "audit@pbs!adm", "Admin")]
OWNED = {"backup@pbs": BackupGroup(BackupType.HOST, "bk"),
         "power@pbs": BackupGroup(BackupType.HOST, "pw")}
ROOT_GROUPS = {"vm/100": "root@pam", "ct/200": "root@pam", "host/bk": "backup@pbs",
               "host/pw": "power@pbs"}
OTHER = BackupGroup(BackupType.VM, "100")  # owned by root@pam

OK, DENIED = "ok", 403


def group_rule(full: set[str], partial: set[str]) -> Callable[[Role], Any]:
    """PBS `check_ns_privs_full` + `check_backup_owner`: any of `full`, or any of `partial`
    and the caller owns the group."""
    return lambda r: OK if r.privs & full or (r.privs & partial and r.owns) else DENIED


def store_rule(any_of: set[str]) -> Callable[[Role], Any]:
    return lambda r: OK if r.privs & any_of else DENIED


def superuser_rule(r: Role) -> Any:
    return OK if r.superuser else DENIED


def anybody(r: Role) -> Any:
    return OK


def move_group_rule(r: Role) -> Any:
    """pbs-move-series 6: source Modify or Prune+owner; target Modify or Backup+owner."""
    source = MODIFY in r.privs or (PRUNE in r.privs and r.owns)
    target = MODIFY in r.privs or (BACKUP in r.privs and r.owns)
    return OK if source and target else DENIED


# The rule of each endpoint (access descriptions of PBS's api2/*).
RULES: dict[str, Callable[[Role], Any]] = {
    "POST /access/ticket": anybody,
    "GET /version": anybody,
    "GET /openapi.json": anybody,  # chunkyard's own: served without authentication
    "GET /admin/datastore": anybody,  # filtered: see the case
    "GET /admin/datastore/{store}/groups": store_rule({AUDIT, BACKUP}),  # Backup: owned
    "GET /admin/datastore/{store}/snapshots": store_rule({AUDIT, BACKUP}),
    "GET /admin/datastore/{store}/namespace": store_rule(set(NS_PRIVS_OK)),
    "POST /admin/datastore/{store}/namespace": store_rule({MODIFY}),  # on the parent
    "DELETE /admin/datastore/{store}/namespace": store_rule({MODIFY}),  # on the parent
    "POST /admin/datastore/{store}/move-group": move_group_rule,
    "POST /admin/datastore/{store}/move-namespace": store_rule({MODIFY}),  # both parents
    "GET /admin/datastore/{store}/status": store_rule({AUDIT, BACKUP}),
    "GET /admin/datastore/{store}/files": group_rule({AUDIT, READ}, {BACKUP}),
    "GET /admin/datastore/{store}/download": group_rule({READ}, {BACKUP}),
    "GET /admin/datastore/{store}/download-decoded": group_rule({READ}, {BACKUP}),
    "GET /admin/datastore/{store}/notes": group_rule({AUDIT}, {BACKUP}),
    "PUT /admin/datastore/{store}/notes": group_rule({MODIFY}, {BACKUP}),
    "GET /admin/datastore/{store}/group-notes": group_rule({AUDIT}, {BACKUP}),
    "PUT /admin/datastore/{store}/group-notes": group_rule({MODIFY}, {BACKUP}),
    "GET /admin/datastore/{store}/protected": group_rule({AUDIT}, {BACKUP}),
    "PUT /admin/datastore/{store}/protected": group_rule({MODIFY}, {BACKUP}),
    # Backup alone: only between the caller and its own tokens (the case asks for that)
    "POST /admin/datastore/{store}/change-owner": group_rule({MODIFY}, {BACKUP}),
    "DELETE /admin/datastore/{store}/groups": group_rule({MODIFY}, {PRUNE}),
    "DELETE /admin/datastore/{store}/snapshots": group_rule({MODIFY}, {PRUNE}),
    "POST /admin/datastore/{store}/prune": group_rule({MODIFY}, {PRUNE}),
    "POST /admin/datastore/{store}/prune-datastore": store_rule({MODIFY, PRUNE}),
    "POST /admin/datastore/{store}/verify": group_rule({VERIFY}, {BACKUP}),
    "GET /admin/datastore/{store}/gc": store_rule({AUDIT}),
    "POST /admin/datastore/{store}/gc": store_rule({MODIFY}),
    # tasks: one's own always; others' need Sys.Audit (read) / Sys.Modify (stop)
    "GET /nodes/{node}/tasks": anybody,  # filtered
    "GET /nodes/{node}/tasks/{upid}/status": superuser_rule,  # another's task
    "GET /nodes/{node}/tasks/{upid}/log": superuser_rule,
    "DELETE /nodes/{node}/tasks/{upid}": superuser_rule,
    # users, tokens, passwords, ACLs: another user's need Sys.Audit / Permissions.Modify
    "GET /access/users": anybody,  # filtered to oneself
    "POST /access/users": superuser_rule,
    "GET /access/users/{userid}": superuser_rule,
    "PUT /access/users/{userid}": superuser_rule,
    "DELETE /access/users/{userid}": superuser_rule,
    "GET /access/users/{userid}/token": superuser_rule,
    "GET /access/users/{userid}/token/{token_name}": superuser_rule,
    "POST /access/users/{userid}/token/{token_name}": superuser_rule,
    "PUT /access/users/{userid}/token/{token_name}": superuser_rule,
    "DELETE /access/users/{userid}/token/{token_name}": superuser_rule,
    "PUT /access/password": superuser_rule,
    "GET /access/acl": anybody,  # filtered to one's tokens' entries
    "PUT /access/acl": superuser_rule,
    "GET /access/permissions": anybody,  # one's own; another's: see the case
    # datastore configuration: Audit / Modify / Allocate on /datastore/{name}
    "GET /config/datastore": anybody,  # filtered by Audit
    "POST /config/datastore": superuser_rule,  # Datastore.Allocate on /datastore
    "GET /config/datastore/{name}": store_rule({AUDIT}),
    "PUT /config/datastore/{name}": store_rule({MODIFY}),
    "DELETE /config/datastore/{name}": superuser_rule,  # Datastore.Allocate
}


def throwaway(role: Role, what: str) -> BackupGroup:
    return BackupGroup(BackupType.HOST, f"{what}-{role.name}")


STATEFUL = ("delgroup", "delsnap", "move", "chown")


def target_group(role: Role) -> BackupGroup:
    return OWNED[role.user] if role.owns else OTHER


# -- the server ------------------------------------------------------------------------------


@dataclass
class Env:
    srv: Server
    ds: Datastore
    root: Path
    apis: dict[str, Api]
    admin_upid: str

    def api(self, role: Role) -> Api:
        return self.apis[role.authid]

    @property
    def admin(self) -> Api:
        return self.apis["admin@pbs"]


def _backup(ds: Datastore, src: Path, ns: str, group: BackupGroup, owner: str) -> None:
    run_backup(ds, BackupRequest(namespace=BackupNamespace.parse(ns), group=group,
                                 backup_time=T0, owner=Authid.parse(owner),
                                 archives=[ArchiveSpec.parse(f"root.tar:{src}")]))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("privileges")
    data, src = root / "data", root / "src"
    prepare(data, src)
    cfg = ConfigDir(data / "etc")
    users = ["dsadmin@pbs", "reader@pbs", "power@pbs", "noaccess@pbs", "target@pbs",
             *(f"del-{r.name}@pbs" for r in ROLES)]

    def add_users(config: Any) -> None:
        for name in users:
            config.add(Section("user", name, {}))

    cfg.update_user(add_users)
    for name in users:
        set_password(cfg, Authid.parse(name), PASSWORD)

    def acl(config: Any) -> None:
        for path, who, role in ACLS:
            config.insert(path, who, role, True)

    cfg.update_acl(acl)
    secrets = {"audit@pbs!adm": create_token(cfg, Authid.parse("audit@pbs!adm"))}
    for tok in ("backup@pbs!t", "power@pbs!t", "target@pbs!x",
                *(f"target@pbs!del-{r.name}" for r in ROLES)):
        create_token(cfg, Authid.parse(tok))
    ds = Datastore.open(str(data / "store1"))
    make_namespaces(ds, W, "dst", "keep", *(f"mvns-{r.name}" for r in ROLES),
                    *(f"delns-{r.name}" for r in ROLES))
    for user, group in OWNED.items():
        _backup(ds, src, "", group, user)
    for role in ROLES:
        owner = role.user if role.owns else "root@pam"
        for what in STATEFUL:
            _backup(ds, src, W, throwaway(role, what), owner)
    Datastore.create(str(root / "spare"), sparse=True)
    srv = start_server(data)
    try:
        apis: dict[str, Api] = {}
        for role in ROLES:
            if role.authid in apis:
                continue
            if "!" in role.authid:
                client = httpx.Client(base_url=srv.base, timeout=30, headers={
                    "Authorization": f"PBSAPIToken={role.authid}:{secrets[role.authid]}"})
                apis[role.authid] = Api(client)
            else:
                apis[role.authid] = login(srv.base, role.authid)
        admin = apis["admin@pbs"]
        upid = data_of(admin.post(STORE + "/prune-datastore",
                                  {"ns": "keep", "keep-last": "1", "dry-run": "1"}))
        assert wait_task(admin, upid)["exitstatus"] == "OK"
        yield Env(srv, ds, root, apis, upid)
        for api in apis.values():
            api.client.close()
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()


# -- the cases ---------------------------------------------------------------------------------


def put(api: Api, path: str, data: dict[str, Any]) -> httpx.Response:
    headers = {"CSRFPreventionToken": api.csrf} if api.csrf else {}
    return api.client.put(API + path, data=data, headers=headers)


def gparams(group: BackupGroup, ns: str = "") -> dict[str, str]:
    return {"backup-type": group.type.value, "backup-id": group.id, "ns": ns}


def sparams(group: BackupGroup, ns: str = "") -> dict[str, str]:
    return {**gparams(group, ns), "backup-time": str(T0)}


def ns_list(api: Api) -> list[str]:
    return [n["ns"] for n in data_of(api.get(STORE + "/namespace"))]


def group_names(rows: list[dict[str, Any]]) -> set[str]:
    return {f"{g['backup-type']}/{g['backup-id']}" for g in rows}


def visible_root_groups(role: Role) -> set[str]:
    if AUDIT in role.privs:
        return set(ROOT_GROUPS)
    return {g for g, owner in ROOT_GROUPS.items() if owner == role.authid}


# A case: (request, check). `request(env, role)` returns the response; `check(env, role,
# response, expected)` runs after it, for both outcomes.
Request = Callable[[Env, Role], httpx.Response]
Check = Callable[[Env, Role, httpx.Response, Any], None]


def no_check(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    pass


def exists_check(present: Callable[[Env, Role], bool], *, allowed_makes: bool
                 ) -> Check:
    """After the call: `present` is `allowed_makes` if it was allowed, else unchanged."""
    def check(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
        assert present(env, role) == (allowed_makes if expected == OK else not allowed_makes)
    return check


def _ns(text: str) -> BackupNamespace:
    return BackupNamespace.parse(text)


def group_in(ns: str, what: str) -> Callable[[Env, Role], bool]:
    return lambda env, r: env.ds.group_exists(_ns(ns), throwaway(r, what))


def _listing(path: str) -> Check:
    def check(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
        if expected == OK:
            assert group_names(data_of(r)) == visible_root_groups(role)
    return check


def _ns_listing(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    if expected == OK:
        assert [n["ns"] for n in data_of(r)] == ns_list(env.admin)


def _stores(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    stores = [d["store"] for d in data_of(r)]
    assert stores == (["store1"] if role.privs & NS_PRIVS_OK else [])


def _config_stores(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    names = [d["name"] for d in data_of(r)]
    assert "store1" in names if AUDIT in role.privs else "store1" not in names


def _tasks(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    users = {t["user"] for t in data_of(r)}
    if role.superuser:
        assert users
    else:
        assert users <= {role.authid}, users


def _users(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    ids = [u["userid"] for u in data_of(r)]
    if role.superuser:
        assert {"target@pbs", "audit@pbs"} <= set(ids)
    else:
        assert ids == [role.user]


def _acl(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    rows = data_of(r)
    if role.superuser:
        assert {row["ugid"] for row in rows} >= {"dsadmin@pbs", "audit@pbs!adm"}
    else:
        assert all(row["ugid"].startswith(role.user + "!") for row in rows), rows


def _user_exists(userid: str) -> Callable[[Env, Role], bool]:
    return lambda env, r: env.admin.get(f"/access/users/{userid.format(r=r)}"
                                        ).status_code == 200


def _token_exists(name: str) -> Callable[[Env, Role], bool]:
    return lambda env, r: env.admin.get(
        f"/access/users/target@pbs/token/{name.format(r=r)}").status_code == 200


def _acl_entry(env: Env, role: Role) -> bool:
    rows = data_of(env.admin.client.get(API + "/access/acl",
                                        params={"path": f"/datastore/store1/{W}"}))
    present = any(row["ugid"] == "target@pbs" for row in rows)
    if present:  # leave it clean for the next role
        data_of(put(env.admin, "/access/acl", {"path": f"/datastore/store1/{W}",
                                               "auth-id": "target@pbs",
                                               "role": "DatastoreAudit", "delete": "1"}))
    return present


def _task_done(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    if expected == OK:  # the caller reads its own task
        status = wait_task(env.api(role), data_of(r))
        assert status["exitstatus"] == "OK", status


def _owner_of(env: Env, role: Role) -> str:
    return str(env.ds.get_owner(_ns(W), throwaway(role, "chown")))


def _new_owner(role: Role) -> str:
    return f"{role.user}!t" if role.owns else "backup@pbs!t"


def _chown_check(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    before = role.user if role.owns else "root@pam"
    assert _owner_of(env, role) == (_new_owner(role) if expected == OK else before)


def _moved_group(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    _task_done(env, role, r, expected)
    in_dst = env.ds.group_exists(_ns("dst"), throwaway(role, "move"))
    assert in_dst == (expected == OK)
    assert env.ds.group_exists(_ns(W), throwaway(role, "move")) == (expected != OK)


def _moved_ns(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    _task_done(env, role, r, expected)
    assert env.ds.namespace_exists(_ns(f"dst/mvns-{role.name}")) == (expected == OK)
    assert env.ds.namespace_exists(_ns(f"mvns-{role.name}")) == (expected != OK)


def _prune_rows(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    if expected == OK:
        keep = [row["keep"] for row in data_of(r)]  # keep-last 1: only the newest
        assert keep == [False] * (len(keep) - 1) + [True]


def _config_created(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    if expected == OK:
        assert wait_task(env.api(role), data_of(r))["exitstatus"] == "OK"
    present = env.admin.get("/config/datastore/spare").status_code == 200
    assert present == (expected == OK)
    if present:
        data_of(env.admin.delete("/config/datastore/spare"))


def _config_spare(env: Env) -> None:
    if env.admin.get("/config/datastore/spare").status_code != 200:
        upid = data_of(env.admin.post("/config/datastore", {
            "name": "spare", "path": str(env.root / "spare"), "reuse-datastore": "1"}))
        assert wait_task(env.admin, upid)["exitstatus"] == "OK"


def _config_delete(env: Env, role: Role) -> httpx.Response:
    _config_spare(env)
    return env.api(role).delete("/config/datastore/spare")


def _config_deleted(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    if expected == OK and r.status_code == 200 and str(data_of(r)).startswith("UPID:"):
        wait_task(env.api(role), data_of(r))
    present = env.admin.get("/config/datastore/spare").status_code == 200
    assert present == (expected != OK)


def _perms(env: Env, role: Role, r: httpx.Response, expected: Any) -> None:
    mine = data_of(r)
    if role.name == "capped-token":  # never more than its user
        assert mine == data_of(env.apis["audit@pbs"].get("/access/permissions"))
    other = env.api(role).get("/access/permissions", **{"auth-id": "target@pbs"})
    assert other.status_code == (200 if role.superuser else 403), other.text


CASES: dict[str, tuple[Request, Check]] = {
    "POST /access/ticket": (
        lambda e, r: httpx.post(e.srv.base + API + "/access/ticket",
                                data={"username": r.user, "password": PASSWORD}),
        no_check),
    "GET /version": (lambda e, r: e.api(r).get("/version"), no_check),
    "GET /openapi.json": (lambda e, r: e.api(r).get("/openapi.json"), no_check),
    "GET /admin/datastore": (lambda e, r: e.api(r).get("/admin/datastore"), _stores),
    "GET /admin/datastore/{store}/groups": (
        lambda e, r: e.api(r).get(STORE + "/groups"), _listing("groups")),
    "GET /admin/datastore/{store}/snapshots": (
        lambda e, r: e.api(r).get(STORE + "/snapshots"), _listing("snapshots")),
    "GET /admin/datastore/{store}/namespace": (
        lambda e, r: e.api(r).get(STORE + "/namespace"), _ns_listing),
    "POST /admin/datastore/{store}/namespace": (
        lambda e, r: e.api(r).post(STORE + "/namespace", {"name": f"new-{r.name}"}),
        exists_check(lambda e, r: e.ds.namespace_exists(_ns(f"new-{r.name}")),
                     allowed_makes=True)),
    "DELETE /admin/datastore/{store}/namespace": (
        lambda e, r: e.api(r).delete(STORE + "/namespace", ns=f"delns-{r.name}"),
        exists_check(lambda e, r: e.ds.namespace_exists(_ns(f"delns-{r.name}")),
                     allowed_makes=False)),
    "POST /admin/datastore/{store}/move-group": (
        lambda e, r: e.api(r).post(STORE + "/move-group", {
            **gparams(throwaway(r, "move"), W), "target-ns": "dst"}),
        _moved_group),
    "POST /admin/datastore/{store}/move-namespace": (
        lambda e, r: e.api(r).post(STORE + "/move-namespace", {
            "ns": f"mvns-{r.name}", "target-ns": f"dst/mvns-{r.name}"}),
        _moved_ns),
    "GET /admin/datastore/{store}/status": (
        lambda e, r: e.api(r).get(STORE + "/status"), no_check),
    "GET /admin/datastore/{store}/files": (
        lambda e, r: e.api(r).get(STORE + "/files", **sparams(target_group(r))), no_check),
    "GET /admin/datastore/{store}/download": (
        lambda e, r: e.api(r).get(STORE + "/download", **sparams(target_group(r)),
                                  **{"file-name": "index.json.blob"}), no_check),
    "GET /admin/datastore/{store}/download-decoded": (
        lambda e, r: e.api(r).get(STORE + "/download-decoded", **sparams(target_group(r)),
                                  **{"file-name": "index.json.blob"}), no_check),
    "GET /admin/datastore/{store}/notes": (
        lambda e, r: e.api(r).get(STORE + "/notes", **sparams(target_group(r))), no_check),
    "PUT /admin/datastore/{store}/notes": (
        lambda e, r: put(e.api(r), STORE + "/notes",
                         {**sparams(target_group(r)), "notes": ""}), no_check),
    "GET /admin/datastore/{store}/group-notes": (
        lambda e, r: e.api(r).get(STORE + "/group-notes", **gparams(target_group(r))),
        no_check),
    "PUT /admin/datastore/{store}/group-notes": (
        lambda e, r: put(e.api(r), STORE + "/group-notes",
                         {**gparams(target_group(r)), "notes": ""}), no_check),
    "GET /admin/datastore/{store}/protected": (
        lambda e, r: e.api(r).get(STORE + "/protected", **sparams(target_group(r))),
        no_check),
    "PUT /admin/datastore/{store}/protected": (
        lambda e, r: put(e.api(r), STORE + "/protected",
                         {**sparams(target_group(r)), "protected": "0"}), no_check),
    "POST /admin/datastore/{store}/change-owner": (
        lambda e, r: e.api(r).post(STORE + "/change-owner", {
            **gparams(throwaway(r, "chown"), W), "new-owner": _new_owner(r)}),
        _chown_check),
    "DELETE /admin/datastore/{store}/groups": (
        lambda e, r: e.api(r).delete(STORE + "/groups", **gparams(throwaway(r, "delgroup"),
                                                                  W)),
        exists_check(group_in(W, "delgroup"), allowed_makes=False)),
    "DELETE /admin/datastore/{store}/snapshots": (
        lambda e, r: e.api(r).delete(STORE + "/snapshots",
                                     **sparams(throwaway(r, "delsnap"), W)),
        exists_check(lambda e, r: bool(e.ds.list_snapshots(_ns(W), throwaway(r, "delsnap")))
                     if e.ds.group_exists(_ns(W), throwaway(r, "delsnap")) else False,
                     allowed_makes=False)),
    "POST /admin/datastore/{store}/prune": (
        lambda e, r: e.api(r).post(STORE + "/prune", {
            **gparams(target_group(r)), "keep-last": "1", "dry-run": "1"}), _prune_rows),
    "POST /admin/datastore/{store}/prune-datastore": (
        lambda e, r: e.api(r).post(STORE + "/prune-datastore", {
            "ns": "keep", "keep-last": "1", "dry-run": "1"}), _task_done),
    "POST /admin/datastore/{store}/verify": (
        lambda e, r: e.api(r).post(STORE + "/verify", gparams(target_group(r))),
        _task_done),
    "GET /admin/datastore/{store}/gc": (lambda e, r: e.api(r).get(STORE + "/gc"), no_check),
    "POST /admin/datastore/{store}/gc": (lambda e, r: e.api(r).post(STORE + "/gc"),
                                         _task_done),
    "GET /nodes/{node}/tasks": (
        lambda e, r: e.api(r).get("/nodes/localhost/tasks", limit="0"), _tasks),
    "GET /nodes/{node}/tasks/{upid}/status": (
        lambda e, r: e.api(r).get(f"/nodes/localhost/tasks/{e.admin_upid}/status"),
        no_check),
    "GET /nodes/{node}/tasks/{upid}/log": (
        lambda e, r: e.api(r).get(f"/nodes/localhost/tasks/{e.admin_upid}/log"), no_check),
    "DELETE /nodes/{node}/tasks/{upid}": (
        lambda e, r: e.api(r).delete(f"/nodes/localhost/tasks/{e.admin_upid}"), no_check),
    "GET /access/users": (lambda e, r: e.api(r).get("/access/users"), _users),
    "POST /access/users": (
        lambda e, r: e.api(r).post("/access/users", {"userid": f"new-{r.name}@pbs"}),
        exists_check(_user_exists("new-{r.name}@pbs"), allowed_makes=True)),
    "GET /access/users/{userid}": (lambda e, r: e.api(r).get("/access/users/target@pbs"),
                                   no_check),
    "PUT /access/users/{userid}": (
        lambda e, r: put(e.api(r), "/access/users/target@pbs", {"comment": "target"}),
        no_check),
    "DELETE /access/users/{userid}": (
        lambda e, r: e.api(r).delete(f"/access/users/del-{r.name}@pbs"),
        exists_check(_user_exists("del-{r.name}@pbs"), allowed_makes=False)),
    "GET /access/users/{userid}/token": (
        lambda e, r: e.api(r).get("/access/users/target@pbs/token"), no_check),
    "GET /access/users/{userid}/token/{token_name}": (
        lambda e, r: e.api(r).get("/access/users/target@pbs/token/x"), no_check),
    "POST /access/users/{userid}/token/{token_name}": (
        lambda e, r: e.api(r).post(f"/access/users/target@pbs/token/new-{r.name}"),
        exists_check(_token_exists("new-{r.name}"), allowed_makes=True)),
    "PUT /access/users/{userid}/token/{token_name}": (
        lambda e, r: put(e.api(r), "/access/users/target@pbs/token/x", {"comment": "x"}),
        no_check),
    "DELETE /access/users/{userid}/token/{token_name}": (
        lambda e, r: e.api(r).delete(f"/access/users/target@pbs/token/del-{r.name}"),
        exists_check(_token_exists("del-{r.name}"), allowed_makes=False)),
    "PUT /access/password": (
        lambda e, r: put(e.api(r), "/access/password",
                         {"userid": "target@pbs", "password": PASSWORD}), no_check),
    "GET /access/acl": (lambda e, r: e.api(r).get("/access/acl"), _acl),
    "PUT /access/acl": (
        lambda e, r: put(e.api(r), "/access/acl", {"path": f"/datastore/store1/{W}",
                                                   "auth-id": "target@pbs",
                                                   "role": "DatastoreAudit"}),
        exists_check(_acl_entry, allowed_makes=True)),
    "GET /access/permissions": (lambda e, r: e.api(r).get("/access/permissions"), _perms),
    "GET /config/datastore": (lambda e, r: e.api(r).get("/config/datastore"),
                              _config_stores),
    "POST /config/datastore": (
        lambda e, r: e.api(r).post("/config/datastore", {
            "name": "spare", "path": str(e.root / "spare"), "reuse-datastore": "1"}),
        _config_created),
    "GET /config/datastore/{name}": (lambda e, r: e.api(r).get("/config/datastore/store1"),
                                     no_check),
    "PUT /config/datastore/{name}": (
        lambda e, r: put(e.api(r), "/config/datastore/store1", {"delete": "comment"}),
        no_check),
    "DELETE /config/datastore/{name}": (_config_delete, _config_deleted),
}

# Allowed answers other than 200: stopping a finished task is refused after the check.
ALLOWED_STATUS = {"DELETE /nodes/{node}/tasks/{upid}": 400}


def test_every_endpoint_has_a_rule_and_a_case() -> None:
    served = {f"{e.method} {e.path}" for e in all_endpoints()}
    assert set(RULES) == served
    assert set(CASES) == served


@pytest.mark.parametrize("key", list(CASES))
def test_matrix(env: Env, key: str) -> None:
    request, check = CASES[key]
    failures = []
    # refused callers first: they must leave everything as the allowed ones find it
    for role in sorted(ROLES, key=lambda r: RULES[key](r) == OK):
        expected = RULES[key](role)
        r = request(env, role)
        want = ALLOWED_STATUS.get(key, 200) if expected == OK else DENIED
        if r.status_code != want:
            failures.append(f"{role.name} ({role.authid}): expected {want}, got "
                            f"{r.status_code}: {r.text[:200]}")
            continue
        try:
            check(env, role, r, expected)
        except AssertionError as err:
            failures.append(f"{role.name} ({role.authid}): after-check failed: {err}")
    assert not failures, f"{key}:\n" + "\n".join(failures)


def test_capped_token_behaves_like_its_user(env: Env) -> None:
    """Every read-only call answers the Admin token exactly as its DatastoreAudit user."""
    token, user = env.apis["audit@pbs!adm"], env.apis["audit@pbs"]
    paths = [("/admin/datastore", {}), (STORE + "/groups", {}), (STORE + "/snapshots", {}),
             (STORE + "/namespace", {}), (STORE + "/status", {}), (STORE + "/gc", {}),
             (STORE + "/files", sparams(OTHER)), (STORE + "/notes", sparams(OTHER)),
             (STORE + "/download", {**sparams(OTHER), "file-name": "index.json.blob"}),
             ("/config/datastore", {}), ("/config/datastore/store1", {}),
             ("/access/users/target@pbs", {}), ("/access/permissions", {})]
    for path, params in paths:
        a, b = token.get(path, **params), user.get(path, **params)
        assert a.status_code == b.status_code, (path, a.text, b.text)
        if a.status_code == 200 and path not in ("/admin/datastore/store1/status",
                                                 "/admin/datastore/store1/gc"):
            assert a.json() == b.json(), path
