"""Where an admin command acts: a local datastore (`--repository`) or a server (`--server`).

`LocalTarget` and `RemoteTarget` implement the same operations, returning the same (PBS)
shapes, so each command renders one way. Commands whose remote form is a server task (moves,
prune-datastore, verify, gc) use `run(local, remote)`: the local half works on the datastore,
the remote half starts the task and returns its UPID, whose log is then followed.

`with_target` turns a command's `target: Target` parameter into the shared options
`--repository`, `--server`, `--store`, `--token` and `--fingerprint`.

Which target, first match wins (explicit options before the environment):

1. `--server URL` (with `--store`, default store1): credentials `--token`, $CHUNKYARD_TOKEN,
   else the ticket `chunkyard login` stored for that server.
2. `--repository VALUE`, else $CHUNKYARD_REPOSITORY: a local datastore directory, except a
   value that is no existing path, has a `:` and no `/`: that is a server in
   proxmox-backup-client's syntax `[[user@realm[!token]@]host[:port]:]datastore`. An existing
   path is never taken for a server, and a local path that does not exist yet can always be
   written with a `/` (`./name:x`). No PBS repository is purely a datastore name here: a bare
   `store1` (PBS: on localhost) stays a local directory name.
3. $PBS_REPOSITORY, if it names a host (as proxmox-backup-client reads it; malformed: an
   error).

A server named in PBS syntax is reached over HTTPS (PBS has no plain HTTP) and authenticated
as proxmox-backup-client does (pbs-client `connect`, `HttpClient::new`): `--token` if given;
else $PBS_PASSWORD (its first line), the password of the repository's user (default
root@pam; a ticket is got with it) or the secret of its API token; else, for a user, the
ticket `chunkyard login` stored for that server and user. A token needs $PBS_PASSWORD (PBS:
"API token secret must be provided"). The certificate: `--fingerprint`, else
$PBS_FINGERPRINT, else the system CA store.
"""

from __future__ import annotations

import inspect
import os
import urllib.parse
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

from chunkyard.cli.context import UsageError
from chunkyard.cli.options import open_datastore

if TYPE_CHECKING:
    from chunkyard.client.api import Credentials, PasswordLogin, PbsRepository, ServerUrl

F = TypeVar("F", bound=Callable[..., Any])
TaskStarter = Callable[[Any, str], str]

DEFAULT_STORE = "store1"


class Target(Protocol):
    """The admin operations, on a datastore or through a server's API."""

    def groups(self, ns: Any) -> list[dict[str, Any]]: ...
    def snapshots(self, ns: Any, group: Any | None) -> list[dict[str, Any]]: ...
    def namespaces(self, parent: Any, max_depth: int) -> list[dict[str, Any]]: ...
    def create_namespace(self, ns: Any, wait: float) -> str: ...
    def delete_namespace(self, ns: Any, delete_groups: bool, error_on_protected: bool,
                         wait: float) -> dict[str, int]: ...
    def delete_group(self, ns: Any, group: Any, error_on_protected: bool,
                     wait: float) -> dict[str, int]: ...
    def change_owner(self, ns: Any, group: Any, owner: str, wait: float) -> None: ...
    def group_notes(self, ns: Any, group: Any) -> str: ...
    def set_group_notes(self, ns: Any, group: Any, notes: str, wait: float) -> None: ...
    def forget(self, ns: Any, snap: Any, wait: float) -> None: ...
    def protected(self, ns: Any, snap: Any) -> bool: ...
    def set_protected(self, ns: Any, snap: Any, value: bool, wait: float) -> None: ...
    def notes(self, ns: Any, snap: Any) -> str: ...
    def set_notes(self, ns: Any, snap: Any, notes: str, wait: float) -> None: ...
    def run(self, local: Callable[[Any], None], remote: TaskStarter) -> None: ...
    def client(self) -> Any: ...


