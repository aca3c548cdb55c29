"""Runner routes: the hot path (heartbeat, claim-next, start, heartbeat, complete).

Plain Starlette routes on purpose (docs/performance.md): credentials are checked first, the body is
validated with pydantic TypeAdapters, and answers are serialized straight to bytes. Their OpenAPI
description is added by `openapi.py`.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ikoma.api.schemas import (
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
)
from ikoma.bootstrap import Context
from ikoma.contracts import error_paths, parse_report
from ikoma.domain.errors import BadRequest, Invalid, Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import bootstrap, logs
from ikoma.services.dispatch import MAX_WAIT_SECONDS

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = 1024 * 1024  # reports bigger than this belong in logs/artifacts, not the report


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _call(request: Request) -> Any:
    """The runner call's transaction, opened by authenticating the caller (401 before anything else)."""
    headers = request.headers
    return _ctx(request).dispatcher.runner_call(headers.get("x-runner-id"), headers.get("x-runner-token"))


async def _raw_body(request: Request) -> bytes:
    # read before the transaction opens: a slow client must never hold a database transaction
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise Invalid("request body is too large", reason="payload_too_large", limitBytes=MAX_BODY_BYTES)
    return raw


def _parse(raw: bytes, model: type[M]) -> M:
    if not raw.strip():
        raw = b"{}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", reason="invalid_json") from None
    return _adapter(model).validate_python(data)


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(model: type[M]) -> TypeAdapter[M]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


def _order_id(request: Request) -> str:
    raw = request.path_params["order_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise Invalid("order id must be a UUID", field="id", value=raw[:100]) from None


def _lease(body: LeaseBody) -> str | None:
    return str(body.lease_token) if body.lease_token else None


def _json(model: type[BaseModel], row: Any, status: int = 200) -> Response:
    return Response(
        model.model_validate(row).model_dump_json(by_alias=True), status, media_type="application/json"
    )


async def runner_heartbeat(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        body = _parse(raw, RunnerHeartbeat)
        answer = await _ctx(request).dispatcher.record_heartbeat(
            identity, version=body.version, hostname=body.hostname, capabilities=body.capabilities, tx=tx
        )
    return _json(RunnerHeartbeatAnswer, answer)


async def claim_next(request: Request) -> Response:
    dispatcher = _ctx(request).dispatcher
    async with _call(request) as (identity, tx):
        raw_wait = request.query_params.get("wait", "0")
        try:
            wait = float(raw_wait)
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise Invalid(
                f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}",
                field="wait",
                value=raw_wait[:20],
            )
        order = await dispatcher.claim_once(identity, tx=tx)
    if order is None and wait > 0:
        # long-poll outside the first transaction: each later try is a transaction of its own
        order = await dispatcher.claim_next(identity, wait=wait, disconnected=request.is_disconnected)
    if order is None:
        return Response(status_code=204)
    return _json(ClaimedOrder, order)


async def start(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(raw, LeaseBody)
        order = await _ctx(request).dispatcher.start(identity, order_id, _lease(body), tx=tx)
    return _json(OrderPublic, order)


async def order_heartbeat(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(raw, LeaseBody)
        answer = await _ctx(request).dispatcher.heartbeat(identity, order_id, _lease(body), tx=tx)
    return _json(OrderHeartbeatAnswer, answer)


async def complete(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(raw, CompleteBody)
        try:
            report = parse_report(body.report)
        except ValidationError as exc:
            errors = [{**e, "path": f"report.{e['path']}".rstrip(".")} for e in error_paths(exc)]
            raise Invalid("report does not match its contract", errors=errors) from None
        order = await _ctx(request).dispatcher.complete(
            identity,
            order_id,
            outcome=OrderStatus(body.status),
            report=body.report,
            report_version=report.version,
            report_summary=report.summary,
            lease_token=_lease(body),
            tx=tx,
        )
    return _json(OrderPublic, order)


async def register(request: Request) -> Response:
    """Trade a one-time bootstrap token for runner credentials (`ikoma runner register`)."""
    ctx = _ctx(request)
    bootstrap_token = request.headers.get("x-bootstrap-token")
    raw = await _raw_body(request)
    if not bootstrap_token:
        raise Unauthorized("bootstrap token is missing or invalid")
    body = _parse(raw, RegisterBody)
    answer = await bootstrap.register_runner(
        ctx.db,
        bootstrap_token=bootstrap_token,
        name=body.name,
        hostname=body.hostname,
        stale_after=ctx.settings.stale_after,
    )
    return _json(Registered, answer, 201)


async def append_logs(request: Request) -> Response:
    ctx = _ctx(request)
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(raw, LogsBody)
        await ctx.dispatcher.check_logs_allowed(identity, order_id, _lease(body), tx=tx)
        chunks = [logs.Chunk(seq=c.seq, stream=c.stream, data=c.data) for c in body.chunks]
        answer = await logs.append_chunks(
            tx, ctx.wakeups, order_id=order_id, chunks=chunks, limit_bytes=ctx.settings.log_limit_bytes
        )
    return _json(LogsAccepted, answer)


routes = [
    Route("/v1/runner/register", register, methods=["POST"]),
    Route("/v1/runner/orders/{order_id}/logs", append_logs, methods=["POST"]),
    Route("/v1/runner/heartbeat", runner_heartbeat, methods=["POST"]),
    Route("/v1/runner/orders/claim-next", claim_next, methods=["POST"]),
    Route("/v1/runner/orders/{order_id}/start", start, methods=["POST"]),
    Route("/v1/runner/orders/{order_id}/heartbeat", order_heartbeat, methods=["POST"]),
    Route("/v1/runner/orders/{order_id}/complete", complete, methods=["POST"]),
]
