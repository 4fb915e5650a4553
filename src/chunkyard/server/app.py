"""The HTTP layer: `create_app(state)`, PBS's envelope, errors and authentication per request.

Endpoints are plain functions `handler(call) -> data` declared with their parameters (see
`params`); this module turns a request into a `Call` and the result or error into PBS's
answer:

* success: 200, `{"data": ...}` (plus extra top-level keys a handler returns in `Result`),
  `Content-Type: application/json;charset=UTF-8`;
* error: the status (400 by default; 401, 403, 404, 413, 429, 500) with the plain message text
  as the body and the same JSON content type, as PBS. Failed authentication is answered
  after `state.auth_failure_delay` seconds (PBS: 3 s) with the generic public message.
  Unexpected exceptions are logged with their traceback and answered `500 internal server
  error`; no traceback ever reaches a client.

Every endpoint is also served under `/api2/extjs` in PBS's ExtJS format (for web UIs):
always HTTP 200, `{"data": ..., "success": true}` (plus the extra keys), or
`{"success": false, "message": ..., "errors": {param: message}, "status": <the status
/api2/json would answer>}`; a parameter error's message is "parameter verification errors"
with the details in `errors`. Raw answers (downloads) are the same under both.

FastAPI is the application object (for its OpenAPI machinery later), but the routes are
plain Starlette routes: PBS's parameter rules (form + query, JSON ignoring the query,
booleans, unknown parameters refused) are not pydantic's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chunkyard.errors import ChunkyardError, NotFound
from chunkyard.names import Authid
from chunkyard.server.auth import AclTree, AuthError, authenticate_request
from chunkyard.server.params import MAX_BODY_SIZE, ApiError, Param, ParameterError, collect
from chunkyard.server.state import ServerState

log = logging.getLogger("chunkyard.server")

BASE = "/api2/json"
EXTJS_BASE = "/api2/extjs"
JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class Result:
    """A result with extra top-level attributes (`total`, ...) beside `data`."""

    data: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    """One request as a handler sees it."""

    state: ServerState
    params: dict[str, Any]
    authid: Authid | None
    source: str
    _acl: AclTree | None = None

    @property
    def caller(self) -> Authid:
        if self.authid is None:  # pragma: no cover - only public endpoints lack a caller
            raise AuthError("no authentication credentials provided")
        return self.authid

    @property
    def acl(self) -> AclTree:
        if self._acl is None:
            self._acl = self.state.acl()
        return self._acl


Handler = Callable[[Call], Any]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below /api2/json, Starlette syntax: /admin/datastore/{store}/groups
    handler: Handler
    params: Mapping[str, Param] = field(default_factory=dict)
    auth: bool = True
    description: str = ""


def json_response(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status, headers={"content-type": JSON_TYPE})


def error_response(message: str, status: int) -> Response:
    return Response(message.encode("utf-8"), status_code=status,
                    headers={"content-type": JSON_TYPE})


@dataclass(frozen=True)
class Formatter:
    """How an API base answers: `data(payload)` for a result (`{"data": ...}` and its extra
    keys), `error(err, status, message)` for a refused request."""

    base: str
    data: Callable[[dict[str, Any]], Response]
    error: Callable[[BaseException | None, int, str], Response]


def _json_error(err: BaseException | None, status: int, message: str) -> Response:
    return error_response(message, status)


def _extjs_data(payload: dict[str, Any]) -> Response:
    return json_response({**payload, "success": True})


def _extjs_error(err: BaseException | None, status: int, message: str) -> Response:
    errors: dict[str, str] = {}
    if isinstance(err, ParameterError):
        errors, message = err.errors, "parameter verification errors"
    return json_response({"success": False, "message": message, "errors": errors,
                          "status": status})


JSON_FORMAT = Formatter(BASE, json_response, _json_error)
EXTJS_FORMAT = Formatter(EXTJS_BASE, _extjs_data, _extjs_error)


def _status_of(err: BaseException) -> tuple[int, str]:
    if isinstance(err, ApiError):
        return err.status, str(err)
    if isinstance(err, AuthError):
        return err.http_status, err.public_message
    if isinstance(err, NotFound):
        return 404, str(err)
    if isinstance(err, ChunkyardError):
        return 400, str(err)
    raise err


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_SIZE:
        raise ApiError("Request body too large", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            raise ApiError("Request body too large", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _authenticate(state: ServerState, request: Request) -> Authid:
    return authenticate_request(
        method=request.method, cookie_headers=request.headers.getlist("cookie"),
        authorization=request.headers.get("authorization"),
        csrf_token=request.headers.get("csrfpreventiontoken"),
        keys=state.keys, accounts=state.accounts).authid


def _route(state: ServerState, endpoint: Endpoint, fmt: Formatter) -> Route:
    async def handle(request: Request) -> Response:
        source = request.client.host if request.client else "unknown"
        try:
            authid: Authid | None = None
            if endpoint.auth:
                authid = await run_in_threadpool(_authenticate, state, request)
            body = await _read_body(request) if request.method in ("POST", "PUT") else b""
            params = collect(endpoint.params, method=request.method,
                             content_type=request.headers.get("content-type"),
                             query=request.query_params.multi_items(), body=body,
                             path_params={k: str(v) for k, v in request.path_params.items()})
            call = Call(state, params, authid, source)
            result = await run_in_threadpool(endpoint.handler, call)
        except Exception as err:
            if isinstance(err, AuthError) and err.http_status == 401:
                log.info("authentication failure from %s on %s %s: %s", source,
                         request.method, request.url.path, err)
                await asyncio.sleep(state.auth_failure_delay)
            elif isinstance(err, AuthError):
                log.info("%s %s by %s refused: %s", request.method, request.url.path,
                         source, err)
            try:
                status, message = _status_of(err)
            except Exception:
                log.exception("internal error in %s %s", request.method, request.url.path)
                return fmt.error(None, 500, "internal server error")
            return fmt.error(err, status, message)
        if isinstance(result, Response):  # raw handlers (downloads) answer for themselves
            return result
        if isinstance(result, Result):
            return fmt.data({"data": result.data, **result.extra})
        return fmt.data({"data": result})

    return Route(fmt.base + endpoint.path, handle, methods=[endpoint.method],
                 include_in_schema=False)


def create_app(state: ServerState, endpoints: list[Endpoint] | None = None) -> FastAPI:
    """The ASGI application serving `endpoints` (default: every implemented endpoint)."""
    if endpoints is None:
        from chunkyard.server.endpoints import all_endpoints

        endpoints = all_endpoints()
    app = FastAPI(title="chunkyard", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.chunkyard = state
    for fmt in (JSON_FORMAT, EXTJS_FORMAT):
        for endpoint in endpoints:
            app.router.routes.append(_route(state, endpoint, fmt))

    async def not_found(request: Request) -> Response:
        path = request.url.path
        fmt = EXTJS_FORMAT if path.startswith(EXTJS_BASE + "/") else JSON_FORMAT
        if path.startswith((BASE + "/", EXTJS_BASE + "/")):
            from starlette.routing import Match

            for route in app.router.routes:
                if isinstance(route, Route) and route.path != "/{rest:path}":
                    match, _ = route.matches({**request.scope, "method": "GET",
                                              "type": "http"})
                    if match != Match.NONE and route.methods and \
                            request.method not in route.methods:
                        return fmt.error(
                            None, 501, f"Method '{request.method} {path}' not implemented")
        return fmt.error(None, 404, f"Path '{path}' not found.")

    app.router.routes.append(Route("/{rest:path}", not_found,
                                   methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"],
                                   include_in_schema=False))
    return app


__all__ = ["BASE", "EXTJS_BASE", "Call", "Endpoint", "Handler", "Result", "create_app",
           "error_response", "json_response"]
