"""The OpenAPI document (`GET /api2/json/openapi.json`): valid, complete, and true of a real
`chunkyard serve` process, which schemathesis fuzzes in a bounded run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chunkyard.server.app import BASE
from chunkyard.server.endpoints import all_endpoints
from chunkyard.server.openapi import build_document
from tests.server_helpers import Server, login, prepare, start_server, stop

DOC_PATH = BASE + "/openapi.json"
# Not fuzzed: creating a datastore writes wherever a generated `path` points, deleting one
# (destroy-data) could remove the fixture's store, and GC is slow and tells nothing new.
EXCLUDED = ["post/config/datastore", "delete/config/datastore/{name}",
            "post/admin/datastore/{store}/gc"]
MAX_EXAMPLES = 15
# path parameters naming the fixture's objects, for half of the positive cases
KNOWN = {"store": "store1", "node": "localhost"}


def test_document_is_valid_and_complete() -> None:
    doc = build_document(all_endpoints())
    validate(doc)
    for endpoint in all_endpoints():
        op = doc["paths"][BASE + endpoint.path][endpoint.method.lower()]
        declared = set(endpoint.params)
        described = {p["name"] for p in op.get("parameters", [])}
        body = op.get("requestBody", {}).get("content", {})
        for media in body.values():
            described |= set(media["schema"]["properties"])
        assert described == declared, (endpoint.method, endpoint.path)
        assert "200" in op["responses"] and "400" in op["responses"]
        security = op.get("security", doc["security"])
        if endpoint.auth:
            assert {"PBSAPIToken": []} in security
        else:
            assert security == []
    assert set(doc["components"]["securitySchemes"]) == {
        "PBSAuthCookie", "CSRFPreventionToken", "PBSAPIToken"}


def test_parameter_schemas() -> None:
    doc = build_document(all_endpoints())
    tasks = doc["paths"][BASE + "/nodes/{node}/tasks"]["get"]
    by_name = {p["name"]: p for p in tasks["parameters"]}
    assert by_name["node"]["in"] == "path" and by_name["node"]["required"]
    assert by_name["limit"]["schema"] == {"type": "integer", "minimum": 0, "default": 50}
    assert by_name["statusfilter"]["schema"]["items"]["enum"] == [
        "error", "ok", "unknown", "warning"]
    snapshots = doc["paths"][BASE + "/admin/datastore/{store}/snapshots"]["get"]
    by_name = {p["name"]: p for p in snapshots["parameters"]}
    assert by_name["backup-type"]["schema"]["enum"] == ["ct", "host", "vm"]
    assert by_name["ns"]["schema"]["default"] == ""
    create = doc["paths"][BASE + "/admin/datastore/{store}/namespace"]["post"]
    content = create["requestBody"]["content"]
    assert set(content) == {"application/x-www-form-urlencoded", "application/json"}
    assert content["application/json"]["schema"]["required"] == ["name"]
    ok = create["responses"]["200"]["content"]["application/json;charset=UTF-8"]["schema"]
    assert ok["properties"]["data"] == {"type": "string"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Server, dict[str, str]]]:
    """A throwaway server of its own: the fuzzing may change or delete anything in it."""
    root = tmp_path_factory.mktemp("openapi")
    secrets = prepare(root / "data", root / "src")
    srv = start_server(root / "data")
    try:
        yield srv, secrets
    finally:
        assert stop(srv) == 0, srv.output()
        assert "Traceback" not in srv.output()  # no request ended in an internal error


def test_served_document(fuzz_server: tuple[Server, dict[str, str]]) -> None:
    srv, _ = fuzz_server
    r = httpx.get(srv.base + DOC_PATH)  # no authentication needed
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == build_document(all_endpoints())


@pytest.fixture(scope="module")
def api_schema(fuzz_server: tuple[Server, dict[str, str]]) -> Any:
    return schemathesis.openapi.from_url(fuzz_server[0].base + DOC_PATH)


@pytest.fixture(scope="module")
def auth_headers(fuzz_server: tuple[Server, dict[str, str]]) -> dict[str, str]:
    """admin@pbs's ticket cookie and CSRF token as plain headers on every request. (An API
    token header works as well, but each request then verifies the token's SHA-512-crypt
    hash, ~65 ms on this machine against ~2 ms for a ticket: 30 times fewer examples.)"""
    api = login(fuzz_server[0].base)
    ticket = api.client.cookies["PBSAuthCookie"]
    return {"Cookie": f"PBSAuthCookie={ticket}", "CSRFPreventionToken": api.csrf}


def test_token_header_accepted(fuzz_server: tuple[Server, dict[str, str]]) -> None:
    srv, secrets = fuzz_server
    r = httpx.get(srv.base + BASE + "/version",
                  headers={"Authorization": f"PBSAPIToken={secrets['token']}"})
    assert r.status_code == 200


def _fuzzed() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) to fuzz: both modes, but no negative cases of an operation
    without parameters (there is nothing to make invalid)."""
    doc = build_document(all_endpoints())
    return [(method, path, mode) for path, ops in doc["paths"].items()
            for method, op in ops.items() if op["operationId"] not in EXCLUDED
            for mode in GenerationMode
            if mode == GenerationMode.POSITIVE or "parameters" in op or "requestBody" in op]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.mark.parametrize(("method", "path", "mode"), _fuzzed(),
                         ids=lambda x: x.value if isinstance(x, GenerationMode) else str(x))
def test_fuzz(api_schema: Any, fuzz_server: tuple[Server, dict[str, str]],
              auth_headers: dict[str, str], method: str, path: str,
              mode: GenerationMode) -> None:
    """Schemathesis cases for one operation (schemathesis's own pytest plugin is not used:
    its lazy fixture loading does not work with this pytest)."""
    operation = api_schema[path][method.upper()]
    base = fuzz_server[0].base

    strategy = operation.as_strategy(generation_mode=mode)
    known = {k: v for k, v in KNOWN.items() if "{" + k + "}" in path}
    if known and mode == GenerationMode.POSITIVE:  # also reach the existing objects
        strategy = strategy | operation.as_strategy(generation_mode=mode,
                                                    path_parameters=known)

    @given(strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base, headers=auth_headers, timeout=30,
                               checks=CHECKS)

    run()


def test_fuzz_excludes_only_listed(api_schema: Any) -> None:
    ids = {op["operationId"] for path in api_schema.raw_schema["paths"].values()
           for op in path.values()}
    assert set(EXCLUDED) <= ids
