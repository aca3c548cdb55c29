"""The OpenAPI document describes every route, its real bodies, and every error status it can answer.

tests/e2e/test_schemathesis.py holds the live API to the document; these say what the document must
contain whatever schemathesis happens to generate.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from ikoma.api.app import create_app
from ikoma.api.policy import MUTATING, POLICY, RUNNER, route_keys
from ikoma.console import routes as console_routes
from ikoma.domain.roles import Role
from ikoma.settings import Settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
# routes FastAPI serves for the document itself (or a redirect to it): not operations of the API
NOT_DOCUMENTED = {("GET", "/"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect")}
NOT_DOCUMENTED |= {("GET", "/redoc")}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'x.db'}"
    schema: dict[str, Any] = create_app(Settings(DATABASE_URL=url), run_reconciler=False).openapi()
    return schema


def console_pages() -> set[tuple[str, str]]:
    """The console's pages and static files (console/): HTML for browsers, not operations of the API."""
    app = FastAPI()
    app.include_router(console_routes())
    return route_keys(app.routes)


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op for path, ops in document["paths"].items() for method, op in ops.items()
    }


def test_every_route_in_the_policy_table_is_an_operation_mcp_included(document: dict[str, Any]) -> None:
    missing = sorted(POLICY.keys() - NOT_DOCUMENTED - console_pages() - operations(document).keys())
    assert missing == []


def test_no_json_answer_is_documented_as_a_plain_string(document: dict[str, Any]) -> None:
    """FastAPI documents a body as `{"type": "string"}` unless the response class is a JSONResponse."""
    strings = [
        f"{key} {status}"
        for key, op in operations(document).items()
        for status, response in op["responses"].items()
        if response.get("content", {}).get("application/json", {}).get("schema") == {"type": "string"}
    ]
    assert strings == []


def test_every_error_status_is_documented_with_the_one_error_shape(document: dict[str, Any]) -> None:
    for (method, path), op in operations(document).items():
        access = POLICY[(method, path)]
        responses = op["responses"]
        expected = {"422"}
        if isinstance(access, Role):
            expected |= {"400", "401", "403"}
        if access == RUNNER:
            expected |= {"400", "401", "409"}
        if method in MUTATING:
            expected |= {"400", "413", "415"}
        if "{" in path and access != RUNNER:
            expected.add("404")
        if path != "/health":
            expected.add("503")
        assert expected <= responses.keys(), (method, path, sorted(expected - responses.keys()))
        for status in expected:
            if (path, status) in (("/readyz", "503"), ("/mcp", "400")):
                continue  # readiness answers its own shape; MCP's parse errors are JSON-RPC errors
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == ERROR_BODY, (method, path, status, schema)


def test_credentials_are_security_schemes_per_kind_of_caller(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"ApiKey", "Bearer", "AdminKey", "RunnerId", "RunnerToken", "BootstrapToken"} <= schemes.keys()
    ops = operations(document)
    assert ops[("GET", "/v1/servers")]["security"] == [{"ApiKey": []}, {"Bearer": []}, {"AdminKey": []}]
    assert ops[("POST", "/v1/runner/heartbeat")]["security"] == [{"RunnerId": [], "RunnerToken": []}]
    assert ops[("POST", "/v1/runner/register")]["security"] == [{"BootstrapToken": []}]
    assert ops[("GET", "/health")]["security"] == []
    assert "HTTPValidationError" not in document["components"]["schemas"]