class LocalTarget:
    def __init__(self, repository: str | None) -> None:
        self.repository = repository
        self._ds: Any = None

    @property
    def ds(self) -> Any:
        if self._ds is None:
            self._ds = open_datastore(self.repository)
        return self._ds

    def groups(self, ns: Any) -> list[dict[str, Any]]:
        from chunkyard.datastore.queries import group_list

        return list(group_list(self.ds, ns))

    def snapshots(self, ns: Any, group: Any | None) -> list[dict[str, Any]]:
        from chunkyard.datastore.queries import snapshot_list

        return list(snapshot_list(self.ds, ns, group))

    def namespaces(self, parent: Any, max_depth: int) -> list[dict[str, Any]]:
        from chunkyard.datastore.queries import namespace_list

        return list(namespace_list(self.ds, parent, max_depth))

    def create_namespace(self, ns: Any, wait: float) -> str:
        from chunkyard.datastore.namespaces import create_namespace

        return str(create_namespace(self.ds, ns, wait=wait))

    def delete_namespace(self, ns: Any, delete_groups: bool, error_on_protected: bool,
                         wait: float) -> dict[str, int]:
        from chunkyard.datastore.namespaces import delete_namespace

        stats = delete_namespace(self.ds, ns, delete_groups=delete_groups,
                                 error_on_protected=error_on_protected, wait=wait)
        return dict(stats.as_dict())

    def delete_group(self, ns: Any, group: Any, error_on_protected: bool,
                     wait: float) -> dict[str, int]:
        from chunkyard.datastore.groups import delete_group

        stats = delete_group(self.ds, ns, group, error_on_protected=error_on_protected,
                             wait=wait)
        return dict(stats.as_dict())

    def change_owner(self, ns: Any, group: Any, owner: str, wait: float) -> None:
        from chunkyard.datastore.groups import change_owner
        from chunkyard.names import Authid

        change_owner(self.ds, ns, group, Authid.parse(owner), wait=wait)

    def group_notes(self, ns: Any, group: Any) -> str:
        from chunkyard.datastore.groups import get_group_notes

        return get_group_notes(self.ds, ns, group)

    def set_group_notes(self, ns: Any, group: Any, notes: str, wait: float) -> None:
        from chunkyard.datastore.groups import set_group_notes

        set_group_notes(self.ds, ns, group, notes, wait=wait)

    def forget(self, ns: Any, snap: Any, wait: float) -> None:
        from chunkyard.datastore.snapshots import forget_snapshot

        forget_snapshot(self.ds, ns, snap, wait=wait)

    def protected(self, ns: Any, snap: Any) -> bool:
        from chunkyard.datastore.snapshots import get_protected

        return get_protected(self.ds, ns, snap)

    def set_protected(self, ns: Any, snap: Any, value: bool, wait: float) -> None:
        from chunkyard.datastore.snapshots import set_protected

        set_protected(self.ds, ns, snap, value, wait=wait)

    def notes(self, ns: Any, snap: Any) -> str:
        from chunkyard.datastore.snapshots import get_notes

        return get_notes(self.ds, ns, snap)

    def set_notes(self, ns: Any, snap: Any, notes: str, wait: float) -> None:
        from chunkyard.datastore.snapshots import set_notes

        set_notes(self.ds, ns, snap, notes, wait=wait)

    def run(self, local: Callable[[Any], None], remote: TaskStarter) -> None:
        local(self.ds)

    def client(self) -> Any:
        raise UsageError("this command needs a server: use --server URL")


def _group(ns: Any, group: Any) -> dict[str, Any]:
    return {"ns": str(ns) or None, "backup-type": group.type.value, "backup-id": group.id}


def _snap(ns: Any, snap: Any) -> dict[str, Any]:
    return {**_group(ns, snap.group), "backup-time": snap.time}


