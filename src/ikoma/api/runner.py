"""Runner routes: the hot path (heartbeat, claim-next, start, heartbeat, complete).

Plain Starlette routes on purpose (docs/performance.md): credentials are checked first (a body still
on the wire is not waited for until the runner is known; one past its limit is refused with 413), the
body is validated with pydantic TypeAdapters, and answers are serialized straight to bytes. Their OpenAPI
description is added by `openapi.py`.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ikoma.api import bodies
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
from ikoma.domain.errors import Invalid, Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import bootstrap, logs
from ikoma.services.dispatch import MAX_WAIT_SECONDS

M = TypeVar("M", bound=BaseModel)


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def _call(request: Request, *, claim: bool = False) -> Any:
    """The runner call's transaction, opened by authenticating the caller (401 before anything else)."""
    headers = request.headers
    return _ctx(request).dispatcher.runner_call(
        headers.get("x-runner-id"), headers.get("x-runner-token"), claim=claim
    )


async def _authenticate(request: Request) -> None:
    """401 for a caller who is not a runner, in a read of its own (no transaction held meanwhile)."""
    headers = request.headers
    await _ctx(request).dispatcher.authenticate(headers.get("x-runner-id"), headers.get("x-runner-token"))


async def _raw_body(request: Request, *, logs: bool = False, authenticate: bool = True) -> bytes:
    # Read before the call's transaction opens: a slow client must never hold a database transaction.
    # What came with the headers is in memory already; anything still on the wire (or declared past
    # the limit) is waited for only once the runner is authenticated.
    settings = _ctx(request).settings
    limit, setting = (
        (settings.body_limit_logs, "IKOMA_BODY_LIMIT_LOGS")
        if logs
        else (settings.body_limit_runner, "IKOMA_BODY_LIMIT_RUNNER")
    )
    return await bodies.read(
        request.receive,
        limit=limit,
        setting=setting,
        declared=bodies.declared_length(request.scope),
        before_waiting=(lambda: _authenticate(request)) if authenticate else None,
    )


def _parse(request: Request, raw: bytes, model: type[M]) -> M:
    bodies.check_media_type(request.headers.get("content-type"))
    return _adapter(model).validate_python(bodies.parse_json(raw, empty={}))


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
        body = _parse(request, raw, RunnerHeartbeat)
        answer = await _ctx(request).dispatcher.record_heartbeat(
            identity, version=body.version, hostname=body.hostname, capabilities=body.capabilities, tx=tx
        )
    return _json(RunnerHeartbeatAnswer, answer)


async def claim_next(request: Request) -> Response:
    dispatcher = _ctx(request).dispatcher
    raw_wait = request.query_params.get("wait", "0")
    try:
        wait = float(raw_wait)
    except ValueError:
        wait = -1.0
    if 0 < wait <= MAX_WAIT_SECONDS:
        # a long-poll: the token from the verified-token cache, a look before any write (answered from
        # the doorbell's last read when safe), so an idle runner's poll costs no query (docs/performance.md)
        headers = request.headers
        identity = await dispatcher.authenticate(headers.get("x-runner-id"), headers.get("x-runner-token"))
        order = await dispatcher.claim_next(identity, wait=wait, disconnected=request.is_disconnected)
    else:
        async with _call(request, claim=True) as (identity, tx):
            if not 0 <= wait <= MAX_WAIT_SECONDS:
                raise Invalid(
                    f"wait must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}",
                    field="wait",
                    value=raw_wait[:20],
                )
            order = await dispatcher.claim_once(identity, tx=tx)
    if order is None:
        return Response(status_code=204)
    return _json(ClaimedOrder, order)


async def start(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(request, raw, LeaseBody)
        order = await _ctx(request).dispatcher.start(identity, order_id, _lease(body), tx=tx)
    return _json(OrderPublic, order)


async def order_heartbeat(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(request, raw, LeaseBody)
        answer = await _ctx(request).dispatcher.heartbeat(identity, order_id, _lease(body), tx=tx)
    return _json(OrderHeartbeatAnswer, answer)


async def complete(request: Request) -> Response:
    raw = await _raw_body(request)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(request, raw, CompleteBody)
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
    if not bootstrap_token:
        raise Unauthorized("bootstrap token is missing or invalid")
    # the token is checked (and spent) with the registration; until then the body is bounded by its limit
    raw = await _raw_body(request, authenticate=False)
    body = _parse(request, raw, RegisterBody)
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
    raw = await _raw_body(request, logs=True)
    async with _call(request) as (identity, tx):
        order_id = _order_id(request)
        body = _parse(request, raw, LogsBody)
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
