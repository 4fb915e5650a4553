"""The OpenAPI 3.1 document of the API, generated from the `Endpoint` declarations.

Served without authentication at `GET /api2/json/openapi.json` (it holds nothing but the
API's shape; PBS likewise serves its API viewer to anyone). The document is the bare
OpenAPI object, not wrapped in `{"data": ...}`.

What is described, per endpoint:

* the path below `/api2/json` with its `{name}` parameters; GET/DELETE take the others in
  the query string, POST/PUT in a body, `application/x-www-form-urlencoded` or
  `application/json` (params.py: a JSON body ignores the query string, so the body is the
  one place described);
* each parameter's type, required-ness, default, minimum/maximum, length limits and pattern
  as declared; enums where the check is a closed set (backup types, roles, task states);
  checks that are code (namespaces, auth ids, ...) are named in the parameter's
  description only;
* 200: `{"data": ...}` with `data` from the handler's return annotation (`str`, `bool`,
  `list[dict]`, ...; `Result` adds top-level keys such as `total` or `digest`), raw handlers
  (downloads) as `application/octet-stream`;
* the error statuses. PBS sends an error's message as plain text but labelled
  `application/json;charset=UTF-8`; chunkyard does the same, and the document says so:
  the error media type is that JSON type with *no* schema, and the description warns that
  the body is not JSON;
* security: `PBSAuthCookie` (cookie) plus `CSRFPreventionToken` (header, for POST, PUT and
  DELETE), or `Authorization: PBSAPIToken=user@realm!name:secret`.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from starlette.responses import Response

from chunkyard import __version__
from chunkyard.server.app import BASE, JSON_TYPE, Call, Endpoint, Result
from chunkyard.server.params import Param

OPENAPI_PATH = "/openapi.json"
OPENAPI_VERSION = "3.1.0"
FORM_TYPE = "application/x-www-form-urlencoded"
BODY_METHODS = frozenset({"POST", "PUT"})

ERROR_STATUSES = {
    "400": "Parameter verification failed or the request is invalid.",
    "401": "Authentication failed or is missing.",
    "403": "Permission check failed.",
    "404": "No such object (datastore, namespace, group, snapshot, user, task, ...).",
    "413": "Request body too large.",
    "429": "Too many failed login attempts from this address.",
    "500": "Internal server error.",
}
ERROR_NOTE = (" The body is the error message as plain UTF-8 text, sent (as PBS does) with "
              "the content type `application/json;charset=UTF-8`; it is not JSON.")

SECURITY_SCHEMES: dict[str, Any] = {
    "PBSAuthCookie": {"type": "apiKey", "in": "cookie", "name": "PBSAuthCookie",
                      "description": "The ticket from `POST /access/ticket`."},
    "CSRFPreventionToken": {"type": "apiKey", "in": "header", "name": "CSRFPreventionToken",
                            "description": "Required with the ticket cookie on POST, PUT "
                                           "and DELETE; from `POST /access/ticket`."},
    "PBSAPIToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "`PBSAPIToken=user@realm!tokenname:secret` (no CSRF "
                                   "token needed)."},
}

_KIND_TYPE = {"string": "string", "boolean": "boolean", "integer": "integer"}


@lru_cache(maxsize=1)
def _check_schemas() -> dict[Callable[..., Any], dict[str, Any]]:
    """Schemas of the checks that accept a closed set, and descriptions of the others."""
    from chunkyard.config.roles import ROLES
    from chunkyard.names import Authid, BackupNamespace, BackupType, validate_backup_id
    from chunkyard.names.namespace import MAX_NAMESPACE_DEPTH
    from chunkyard.names.patterns import SAFE_ID
    from chunkyard.server.endpoints import acl, node_tasks, users

    return {
        BackupType.parse: {"enum": [t.value for t in BackupType]},
        acl.parse_role: {"enum": sorted(ROLES)},
        node_tasks._check_status_kind: {"enum": sorted(node_tasks.STATUS_KINDS)},
        BackupNamespace.parse: {"pattern": f"^(?:{SAFE_ID}(?:/{SAFE_ID})*)?$",
                                "description": "A namespace: `/`-separated names (at most "
                                               f"{MAX_NAMESPACE_DEPTH}), empty for the root."},
        validate_backup_id: {"pattern": f"^{SAFE_ID}$"},
        acl.parse_acl_path: {"description": "An ACL path: `/` or `/`-separated names."},
        users.parse_userid: {"description": "A user id, `name@realm`."},
        users.parse_authid: {"description": "An auth id, `name@realm[!token]`."},
        Authid.parse: {"description": "An auth id, `name@realm[!token]`."},
    }


def param_schema(param: Param) -> dict[str, Any]:
    """The JSON schema of one declared parameter's value."""
    if param.kind == "array":
        item: dict[str, Any] = {"type": "string"}
        item.update(_check_extra(param))
        return {"type": "array", "items": item}
    schema: dict[str, Any] = {"type": _KIND_TYPE[param.kind]}
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.maximum is not None:
        schema["maximum"] = param.maximum
    if param.min_length is not None:
        schema["minLength"] = param.min_length
    if param.max_length is not None:
        schema["maxLength"] = param.max_length
    if param.pattern is not None:
        schema["pattern"] = f"^(?:{param.pattern.pattern})$"
    schema.update(_check_extra(param))
    default = param.default
    if param.optional and isinstance(default, (bool, int, str)) and not \
            (param.kind == "integer" and isinstance(default, bool)):
        schema["default"] = default
    elif param.optional and default is not None and str(default) == "":
        schema["default"] = ""  # the root namespace
    return schema


