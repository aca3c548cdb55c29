"""OpenAPI for the whole API: FastAPI's document, plus the plain-Starlette runner routes and `/mcp`, plus
every status a route can answer.

The statuses every route shares are not declared route by route (one would be forgotten): `_complete`
adds them to every operation from the rules that produce them — the policy table (401/403 for a
guarded route), the request guard (400/413/415/422 for a body, 422 for a query parameter), a path
parameter (404), the conflicts table below (409), the database (503) — each with the one error shape,
`ErrorBody`. tests/e2e/test_schemathesis.py holds the live API to this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from ikoma.api.policy import MUTATING, POLICY, Access
from ikoma.api.schemas import (
    ClaimedOrder,
    CompleteBody,
    ErrorBody,
    LeaseBody,
    LogsAccepted,
    LogsBody,
    OrderHeartbeatAnswer,
    OrderPublic,
    RegisterBody,
    Registered,
    RunnerHeartbeat,
    RunnerHeartbeatAnswer,
)
from ikoma.domain.roles import Role

_ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}

# Credentials (api/policy.py): the admin key or an API client token in any of three places; runners
# send their id and token together; a runner registering sends a one-time bootstrap token.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": "The admin key or an API client token.",
    },
    "Bearer": {"type": "http", "scheme": "bearer", "description": "The admin key or an API client token."},
    "AdminKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-ikoma-admin-key",
        "description": "The admin key (an API client token is accepted too).",
    },
    "RunnerId": {"type": "apiKey", "in": "header", "name": "x-runner-id", "description": "The runner's id."},
    "RunnerToken": {
        "type": "apiKey",
        "in": "header",
        "name": "x-runner-token",
        "description": "The runner's token (sent with x-runner-id).",
    },
    "BootstrapToken": {
        "type": "apiKey",
        "in": "header",
        "name": "x-bootstrap-token",
        "description": "A one-time token from POST /v1/runner-bootstrap-tokens.",
    },
}
CALLER_SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}, {"AdminKey": []}]
RUNNER_SECURITY: list[dict[str, list[str]]] = [{"RunnerId": [], "RunnerToken": []}]
REGISTER_PATH = "/v1/runner/register"
MCP_PATH = "/mcp"

RUNNER_ORDER_PATHS = (
    "/v1/runner/heartbeat",
    "/v1/runner/orders/claim-next",
    "/v1/runner/orders/{order_id}/start",
    "/v1/runner/orders/{order_id}/heartbeat",
    "/v1/runner/orders/{order_id}/logs",
    "/v1/runner/orders/{order_id}/complete",
)
RUNNER_CONFLICT = "`order_not_found`, `wrong_runner`, `invalid_status` or `stale_lease`"
# (method, path) → when it answers 409: the state refuses the request (services raise Conflict)
CONFLICTS: dict[tuple[str, str], str] = {
    ("POST", "/v1/servers"): "a server has this name, or the runner is attached to another server",
    ("PATCH", "/v1/servers/{server_id}"): "a server has this name, or the runner is attached elsewhere",
    ("DELETE", "/v1/servers/{server_id}"): "the server has orders that have not ended",
    ("POST", "/v1/servers/{server_id}/attach-runner"): "the runner is attached to another server",
    ("POST", "/v1/servers/{server_id}/test-connection"): "`not_ssh_server`: its runner reaches it, not SSH",
    ("PATCH", "/v1/servers/{server_id}/attach-runner"): "the runner is attached to another server",
    ("POST", "/v1/runners"): "a runner has this name",
    ("DELETE", "/v1/runners/{runner}"): "`runner_in_use`: orders refer to it; revoke it instead",
    ("POST", "/v1/runners/{runner}/rotate-token"): "`runner_revoked`: a revoked runner keeps no token",
    ("POST", "/v1/runner-bootstrap-tokens"): "the server already has a runner",
    ("POST", "/v1/playbooks"): "a playbook has this key",
    ("PUT", "/v1/playbooks/{key}"): "built-in playbooks cannot be replaced",
    ("POST", "/v1/orders"): "`idempotency_conflict`: the Idempotency-Key was used for another request",
    ("POST", "/v1/orders/{order_id}/cancel"): "the order has ended",
    ("POST", "/v1/orders/{order_id}/rerun"): "`idempotency_conflict` (the key was used for another request), "
    "or `server_deleted`",
    ("GET", "/v1/artifacts/{artifact_id}"): "`artifact_deleted`: deleted by retention",
    ("POST", "/v1/artifacts/{artifact_id}/pin"): "`artifact_deleted`: deleted by retention",
    ("DELETE", "/v1/artifacts/{artifact_id}/pin"): "`artifact_deleted`: deleted by retention",
    ("POST", "/execute/{tool}"): "`order_cancelled`: the tool's order was cancelled",
    ("POST", REGISTER_PATH): "the name is taken, or the bootstrap token's server already has a runner",
    **{("POST", path): RUNNER_CONFLICT for path in RUNNER_ORDER_PATHS},
}
# routes that touch no database: they never answer 503 database_unavailable
NO_DATABASE = frozenset({("GET", "/health")})

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "`invalid_json`: the body is not JSON; `invalid_role`: X-Role names no role; "
    "`invalid_cursor`: a cursor this API did not return",
    401: "`unauthorized`: the credential is missing or invalid",
    403: "`forbidden`: the caller's role (or server scope) does not allow this",
    404: "not found: no such object, or outside the caller's server scope",
    413: "`payload_too_large`: the body is over the route's limit",
    415: "`unsupported_media_type`: the body is not JSON",
    422: "`validation_error`, `nul_character` or `unknown_query_parameter` (`errors` says where)",
    503: "`database_unavailable`: the database is not answering; retry shortly",
}


def _ref(model: type[BaseModel] | str) -> dict[str, Any]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _runner_operation(
    summary: str,
    body: type[BaseModel] | None,
    answer: type[BaseModel],
    *,
    order: bool,
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["runner"],
        "summary": summary,
        "security": RUNNER_SECURITY,
        "parameters": [*([_ORDER_ID] if order else []), *(extra or [])],
        "responses": {"200": {"description": "OK", "content": _json(_ref(answer))}},
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": _json(_ref(body))}
    return op


def _runner_paths() -> dict[str, Any]:
    claim = _runner_operation(
        "Claim the oldest eligible order (long-poll with wait)",
        None,
        ClaimedOrder,
        order=False,
        extra=[
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "schema": {"type": "number", "minimum": 0, "maximum": 30},
            }
        ],
    )
    claim["responses"]["204"] = {"description": "no eligible order"}
    register = _runner_operation(
        "Trade a one-time bootstrap token for runner credentials", RegisterBody, Registered, order=False
    )
    register["security"] = [{"BootstrapToken": []}]
    register["responses"]["201"] = register["responses"].pop("200")
    return {
        "/v1/runner/heartbeat": {
            "post": _runner_operation("Runner heartbeat", RunnerHeartbeat, RunnerHeartbeatAnswer, order=False)
        },
        "/v1/runner/orders/claim-next": {"post": claim},
        "/v1/runner/orders/{order_id}/start": {
            "post": _runner_operation("Start a claimed order", LeaseBody, OrderPublic, order=True)
        },
        "/v1/runner/orders/{order_id}/heartbeat": {
            "post": _runner_operation(
                "Extend the lease; tells whether cancel was requested",
                LeaseBody,
                OrderHeartbeatAnswer,
                order=True,
            )
        },
        "/v1/runner/orders/{order_id}/logs": {
            "post": _runner_operation(
                "Append log chunks (idempotent by seq)", LogsBody, LogsAccepted, order=True
            )
        },
        REGISTER_PATH: {"post": register},
        "/v1/runner/orders/{order_id}/complete": {
            "post": _runner_operation(
                "Complete with an outcome and a report (v1 or v2)", CompleteBody, OrderPublic, order=True
            )
        },
    }


JSONRPC_MESSAGE: dict[str, Any] = {
    "type": "object",
    "description": "A JSON-RPC 2.0 message (MCP: initialize, tools/list, tools/call, resources/read…).",
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"type": ["string", "integer", "null"]},
        "method": {"type": "string"},
        "params": {"type": "object"},
        "result": {},
        "error": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "data": {}},
            "required": ["code", "message"],
        },
    },
    "required": ["jsonrpc"],
}


def _mcp_path() -> dict[str, Any]:
    """`POST /mcp`: MCP's streamable HTTP transport, stateless, every message answered with JSON."""
    protocol = {"content": _json(_ref("JsonRpcMessage"))}
    return {
        MCP_PATH: {
            "post": {
                "tags": ["mcp"],
                "summary": "MCP (streamable HTTP, stateless, JSON answers): the tools for an assistant",
                "description": "Send `Accept: application/json, text/event-stream` and "
                "`Content-Type: application/json`. Each tool call is checked and audited like "
                "`POST /execute/{tool}`. Protocol errors are JSON-RPC errors; refusals before the "
                "protocol (credential, role, body) are the API's error shape.",
                "operationId": "mcp_post",
                "security": CALLER_SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/JsonRpcMessage"},
                            "example": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        }
                    },
                },
                "responses": {
                    "200": {"description": "the JSON-RPC answer (a result or a JSON-RPC error)", **protocol},
                    "202": {"description": "a notification or a response was accepted"},
                    "400": {"description": "a JSON-RPC parse or validation error", **protocol},
                    "406": {"description": "the client does not accept application/json", **protocol},
                },
            }
        }
    }


