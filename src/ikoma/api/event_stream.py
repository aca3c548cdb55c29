"""Server-Sent Events routes: the event log live (`/v1/events/stream`) and an order's log live
(`/v1/orders/{id}/logs/stream`). Parse, check the caller's scope, stream what the services produce.

Both start with a `retry:` hint, send a comment heartbeat every `IKOMA_SSE_HEARTBEAT_SECONDS`, and
resume from the `Last-Event-ID` header a reconnecting EventSource sends (it wins over the query).
A client that goes away frees its subscription at once (sse-starlette watches for the disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request, Security
from starlette.responses import Response

from ikoma.api import session_cookie
from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.errors import short_error
from ikoma.api.policy import presented_credential
from ikoma.bootstrap import Context
from ikoma.domain.errors import Invalid, NotFound, Unauthorized
from ikoma.services import api_clients, logs, orders, sessions
from ikoma.services.event_fanout import EventFanout, EventFilter, frame, retry_frame
from ikoma.services.identity import Principal

log = structlog.get_logger("ikoma.sse")

router = APIRouter(prefix="/v1", dependencies=[Security(admin_key_header)])

LOG_PAGE = 1000
LOG_END = "end"
MAX_KINDS = 20
MAX_LAST_EVENT_ID = 2**63 - 1

STREAM_DOC = (
    "`text/event-stream`: first a `retry:` line, then one message per event: `id:` (the event id), "
    "`event:` (its kind) and `data:` (the event as JSON); a `: heartbeat` comment line every 15 s. A "
    "subscriber too far behind gets `event: stream.lagging` (data: `lastEventId`) and the stream ends."
)
LOG_STREAM_DOC = (
    "`text/event-stream`: `id:` (the chunk's seq), `event: log`, `data:` `{seq, stream, data, at}`; "
    "once the order has ended and every chunk was sent, `event: end` with `{status, truncated}`."
)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the caller's role does not allow this"},
}


class EventStreamDoc(Response):
    """The SSE routes' answer as the OpenAPI document shows it; the answer itself is built by
    `stream_response` (sse-starlette, imported on the first stream: it imports uvicorn, which importing
    the API must not, tests/unit/test_api_import.py)."""

    media_type = "text/event-stream"


def stream_response(content: AsyncGenerator[bytes, None], *, heartbeat: float) -> Response:
    from ikoma.api.sse_response import EventStreamResponse

    return EventStreamResponse(ended_quietly(content), heartbeat=heartbeat)


def credential_check(ctx: Context, request: Request) -> Callable[[], Awaitable[bool]]:
    """Whether the credential that opened a stream still holds (not revoked, expired or rotated away).

    A long-lived stream must not outlive its credential: the fan-out asks this every heartbeat. A
    database outage is no revocation: the stream goes on.
    """
    presented = presented_credential(request.scope) or ""
    # the console's session (issue 13) when no credential header opened the stream
    cookie = None if presented else session_cookie.read(request.scope)

    async def still_allowed() -> bool:
        if cookie is not None:
            try:
                await sessions.authenticate(ctx.db, cookie, idle_timeout_s=ctx.settings.session_idle_timeout)
            except Unauthorized:
                return False  # logged out, expired, or the user disabled or deleted
            except Exception as exc:
                log.warning("sse_credential_check_failed", error=type(exc).__name__)
            return True
        try:
            ctx.keyring.verify(presented)
            return True
        except Unauthorized:
            pass
        try:
            await api_clients.authenticate(ctx.db, presented)
        except Unauthorized:
            return False
        except Exception as exc:
            log.warning("sse_credential_check_failed", error=type(exc).__name__)
        return True

    return still_allowed


async def ended_quietly(frames: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The frames; a failure while streaming (the database away) ends the stream with one log line,
    not a traceback: the client reconnects with its Last-Event-ID and misses nothing."""
    async with contextlib.aclosing(frames):
        try:
            async for chunk in frames:
                yield chunk
        except Exception as exc:
            log.warning("sse_stream_failed", error=type(exc).__name__, detail=short_error(exc))


def fanout_of(request: Request) -> EventFanout:
    fanout: EventFanout = request.app.state.event_fanout
    return fanout


def resume_point(last_event_id: str | None, after: int | None) -> int | None:
    """Where a stream starts: after `Last-Event-ID` when sent (an EventSource reconnecting keeps its
    first URL, `?after=` included, so the header must win), else after `?after=`, else None (now)."""
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not text.isdigit() or int(text) > MAX_LAST_EVENT_ID:
        raise Invalid(
            "Last-Event-ID must be the id of an event (a non-negative integer)",
            reason="invalid_last_event_id",
            field="Last-Event-ID",
        )
    return int(text)