def _check_extra(param: Param) -> dict[str, Any]:
    if param.check is None:
        return {}
    try:
        return dict(_check_schemas().get(param.check, {}))
    except TypeError:  # unhashable check
        return {}


def _type_schema(hint: Any) -> dict[str, Any]:
    """A JSON schema of a handler's return annotation (generic where it says `Any`)."""
    if hint is type(None):
        return {"type": "null"}
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0]) if args else {}}
    if origin is dict:
        value = _type_schema(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value} if value else \
            {"type": "object"}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return {"anyOf": [_type_schema(a) for a in args]}
    return {}


def _return_hint(endpoint: Endpoint) -> Any:
    try:
        return typing.get_type_hints(endpoint.handler).get("return", Any)
    except Exception:  # an annotation that does not resolve: describe generically
        return Any


def _success(endpoint: Endpoint) -> dict[str, Any]:
    hint = _return_hint(endpoint)
    if endpoint.handler is openapi_document:
        return {"description": "The OpenAPI document (not enveloped).",
                "content": {"application/json": {"schema": {"type": "object"}}}}
    if isinstance(hint, type) and issubclass(hint, Response):
        return {"description": "The file's bytes.",
                "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}
    envelope: dict[str, Any] = {"type": "object", "required": ["data"]}
    if hint is Result:
        envelope["properties"] = {"data": {}}
        envelope["description"] = ("`data` and further top-level attributes (`total`, "
                                   "`digest`, ...).")
    else:
        envelope["properties"] = {"data": _type_schema(hint)}
        envelope["additionalProperties"] = False
    return {"description": "Success: the result in PBS's `{\"data\": ...}` envelope.",
            "content": {JSON_TYPE: {"schema": envelope}}}


def _errors(endpoint: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, text in ERROR_STATUSES.items():
        if status == "413" and endpoint.method not in BODY_METHODS:
            continue
        if status == "429" and endpoint.path != "/access/ticket":
            continue
        out[status] = {"description": text + ERROR_NOTE, "content": {JSON_TYPE: {}}}
    return out


def _path_names(path: str) -> list[str]:
    names: list[str] = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":", 1)[0])
    return names


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    in_path = _path_names(endpoint.path)
    parameters: list[dict[str, Any]] = []
    for name in in_path:
        param = endpoint.params.get(name, Param(optional=False))
        parameters.append({"name": name, "in": "path", "required": True,
                           "schema": param_schema(param)})
    rest = {k: v for k, v in endpoint.params.items() if k not in in_path}
    op: dict[str, Any] = {
        "operationId": f"{endpoint.method.lower()}{endpoint.path}",
        "summary": endpoint.description,
        "tags": [endpoint.path.strip("/").split("/", 1)[0] or "root"],
    }
    if endpoint.method in BODY_METHODS:
        if rest:
            body = {"type": "object", "additionalProperties": False,
                    "properties": {k: param_schema(v) for k, v in rest.items()}}
            required = [k for k, v in rest.items() if not v.optional]
            if required:
                body["required"] = required
            op["requestBody"] = {"required": bool(required), "content": {
                FORM_TYPE: {"schema": body}, "application/json": {"schema": body}}}
    else:
        for name, param in rest.items():
            entry: dict[str, Any] = {"name": name, "in": "query",
                                     "required": not param.optional,
                                     "schema": param_schema(param)}
            if param.kind == "array":
                entry.update(style="form", explode=True)
            parameters.append(entry)
    if parameters:
        op["parameters"] = parameters
    op["responses"] = {"200": _success(endpoint), **_errors(endpoint)}
    if not endpoint.auth:
        op["security"] = []
    elif endpoint.method in ("POST", "PUT", "DELETE"):
        op["security"] = [{"PBSAuthCookie": [], "CSRFPreventionToken": []},
                          {"PBSAPIToken": []}]
    return op


def build_document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI document describing `endpoints`."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(BASE + endpoint.path, {})[endpoint.method.lower()] = \
            _operation(endpoint)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "chunkyard", "version": __version__,
                 "description": "A Proxmox Backup Server compatible REST API. Every path is "
                                "also served below /api2/extjs in PBS's ExtJS format: HTTP "
                                "200 with `success`, and `message`, `errors` and `status` "
                                "when it fails."},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": SECURITY_SCHEMES},
        "security": [{"PBSAuthCookie": []}, {"PBSAPIToken": []}],
    }


@lru_cache(maxsize=1)
def _served_document() -> bytes:
    from chunkyard.server.endpoints import all_endpoints

    return json.dumps(build_document(all_endpoints()), separators=(",", ":")).encode()


def openapi_document(call: Call) -> Response:
    return Response(_served_document(), media_type="application/json")


ENDPOINTS = [
    Endpoint("GET", OPENAPI_PATH, openapi_document, {}, auth=False,
             description="This OpenAPI document (no authentication)."),
]

__all__ = ["ENDPOINTS", "OPENAPI_PATH", "build_document", "openapi_document", "param_schema"]
