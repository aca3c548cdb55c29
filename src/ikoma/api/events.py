"""`GET /v1/events`: the event log a page at a time, oldest first, from a cursor (services/events.py).

A caller pages with `after=<next>` until a page comes back empty, then polls (or follows the SSE stream,
api/event_stream.py, from the same id). What it sees is cut to its server scope.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Security
from pydantic import BaseModel, Field

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.services import events

router = APIRouter(prefix="/v1", tags=["events"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the caller's role does not allow this"},
    404: {"description": "serverId names a server outside the caller's scope"},
}
MAX_ID = 2**63 - 1
MAX_KINDS = 20
# a kind or a prefix of one: `order`, `order.`, `order.failed`, `api_client.created`
KIND_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.?$"


class EventPublic(BaseModel):
    """One event: what happened (`kind`, `topic` = its part before the first dot), when (`ts`, the
    database clock), to what (`serverId`, `orderId`, `runnerId`), by whom (`actor`), and a small
    `data` object (per kind, docs/api.md), never a secret nor an order's params."""

    id: int = Field(description="monotonic: the cursor (`after`, `Last-Event-ID`)")
    ts: str = Field(description="ISO 8601, UTC")
    kind: str = Field(examples=["order.succeeded"])
    topic: str = Field(examples=["order"])
    server_id: str | None = Field(alias="serverId")
    order_id: str | None = Field(alias="orderId")
    runner_id: str | None = Field(alias="runnerId")
    actor: str | None = Field(description="`admin`, `api_client:<id>`, `runner:<id>`, `reconciler`, …")
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[EventPublic]
    next: int = Field(description="the last id returned, or `after` when none: pass it as `after`")


@router.get("/events", response_model=EventPage, response_model_by_alias=True, responses=ERRORS)
async def list_events(
    ctx: Ctx,
    principal: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[
        list[Annotated[str, Query(min_length=1, max_length=64, pattern=KIND_PATTERN)]] | None,
        Query(
            max_length=MAX_KINDS,
            description="a kind or a prefix (`order`, `order.failed`); repeat for any of several",
        ),
    ] = None,
    server_id: Annotated[uuid.UUID | None, Query(alias="serverId")] = None,
    order_id: Annotated[uuid.UUID | None, Query(alias="orderId")] = None,
) -> Any:
    """Events after `after`, oldest first. A client scoped to servers sees only their events (none
    about no server); `serverId` outside its scope is 404 server_not_found."""
    scope = principal.server_ids
    if server_id is not None:
        principal.require_server(str(server_id))
        scope = frozenset({str(server_id)})
    async with ctx.db.read() as tx:
        found = await events.read(
            tx,
            after=after,
            limit=limit,
            kinds=kind,
            server_ids=scope,
            order_id=None if order_id is None else str(order_id),
        )
    return {"events": [e.to_json() for e in found], "next": found[-1].id if found else after}
