"""Where an admin command acts: a local datastore (`--repository`) or a server (`--server`).

`LocalTarget` and `RemoteTarget` implement the same operations, returning the same (PBS)
shapes, so each command renders one way. Commands whose remote form is a server task (moves,
prune-datastore, verify, gc) use `run(local, remote)`: the local half works on the datastore,
the remote half starts the task and returns its UPID, whose log is then followed.

`with_target` turns a command's `target: Target` parameter into the shared options
`--repository`, `--server`, `--store`, `--token` and `--fingerprint`.
"""

from __future__ import annotations

import inspect
import os
import urllib.parse
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, Protocol, TypeVar

import typer

from chunkyard.cli.context import UsageError
from chunkyard.cli.options import open_datastore

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


def make_target(repository: str | None, server: str | None, store: str, token: str | None,
                fingerprint: str | None) -> Target:
    if server and repository:
        raise UsageError("--server and --repository exclude each other")
    if not server:
        return LocalTarget(repository)
    from chunkyard.client.api import ApiClient, Credentials, ServerUrl, stored_ticket

    url = ServerUrl.parse(server)
    token = token or os.environ.get("CHUNKYARD_TOKEN")
    credentials = Credentials(token=token) if token else stored_ticket(url)
    if credentials is None:
        raise UsageError(f"not logged in to {url.host}:{url.port}: use --token "
                         "user@realm!name:secret ($CHUNKYARD_TOKEN) or 'chunkyard login'")
    fingerprint = fingerprint or os.environ.get("PBS_FINGERPRINT")
    return RemoteTarget(ApiClient(url, credentials, fingerprint), store)


Repository = Annotated[str | None, typer.Option(
    "--repository", help="Datastore directory (or $CHUNKYARD_REPOSITORY).")]
Server = Annotated[str | None, typer.Option(
    "--server", help="Act through a server's API instead: https://HOST[:8007].")]
Store = Annotated[str, typer.Option("--store", help="The server's datastore (with --server).")]
Token = Annotated[str | None, typer.Option(
    "--token", help="API token user@realm!name:secret (or $CHUNKYARD_TOKEN); default: the "
                    "ticket stored by 'chunkyard login'.")]
Fingerprint = Annotated[str | None, typer.Option(
    "--fingerprint", help="The server certificate's SHA-256 fingerprint (or "
                          "$PBS_FINGERPRINT); default: the system CA store.")]

_TARGET_PARAMS = [
    inspect.Parameter("repository", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Repository),
    inspect.Parameter("server", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation=Server),
    inspect.Parameter("store", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_STORE,
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
                             kwargs.pop("store", DEFAULT_STORE), kwargs.pop("token", None),
                             kwargs.pop("fingerprint", None))
        return func(*args, target=target, **kwargs)

    wrapper.__signature__ = new_signature  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in new_signature.parameters.values()}
    wrapper.__annotations__["return"] = signature.return_annotation
    return wrapper  # type: ignore[return-value]
