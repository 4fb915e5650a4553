"""`/config/datastore`: datastore.cfg through the API (PBS `api2/config/datastore.rs`, §11.4).

* GET (list): the stores the caller has Datastore.Audit on; GET `{name}`: Datastore.Audit on
  `/datastore/{name}`. Both return `digest` beside `data`; property strings (tuning, ...)
  as text, as PBS.
* POST: Datastore.Allocate on `/datastore`. Checked at once (name free, path absolute and
  neither inside nor around another store's path); the store is then made by a task
  `create-datastore` (id: the name), under the datastore.cfg lock as PBS does, so the entry
  appears only once its directory is complete. `reuse-datastore` opens an existing one
  instead; `overwrite-in-use` is accepted and has no effect (no other host's in-use mark).
  A new store is full (65,536 chunk directories) unless the server state says `sparse`
  (`ServerState.sparse`, a test-only option, read if the state has it).
* PUT `{name}`: Datastore.Modify on `/datastore/{name}`; `path` and `backend` cannot change.
* DELETE `{name}`: Datastore.Allocate on `/datastore/{name}` (PBS's path); a task
  `delete-datastore`. The config entry goes first (new requests get "no such datastore");
  with `destroy-data` the store's own entries (`.chunks`, `.lock`, `.gc-status`, `ns`, the
  type directories) are removed, then the directory if empty. `keep-job-configs` has no
  effect (chunkyard has no job configs).

The server looks every store up in datastore.cfg per request (`ServerState.datastore`), so
changes are visible at once; the state's open-store cache is keyed by name and path.
"""

from __future__ import annotations

import os
import shutil
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
from chunkyard.errors import NotFound
from chunkyard.server.app import Call, Endpoint, Result
from chunkyard.server.auth import Privilege
from chunkyard.server.auth.acl import acl_path_for
from chunkyard.server.auth.checks import check_privs
from chunkyard.server.endpoints.common import STORE, bool_param
from chunkyard.server.endpoints.users import DIGEST, delete_list, flat_deletes
from chunkyard.server.params import ApiError, Param
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
    sparse = bool(getattr(call.state, "sparse", False))

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
    deletes = flat_deletes(params["delete"])
    changes = _props(params, UPDATE_PARAMS)

    def edit(stores: SectionConfig) -> None:
        section = stores.lookup("datastore", name)
        props = {k: v for k, v in section.props.items() if k not in deletes}
        props.update(changes)
        stores.put(Section("datastore", name, props))

    call.state.config.update_datastore(edit, params["digest"])


def _destroy(ctx: TaskContext, path: str) -> None:
    if not os.path.isdir(os.path.join(path, CHUNKS_DIR)):
        ctx.log(f"{path} holds no datastore: nothing destroyed")
        return
    for entry in (NAMESPACE_DIR, *BACKUP_TYPE_DIRS, GC_STATUS_FILE, MOVE_INTENT_DIR,
                  CHUNKS_DIR, LOCK_FILE):
        target = os.path.join(path, entry)
        if os.path.isdir(target) and not os.path.islink(target):
            ctx.log(f"removing {target}")
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)
    try:
        os.rmdir(path)
    except OSError:
        ctx.log(f"{path} is not empty: kept")


def delete_datastore(call: Call) -> str:
    params = call.params
    name = params["name"]
    check_privs(call.acl, call.caller, _store_path(name), Privilege.DATASTORE_ALLOCATE)
    cfg = call.state.config
    stores, current = cfg.read_datastore()
    digest = params["digest"]
    if digest is not None and digest.lower() != current:
        raise ConfigChanged("datastore.cfg")
    stores.lookup("datastore", name)  # NotFound at once
    destroy = params["destroy-data"]

    def run(ctx: TaskContext) -> None:
        removed: list[Section] = []

        def edit(config: SectionConfig) -> None:
            section = config.get(name)
            if section is None or section.type != "datastore":
                raise NotFound(f"no such datastore '{name}'")
            config.remove(name)
            removed.append(section)

        cfg.update_datastore(edit, digest)
        ctx.log(f"removed datastore '{name}' from datastore.cfg")
        path = removed[0].props.get("path")
        if destroy and isinstance(path, str):
            _destroy(ctx, path)

    return call.state.tasks.spawn("delete-datastore", name, str(call.caller), run)


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