def visible_servers(principal: Principal, server_id: uuid.UUID | None) -> frozenset[str] | None:
    """The servers whose events the caller gets: the one asked for (if in scope), else its scope."""
    if server_id is not None:
        principal.require_server(str(server_id))
        return frozenset({str(server_id)})
    return principal.server_ids


LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", max_length=40, description="Resume after this id (sent by EventSource)"),
]


@router.get(
    "/events/stream",
    response_class=EventStreamDoc,
    responses={
        **ERRORS,
        200: {"description": STREAM_DOC, "content": {"text/event-stream": {}}},
        404: {"description": "`serverId` is not a server this caller may see (`server_not_found`)"},
    },
)
async def stream_events(
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_LAST_EVENT_ID, description="Backlog: events after this id")
    ] = None,
    kind: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=64)]] | None,
        Query(max_length=MAX_KINDS, description="Kind prefix (`order`, `order.failed`); repeatable (OR)"),
    ] = None,
    server_id: Annotated[uuid.UUID | None, Query(alias="serverId")] = None,
    order_id: Annotated[uuid.UUID | None, Query(alias="orderId")] = None,
    last_event_id: LastEventId = None,
) -> Response:
    """The event log live: the backlog after `Last-Event-ID` (or `after`), then new events as they are
    written. Without either, only events from now on. Same filters and visibility as `GET /v1/events`."""
    only = EventFilter(
        kinds=tuple(kind or ()),
        server_ids=visible_servers(principal, server_id),
        order_id=str(order_id) if order_id else None,
    )
    start = resume_point(last_event_id, after)
    stream = fanout_of(request).stream(only, start, still_allowed=credential_check(ctx, request))
    return stream_response(stream, heartbeat=ctx.settings.sse_heartbeat_seconds)


@router.get(
    "/orders/{order_id}/logs/stream",
    response_class=EventStreamDoc,
    responses={**ERRORS, 200: {"description": LOG_STREAM_DOC, "content": {"text/event-stream": {}}}},
)
async def stream_order_logs(
    order_id: uuid.UUID,
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
    after_seq: Annotated[
        int, Query(alias="afterSeq", ge=-1, le=MAX_LAST_EVENT_ID, description="Chunks after this seq")
    ] = -1,
    last_event_id: LastEventId = None,
) -> Response:
    """An order's log live: the chunks stored so far, then new ones as the runner sends them; ends with
    an `end` event once the order is terminal. `Last-Event-ID` is the last seq received."""
    order = await orders.get_order(ctx.db, str(order_id))
    if not principal.can_see_server(str(order["server_id"])):
        raise NotFound("no order with this id", reason="order_not_found", orderId=str(order_id))
    resumed = resume_point(last_event_id, None)
    fanout = fanout_of(request)
    return stream_response(
        _log_frames(
            ctx,
            fanout,
            str(order_id),
            after_seq if resumed is None else resumed,
            credential_check(ctx, request),
        ),
        heartbeat=ctx.settings.sse_heartbeat_seconds,
    )


async def _log_frames(
    ctx: Context,
    fanout: EventFanout,
    order_id: str,
    after_seq: int,
    still_allowed: Callable[[], Awaitable[bool]],
) -> AsyncGenerator[bytes, None]:
    yield retry_frame()
    loop = asyncio.get_running_loop()
    checked = loop.time()
    with fanout.track():
        while True:
            if loop.time() - checked >= fanout.recheck_interval:
                if not await still_allowed():
                    return
                checked = loop.time()
            # held until new chunks arrive or the order ends (wake-ups on the order's log key, 1 s poll)
            page = await logs.read_logs(
                ctx.db,
                ctx.wakeups,
                order_id=order_id,
                after_seq=after_seq,
                limit=LOG_PAGE,
                wait=min(logs.MAX_WAIT_SECONDS, fanout.recheck_interval),
            )
            for chunk in page["items"]:
                after_seq = int(chunk["seq"])
                line = {"seq": after_seq, "stream": str(chunk["stream"]), "data": str(chunk["data"])}
                yield frame(after_seq, "log", {**line, "at": chunk["at"]})
            if page["done"]:
                order = await orders.get_order(ctx.db, order_id)
                yield frame(None, LOG_END, {"status": order["status"], "truncated": page["truncated"]})
                return
