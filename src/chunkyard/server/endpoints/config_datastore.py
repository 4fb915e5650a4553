"""`/config/datastore`: datastore.cfg through the API (PBS `api2/config/datastore.rs`, §11.4).

* GET (list): the stores the caller has Datastore.Audit on; GET `{name}`: Datastore.Audit on
  `/datastore/{name}`. Both return `digest` beside `data`; property strings (tuning, ...)
  as text, as PBS.
* POST: Datastore.Allocate on `/datastore`. Checked at once (name free, path absolute and
  neither inside nor around another store's path); the store is then made by a task
  `create-datastore` (id: the name), under the datastore.cfg lock as PBS does, so the entry
  appears only once its directory is complete. `reuse-datastore` opens an existing one
  instead; `overwrite-in-use` is accepted and has no effect (no other host's in-use mark).
  A new store is full (65,536 chunk directories) unless the server runs with `sparse`
  (`ServerState.sparse`, the hidden `--sparse-datastore` of the tests).
* PUT `{name}`: Datastore.Modify on `/datastore/{name}`; `path` and `backend` cannot change;
  refused while the store is being deleted.
* DELETE `{name}`: Datastore.Allocate on `/datastore/{name}` (PBS's path); a task
  `delete-datastore`. Every request for the store is refused from the start
  (`ServerState.begin_delete`) and the open store is dropped, so afterwards the name gives
  "no such datastore" and a new store of that name is opened afresh.
  Without `destroy-data` the config entry is removed at once; running operations keep
  their open store and finish, nothing of the data is touched.
  With `destroy-data`, as PBS's `DataStore::destroy`: the entry gets maintenance mode
  `delete` (kept if the server dies meanwhile; processes that open the store by path are
  kept out by the locks below); the task then waits, at most `ServerState.delete_wait`
  seconds (10), for the server's running tasks on the store (GC, verify, prune, moves)
  and takes the store's locks exclusively: NS X on every namespace (the subtree walk of
  `namespace delete`, from the root; it excludes every backup, restore, verify and prune,
  in any process) and the chunk-store lock CS X (a GC in another process). Only then are
  the store's own entries removed in PBS's order (`ns`, the type directories,
  `.gc-status`, chunkyard's `.move-intents`, `.chunks`), then the config entry, `.lock`
  and the directory if empty.
  The request waits until the task holds the locks: if the store stays busy, it fails
  with 400 naming the task or the lock holder (pid, program, operation, task), the
  maintenance mode is put back as it was and data and entry stay (PBS fails its task with
  "datastore is currently in use" and leaves the mode at `delete`). An error while removing
  data leaves the entry in mode `delete` for a later retry. `keep-job-configs` has no
  effect (chunkyard has no job configs).

The server looks every store up in datastore.cfg per request (`ServerState.datastore`), so
changes are visible at once.
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
import time
from typing import Any

from chunkyard.config.datastore import DATASTORE, PROPERTIES
from chunkyard.config.errors import ConfigChanged
from chunkyard.config.section import Section, SectionConfig
from chunkyard.config.types import BoolType, IntType, Value
from chunkyard.datastore.datastore import Datastore
from chunkyard.datastore.layout import (
    BACKUP_TYPE_DIRS,
    CHUNKS_DIR,
    GC_STATUS_FILE,
    LOCK_FILE,
    MOVE_INTENT_DIR,
    NAMESPACE_DIR,
)
from chunkyard.datastore.locking import LockBusy, LockSession, Mode
from chunkyard.datastore.locking.chunk_store_lock import close_idle
from chunkyard.errors import ChunkyardError, DatastoreError, NotFound
from chunkyard.names import BackupNamespace
from chunkyard.server.app import Call, Endpoint, Result
from chunkyard.server.auth import Privilege
from chunkyard.server.auth.acl import acl_path_for
from chunkyard.server.auth.checks import check_privs
from chunkyard.server.endpoints.common import STORE, bool_param
from chunkyard.server.endpoints.users import DIGEST, delete_list, flat_deletes
from chunkyard.server.jobs import GC_JOB, PRUNE_JOB, remove_job_state
from chunkyard.server.params import ApiError, Param
from chunkyard.server.state import ServerState
from chunkyard.server.tasks import TaskContext

PREFIX = "/config/datastore"
FIXED = frozenset({"path", "backend"})  # not updatable


def _param(key: str) -> Param:
    kind = PROPERTIES[key].type
    if isinstance(kind, BoolType):
        return Param("boolean")
    if isinstance(kind, IntType):
        return Param("integer", minimum=kind.minimum, maximum=kind.maximum)
    parse = kind.parse

    def check(text: str) -> Value:
        return parse(text)

    return Param(max_length=4096, check=check)


PROP_PARAMS = {key: _param(key) for key in PROPERTIES if key != "path"}
UPDATE_PARAMS = {k: v for k, v in PROP_PARAMS.items() if k not in FIXED}
DELETABLE = frozenset(UPDATE_PARAMS)


def _entry(section: Section) -> dict[str, Any]:
    row: dict[str, Any] = {"name": section.id}
    for key, value in sorted(section.props.items()):
        row[key] = PROPERTIES[key].type.format(value) if isinstance(value, dict) else value
    return row


def _props(params: dict[str, Any], keys: dict[str, Param]) -> dict[str, Value]:
    return {k: params[k] for k in keys if params.get(k) is not None}


def _store_path(name: str) -> str:
    return acl_path_for(name)


def list_datastores(call: Call) -> Result:
    stores, digest = call.state.config.read_datastore()
    rows = [_entry(s) for s in stores.of_type("datastore")
            if call.acl.privileges(call.caller, _store_path(s.id)) & Privilege.DATASTORE_AUDIT]
    return Result(rows, {"digest": digest})


def _check_new(config: SectionConfig, name: str, path: str) -> None:
    if name in config:
        raise ApiError(f"datastore '{name}' already exists.")
    new = os.path.realpath(path)
    for other in config.of_type("datastore"):
        other_path = other.props.get("path")
        if not isinstance(other_path, str):
            continue
        old = os.path.realpath(other_path)
        if new == old or new.startswith(old.rstrip("/") + "/") or \
                old.startswith(new.rstrip("/") + "/"):
            raise ApiError(f"nested datastores not allowed: '{other.id}' already in "
                           f"'{other_path}'")


def create_datastore(call: Call) -> str:
    params = call.params
    check_privs(call.acl, call.caller, "/datastore", Privilege.DATASTORE_ALLOCATE)
    name, path = params["name"], params["path"]
    props: dict[str, Value] = {"path": path, **_props(params, PROP_PARAMS)}
    section = Section("datastore", name, props)
    try:  # the whole section against the schema, before anything is made
        DATASTORE.id_type.parse(name)
        for key, value in props.items():
            PROPERTIES[key].type.format(value)
    except ValueError as e:
        raise ApiError(str(e)) from None
    cfg = call.state.config
    config, _ = cfg.read_datastore()
    _check_new(config, name, path)
    reuse = params["reuse-datastore"]
    sparse = call.state.sparse

    def run(ctx: TaskContext) -> None:
        def edit(current: SectionConfig) -> None:
            _check_new(current, name, path)
            if reuse:
                ctx.log(f"re-using the datastore in {path}")
                Datastore.open(path)
            else:
                ctx.log(f"creating the datastore '{name}' in {path}")
                Datastore.create(path, sparse=sparse)
            current.add(section)

        cfg.update_datastore(edit)
        ctx.log(f"added datastore '{name}' to datastore.cfg")

    return call.state.tasks.spawn("create-datastore", name, str(call.caller), run)


def read_datastore(call: Call) -> Result:
    name = call.params["name"]
    check_privs(call.acl, call.caller, _store_path(name), Privilege.DATASTORE_AUDIT)
    stores, digest = call.state.config.read_datastore()
    return Result(_entry(stores.lookup("datastore", name)), {"digest": digest})


def update_datastore(call: Call) -> None:
    params = call.params
    name = params["name"]
    check_privs(call.acl, call.caller, _store_path(name), Privilege.DATASTORE_MODIFY)
    if call.state.is_being_deleted(name):
        raise DatastoreError(f"datastore '{name}' is being deleted")
    deletes = flat_deletes(params["delete"])
    changes = _props(params, UPDATE_PARAMS)

    def edit(stores: SectionConfig) -> None:
        section = stores.lookup("datastore", name)
        props = {k: v for k, v in section.props.items() if k not in deletes}
        props.update(changes)
        stores.put(Section("datastore", name, props))

    call.state.config.update_datastore(edit, params["digest"])


POLL = 0.1
HANDSHAKE_MARGIN = 30.0  # beyond delete_wait: opening the store, config lock waits


class _Handshake:
    """How the delete task tells the request whether the store is quiet and locked (the
    request answers the UPID) or stayed busy (the request fails with the task's error)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: BaseException | None = None

    def done(self, error: BaseException | None = None) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


def _remove_entry(state: ServerState, name: str, digest: str | None = None) -> Section:
    removed: list[Section] = []

    def edit(config: SectionConfig) -> None:
        section = config.get(name)
        if section is None or section.type != "datastore":
            raise NotFound(f"no such datastore '{name}'")
        config.remove(name)
        removed.append(section)

    state.config.update_datastore(edit, digest)
    for job in (GC_JOB, PRUNE_JOB):  # as PBS: a later store of that name starts anew
        remove_job_state(state, job, name)
    return removed[0]


def _mark_deleting(cfg: Any, name: str, digest: str | None) -> tuple[Section, Value | None]:
    """Maintenance mode `delete` on store `name`: its section and its mode before."""
    found: list[tuple[Section, Value | None]] = []

    def edit(config: SectionConfig) -> None:
        section = config.lookup("datastore", name)
        found.append((section, section.props.get("maintenance-mode")))
        config.put(Section("datastore", name,
                           {**section.props, "maintenance-mode": {"type": "delete"}}))

    cfg.update_datastore(edit, digest)
    return found[0]


def _unmark_deleting(cfg: Any, name: str, previous: Value | None) -> None:
    """Put the maintenance mode back, unless someone changed it meanwhile."""

    def edit(config: SectionConfig) -> None:
        section = config.get(name)
        if section is None or section.type != "datastore" or \
                section.props.get("maintenance-mode") != {"type": "delete"}:
            return
        props = {k: v for k, v in section.props.items() if k != "maintenance-mode"}
        if previous is not None:
            props["maintenance-mode"] = previous
        config.put(Section("datastore", name, props))

    cfg.update_datastore(edit)


def _running_tasks(state: ServerState, name: str, own: str) -> list[str]:
    rows, _ = state.tasks.list(running=True, store=name, limit=0)
    return [str(row["upid"]) for row in rows if row["upid"] != own]


def _wait_for_tasks(ctx: TaskContext, state: ServerState, name: str, deadline: float) -> None:
    """Wait until no server task runs on store `name`; DatastoreError naming the first one
    still running at `deadline`."""
    for upid in _running_tasks(state, name, ctx.upid):
        ctx.log(f"waiting for task {upid} to finish")
        if not state.tasks.wait(upid, max(0.0, deadline - time.monotonic())):
            raise DatastoreError(
                f"datastore '{name}' is in use: task {upid} still runs after waiting "
                f"{state.delete_wait:g} s")


def _lock_chunk_store(session: LockSession, deadline: float) -> None:
    """CS X, retried until `deadline` (the chunk-store lock itself never waits)."""
    while True:
        try:
            session.chunk_store(Mode.EXCLUSIVE)
            return
        except LockBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(POLL)


def _quiesce(ctx: TaskContext, state: ServerState, name: str, ds: Datastore
             ) -> tuple[LockSession, list[BackupNamespace]]:
    """Wait for the store's tasks, then lock it whole: an open session holding NS X on
    every namespace and CS X, and the namespaces, top-down. DatastoreError if busy."""
    deadline = time.monotonic() + state.delete_wait
    while True:
        _wait_for_tasks(ctx, state, name, deadline)
        session = ds.locks.session(f"delete datastore {name}", task_id=ctx.upid)
        try:
            guard = session.namespace_subtree_exclusive(
                BackupNamespace.root(), ds.list_child_namespaces,
                wait=max(0.0, deadline - time.monotonic()))
            _lock_chunk_store(session, deadline)
        except LockBusy as e:
            session.close()
            raise DatastoreError(f"datastore '{name}' is in use: {e}") from None
        except BaseException:
            session.close()
            raise
        if not _running_tasks(state, name, ctx.upid):
            return session, guard.namespaces
        # a task that passed its check just before the mark started meanwhile
        session.close()
        if time.monotonic() >= deadline:
            _wait_for_tasks(ctx, state, name, deadline)  # raises, naming it


def _destroy_data(ctx: TaskContext, path: str) -> bool:
    """The store's contents but `.lock`, in PBS's order; False (and logged) on an error."""
    for entry in (NAMESPACE_DIR, *BACKUP_TYPE_DIRS, GC_STATUS_FILE, MOVE_INTENT_DIR,
                  CHUNKS_DIR):
        target = os.path.join(path, entry)
        try:
            if os.path.isdir(target) and not os.path.islink(target):
                ctx.log(f"removing {target}")
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
        except OSError as e:
            ctx.warn(f"cannot remove {target}: {e.strerror or e}")
            return False
    return True


def _remove_base(ctx: TaskContext, path: str) -> None:
    lock = os.path.join(path, LOCK_FILE)
    try:
        if os.path.lexists(lock):
            os.unlink(lock)
        os.rmdir(path)
        ctx.log(f"removed the empty directory {path}")
    except FileNotFoundError:
        pass
    except OSError:
        ctx.log(f"{path} is not empty: kept")


def _delete_and_destroy(ctx: TaskContext, state: ServerState, name: str,
                        digest: str | None, handshake: _Handshake) -> None:
    cfg = state.config
    section, previous = _mark_deleting(cfg, name, digest)
    ctx.log(f"datastore '{name}' is in maintenance mode 'delete': new operations are refused")
    path = section.props.get("path")
    if not isinstance(path, str) or not os.path.isdir(os.path.join(path, CHUNKS_DIR)):
        _remove_entry(state, name)
        handshake.done()
        ctx.log(f"removed datastore '{name}' from datastore.cfg; {path} holds no datastore: "
                "nothing destroyed")
        return
    try:
        ds = Datastore.open(path)
        session, namespaces = _quiesce(ctx, state, name, ds)
    except BaseException:
        try:  # before the request answers (the caller's handshake): the store as it was
            _unmark_deleting(cfg, name, previous)
            ctx.log(f"datastore '{name}' left as it was")
        except ChunkyardError as again:
            ctx.warn(f"cannot restore the maintenance mode of datastore '{name}': {again}")
        raise
    handshake.done()
    with session:
        ctx.log(f"datastore '{name}' is locked: deleting its data")
        if not _destroy_data(ctx, path):
            raise DatastoreError(
                f"there were errors deleting the data of datastore '{name}': it stays in "
                "datastore.cfg in maintenance mode 'delete'")
        _remove_entry(state, name)
        ctx.log(f"removed datastore '{name}' from datastore.cfg")
        for ns in reversed(namespaces):
            session.unlink_namespace_lock_files(ns)
        _remove_base(ctx, path)
    close_idle()  # the parked fd of the removed `.lock` (it would keep the file alive)


def _for_request(error: BaseException) -> BaseException:
    """A copy of the task's error for the request to raise (the task raises the original), so
    its kind, and with it the HTTP status, stays."""
    try:
        return copy.copy(error)
    except Exception:  # pragma: no cover - an error that cannot be copied
        return DatastoreError(str(error))


def delete_datastore(call: Call) -> str:
    params = call.params
    name = params["name"]
    check_privs(call.acl, call.caller, _store_path(name), Privilege.DATASTORE_ALLOCATE)
    state = call.state
    cfg = state.config
    stores, current = cfg.read_datastore()
    digest = params["digest"]
    if digest is not None and digest.lower() != current:
        raise ConfigChanged("datastore.cfg")
    stores.lookup("datastore", name)  # NotFound at once
    destroy = params["destroy-data"]
    handshake = _Handshake()

    def run(ctx: TaskContext) -> None:
        try:
            if destroy:
                _delete_and_destroy(ctx, state, name, digest, handshake)
            else:
                _remove_entry(state, name, digest)
                handshake.done()
                ctx.log(f"removed datastore '{name}' from datastore.cfg")
        except BaseException as e:
            state.end_delete(name)  # before the request answers
            handshake.done(e)
            raise
        finally:
            state.end_delete(name)

    state.begin_delete(name)  # refused if a delete of it runs already
    try:
        upid = state.tasks.spawn("delete-datastore", name, str(call.caller), run)
    except BaseException:
        state.end_delete(name)
        raise
    if handshake.event.wait(state.delete_wait + HANDSHAKE_MARGIN) and \
            handshake.error is not None:
        raise _for_request(handshake.error) from None
    return upid


NAME = STORE

ENDPOINTS = [
    Endpoint("GET", PREFIX, list_datastores, {},
             description="Datastore configurations (those with Datastore.Audit)."),
    Endpoint("POST", PREFIX, create_datastore, {
        "name": NAME, "path": Param(optional=False, max_length=4096,
                                    check=lambda t: PROPERTIES["path"].type.parse(t)),
        **PROP_PARAMS,
        "reuse-datastore": bool_param(False), "overwrite-in-use": bool_param(False),
    }, description="Create a datastore (a task; returns its UPID)."),
    Endpoint("GET", PREFIX + "/{name}", read_datastore, {"name": NAME},
             description="A datastore's configuration."),
    Endpoint("PUT", PREFIX + "/{name}", update_datastore, {
        "name": NAME, **UPDATE_PARAMS, "delete": delete_list(DELETABLE), "digest": DIGEST,
    }, description="Update a datastore's configuration."),
    Endpoint("DELETE", PREFIX + "/{name}", delete_datastore, {
        "name": NAME, "destroy-data": bool_param(False),
        "keep-job-configs": bool_param(False), "digest": DIGEST,
    }, description="Remove a datastore (a task; with destroy-data its data too)."),
]

__all__ = ["ENDPOINTS"]