def _error_statuses(method: str, path: str, access: Access | None) -> dict[int, str]:
    """Every error status `method path` can answer, with what it means there."""
    found: dict[int, str] = {422: ERROR_DESCRIPTIONS[422]}
    guarded = isinstance(access, Role) or access == "runner"
    if method in MUTATING or guarded:
        # a body on a mutating method is read by the guard; X-Role is read on a guarded route
        found[400] = ERROR_DESCRIPTIONS[400]
    if method in MUTATING:
        found[413] = ERROR_DESCRIPTIONS[413]
        found[415] = ERROR_DESCRIPTIONS[415]
    if guarded:
        found[401] = ERROR_DESCRIPTIONS[401]
    if isinstance(access, Role):
        found[403] = ERROR_DESCRIPTIONS[403]
    if "{" in path and access != "runner":  # a runner route's unknown order is 409 order_not_found
        found[404] = ERROR_DESCRIPTIONS[404]
    if (method, path) in CONFLICTS:
        found[409] = f"`conflict`: {CONFLICTS[(method, path)]}"
    if (method, path) not in NO_DATABASE:
        found[503] = ERROR_DESCRIPTIONS[503]
        if method in MUTATING and isinstance(access, Role):
            found[503] += "; `audit_unavailable`: the audit entry cannot be written, nothing was done"
    return found