class RemoteTarget:
    """The same operations through PBS's API; `wait` is the server's business there."""

    def __init__(self, api: Any, store: str) -> None:
        self.api = api
        self.store = store
        self.prefix = f"/admin/datastore/{urllib.parse.quote(store, safe='')}"

    def groups(self, ns: Any) -> list[dict[str, Any]]:
        return list(self.api.get(self.prefix + "/groups", {"ns": str(ns) or None}))

    def snapshots(self, ns: Any, group: Any | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"ns": str(ns) or None}
        if group is not None:
            params.update({"backup-type": group.type.value, "backup-id": group.id})
        return list(self.api.get(self.prefix + "/snapshots", params))

    def namespaces(self, parent: Any, max_depth: int) -> list[dict[str, Any]]:
        return list(self.api.get(self.prefix + "/namespace",
                                 {"parent": str(parent) or None, "max-depth": max_depth}))

    def create_namespace(self, ns: Any, wait: float) -> str:
        if ns.is_root:
            raise UsageError("the root namespace always exists")
        return str(self.api.post(self.prefix + "/namespace",
                                 {"parent": str(ns.parent) or None, "name": ns.name}))

    def delete_namespace(self, ns: Any, delete_groups: bool, error_on_protected: bool,
                         wait: float) -> dict[str, int]:
        return dict(self.api.delete(self.prefix + "/namespace", {
            "ns": str(ns), "delete-groups": delete_groups,
            "error-on-protected": error_on_protected}))

    def delete_group(self, ns: Any, group: Any, error_on_protected: bool,
                     wait: float) -> dict[str, int]:
        return dict(self.api.delete(self.prefix + "/groups", {
            **_group(ns, group), "error-on-protected": error_on_protected}))

    def change_owner(self, ns: Any, group: Any, owner: str, wait: float) -> None:
        self.api.post(self.prefix + "/change-owner", {**_group(ns, group), "new-owner": owner})

    def group_notes(self, ns: Any, group: Any) -> str:
        return str(self.api.get(self.prefix + "/group-notes", _group(ns, group)) or "")

    def set_group_notes(self, ns: Any, group: Any, notes: str, wait: float) -> None:
        self.api.put(self.prefix + "/group-notes", {**_group(ns, group), "notes": notes})

    def forget(self, ns: Any, snap: Any, wait: float) -> None:
        self.api.delete(self.prefix + "/snapshots", _snap(ns, snap))

    def protected(self, ns: Any, snap: Any) -> bool:
        return bool(self.api.get(self.prefix + "/protected", _snap(ns, snap)))

    def set_protected(self, ns: Any, snap: Any, value: bool, wait: float) -> None:
        self.api.put(self.prefix + "/protected", {**_snap(ns, snap), "protected": value})

    def notes(self, ns: Any, snap: Any) -> str:
        return str(self.api.get(self.prefix + "/notes", _snap(ns, snap)) or "")

    def set_notes(self, ns: Any, snap: Any, notes: str, wait: float) -> None:
        self.api.put(self.prefix + "/notes", {**_snap(ns, snap), "notes": notes})

    def run(self, local: Callable[[Any], None], remote: TaskStarter) -> None:
        """Start the server task and print its log as it comes (as PBS's client does); a
        `remote` half that answered inline returns no UPID."""
        upid = remote(self.api, self.prefix)
        if upid:
            self.follow(upid)

    def follow(self, upid: str) -> None:
        self.api.wait_task(upid, typer.echo)

    def client(self) -> Any:
        return self.api


def make_target(repository: str | None, server: str | None, store: str | None,
                token: str | None, fingerprint: str | None) -> Target:
    if server and repository:
        raise UsageError("--server and --repository exclude each other")
    from chunkyard.client.api import ServerUrl

    if server:
        return _server_target(ServerUrl.parse(server), store or DEFAULT_STORE, token,
                              fingerprint)
    source, value = "--repository", repository
    if not value:
        source, value = "$CHUNKYARD_REPOSITORY", os.environ.get("CHUNKYARD_REPOSITORY")
    if value:
        remote = _pbs_syntax(value, source)
        if remote is None:
            return LocalTarget(value)
        return _pbs_target(remote, source, store, token, fingerprint)
    from_env = os.environ.get("PBS_REPOSITORY")
    if from_env:
        remote = _parse_repository(from_env, "$PBS_REPOSITORY")
        if remote.host is None:
            raise UsageError("no repository given: use --repository PATH or --server URL "
                             f"(PBS_REPOSITORY {from_env!r} names no host)")
        return _pbs_target(remote, "$PBS_REPOSITORY", store, token, fingerprint)
    return LocalTarget(None)


def _pbs_syntax(value: str, source: str) -> PbsRepository | None:
    """The server `value` names in PBS syntax, or None for a local directory: an existing
    path, a value with a `/` (no PBS repository has one) or without a `:`."""
    if os.path.lexists(value) or "/" in value or ":" not in value:
        return None
    return _parse_repository(value, source)


def _parse_repository(value: str, source: str) -> PbsRepository:
    from chunkyard.client.api import PbsRepository, RemoteError

    try:
        return PbsRepository.parse(value)
    except RemoteError as err:
        what = " (and no such local path)" if source != "$PBS_REPOSITORY" else ""
        raise UsageError(f"{source}: {err}{what}") from None


def pbs_password() -> str | None:
    """$PBS_PASSWORD's first line, as proxmox-backup-client reads it (pbs-client
    `get_secret_from_env`); None when unset."""
    value = os.environ.get("PBS_PASSWORD")
    if value is None:
        return None
    line = value.split("\n", 1)[0]
    line = line[:-1] if line.endswith("\r") else line
    if not line:
        raise UsageError("PBS_PASSWORD is empty")
    return line


