"""OpenAPI for the whole API, including the plain-Starlette runner routes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

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

_RUNNER_HEADERS = [
    {"name": "x-runner-id", "in": "header", "required": True, "schema": {"type": "string", "format": "uuid"}},
    {"name": "x-runner-token", "in": "header", "required": True, "schema": {"type": "string"}},
]
_ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(
    summary: str,
    body: type[BaseModel] | None,
    answer: type[BaseModel],
    *,
    order: bool,
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    errors = {"application/json": {"schema": _ref(ErrorBody)}}
    op: dict[str, Any] = {
        "tags": ["runner"],
        "summary": summary,
        "parameters": [*_RUNNER_HEADERS, *([_ORDER_ID] if order else []), *(extra or [])],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _ref(answer)}}},
            "401": {"description": "missing or invalid runner credentials", "content": errors},
            "409": {
                "description": "order_not_found, wrong_runner, invalid_status or stale_lease",
                "content": errors,
            },
            "422": {"description": "validation_error", "content": errors},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(body)}}}
    return op


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
        claim = _operation(
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
        register = _operation(
            "Trade a one-time bootstrap token for runner credentials", RegisterBody, Registered, order=False
        )
        register["parameters"] = [
            {"name": "x-bootstrap-token", "in": "header", "required": True, "schema": {"type": "string"}}
        ]
        register["responses"]["201"] = register["responses"].pop("200")
        schema["paths"].update(
            {
                "/v1/runner/heartbeat": {
                    "post": _operation(
                        "Runner heartbeat", RunnerHeartbeat, RunnerHeartbeatAnswer, order=False
                    )
                },
                "/v1/runner/orders/claim-next": {"post": claim},
                "/v1/runner/orders/{order_id}/start": {
                    "post": _operation("Start a claimed order", LeaseBody, OrderPublic, order=True)
                },
                "/v1/runner/orders/{order_id}/heartbeat": {
                    "post": _operation(
                        "Extend the lease; tells whether cancel was requested",
                        LeaseBody,
                        OrderHeartbeatAnswer,
                        order=True,
                    )
                },
                "/v1/runner/orders/{order_id}/logs": {
                    "post": _operation(
                        "Append log chunks (idempotent by seq)", LogsBody, LogsAccepted, order=True
                    )
                },
                "/v1/runner/register": {"post": register},
                "/v1/runner/orders/{order_id}/complete": {
                    "post": _operation(
                        "Complete with an outcome and a report (v1 or v2)",
                        CompleteBody,
                        OrderPublic,
                        order=True,
                    )
                },
            }
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