def _complete(schema: dict[str, Any]) -> None:
    """Every operation: its error statuses in the one error shape, and the credentials it takes."""
    error = _json(_ref(ErrorBody))
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            key = (method.upper(), path)
            access = POLICY.get(key)
            responses: dict[str, Any] = op.setdefault("responses", {})
            for code, description in _error_statuses(key[0], path, access).items():
                declared = responses.get(str(code), {})
                content = declared.get("content")
                # a shape a route declares stays (/readyz's 503, /mcp's JSON-RPC errors); FastAPI's
                # own 422 shape goes: every 422 is the one error shape (api/errors.py)
                keep = content is not None and "HTTPValidationError" not in str(content)
                responses[str(code)] = {
                    "description": declared.get("description") or description,
                    "content": content if keep else error,
                }
            for status, declared in responses.items():
                if status.isdigit() and int(status) >= 400 and "content" not in declared:
                    declared["content"] = error  # a status a route declared itself (/execute's 502, 504)
            if isinstance(access, Role):
                op["security"] = CALLER_SECURITY
            elif access is not None and path != REGISTER_PATH and access != "runner":
                op["security"] = []  # public
    components = schema["components"]
    components["securitySchemes"] = SECURITY_SCHEMES
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (
            ClaimedOrder,
            CompleteBody,
            LeaseBody,
            LogsAccepted,
            LogsBody,
            OrderHeartbeatAnswer,
            OrderPublic,
            RegisterBody,
            Registered,
            RunnerHeartbeat,
            RunnerHeartbeatAnswer,
            ErrorBody,
        ):
            model_schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = model_schema
        components["JsonRpcMessage"] = JSONRPC_MESSAGE
        schema["paths"].update(_runner_paths())
        schema["paths"].update(_mcp_path())
        _complete(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