def _server_target(url: ServerUrl, store: str, token: str | None, fingerprint: str | None
                   ) -> Target:
    from chunkyard.client.api import ApiClient, Credentials, stored_ticket

    token = token or os.environ.get("CHUNKYARD_TOKEN")
    credentials = Credentials(token=token) if token else stored_ticket(url)
    if credentials is None:
        raise UsageError(f"not logged in to {url.host}:{url.port}: use --token "
                         "user@realm!name:secret ($CHUNKYARD_TOKEN) or 'chunkyard login'")
    fingerprint = fingerprint or os.environ.get("PBS_FINGERPRINT")
    return RemoteTarget(ApiClient(url, credentials, fingerprint), store)


def _pbs_target(repo: PbsRepository, source: str, store: str | None, token: str | None,
                fingerprint: str | None) -> Target:
    from chunkyard.client.api import ApiClient, Credentials, PasswordLogin, stored_ticket

    if store is not None and store != repo.store:
        raise UsageError(f"--store {store} contradicts {source}, which names the datastore "
                         f"{repo.store!r}")
    url = repo.server()
    credentials: Credentials | PasswordLogin | None
    password = None if token else pbs_password()
    if token:
        credentials = Credentials(token=token)
    elif password is not None:
        credentials = Credentials(token=f"{repo.user}:{password}") if repo.is_token \
            else PasswordLogin(repo.user, password)
    elif repo.is_token:
        raise UsageError(f"the API token {repo.user} needs its secret: set PBS_PASSWORD "
                         "(or use --token)")
    else:
        credentials = stored_ticket(url)
        if credentials is None or credentials.username != repo.user:
            raise UsageError(f"not logged in to {url.url()} as {repo.user}: set "
                             f"PBS_PASSWORD, or run 'chunkyard login --server {url.url()} "
                             f"--user {repo.user}'")
    fingerprint = fingerprint or os.environ.get("PBS_FINGERPRINT")
    return RemoteTarget(ApiClient(url, credentials, fingerprint), repo.store)


Repository = Annotated[str | None, typer.Option(
    "--repository", help="Datastore directory (or $CHUNKYARD_REPOSITORY). A value that is "
                         "no existing path, has a ':' and no '/' names a server the way "
                         "proxmox-backup-client does: [[user@realm[!token]@]host[:port]:]"
                         "datastore (HTTPS; user default root@pam, authenticated with "
                         "$PBS_PASSWORD, a password or the token's secret, else the ticket "
                         "of 'chunkyard login'); an existing path is always local, and "
                         "./NAME always a path. With neither this nor --server, "
                         "$PBS_REPOSITORY is used when it names a host.")]
Server = Annotated[str | None, typer.Option(
    "--server", help="Act through a server's API instead: https://HOST[:8007].")]
Store = Annotated[str | None, typer.Option(
    "--store", help="The server's datastore (with --server; default: store1).")]
Token = Annotated[str | None, typer.Option(
    "--token", help="API token user@realm!name:secret; default: $CHUNKYARD_TOKEN with "
                    "--server, $PBS_PASSWORD with a repository in PBS syntax, else the "
                    "ticket stored by 'chunkyard login'.")]
Fingerprint = Annotated[str | None, typer.Option(
    "--fingerprint", help="The server certificate's SHA-256 fingerprint (or "
                          "$PBS_FINGERPRINT); default: the system CA store.")]

_TARGET_PARAMS = [
    inspect.Parameter("repository", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Repository),
    inspect.Parameter("server", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Server),
    inspect.Parameter("store", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Store),
    inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Token),
    inspect.Parameter("fingerprint", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Fingerprint),
]


def with_target(func: F) -> F:
    """Replace the command's `target` parameter by the options that choose the target."""
    signature = inspect.signature(func, eval_str=True)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
              for p in signature.parameters.values() if p.name != "target"]
    new_signature = signature.replace(parameters=[*params, *_TARGET_PARAMS])

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = make_target(kwargs.pop("repository", None), kwargs.pop("server", None),
                             kwargs.pop("store", None), kwargs.pop("token", None),
                             kwargs.pop("fingerprint", None))
        return func(*args, target=target, **kwargs)

    wrapper.__signature__ = new_signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in new_signature.parameters.values()}
    wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper  # type: ignore[return-value]
