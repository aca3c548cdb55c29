"""The orders pages: `/orders` (newest first, filtered by status, server and playbook, a page at a time)
and `/orders/{id}` (status, params, events, attempts, report, live log).

Read through the services `GET /v1/orders*` uses, within the caller's server scope (an order of a
server outside it is "not found", as in the API). The order page goes live from two streams
(static/orders.js): its status and events from `/v1/events/stream?orderId=...&after=<last event id
read before the order>` — an event committed between the render and the subscription is never lost —
and its log from `/v1/orders/{id}/logs/stream`, which sends the stored chunks first.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.rendering import page, principal_of
from ikoma.domain.errors import DomainError, NotFound
from ikoma.domain.event_kinds import ORDER_KINDS
from ikoma.domain.lifecycle import TERMINAL, OrderStatus
from ikoma.domain.roles import Role
from ikoma.domain.secret_params import redact_params
from ikoma.services import events, orders, playbooks, servers, waiting
from ikoma.services.identity import Principal
from ikoma.storage.database import Database
from ikoma.storage.tables import reports

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
StatusFilter = Literal[
    "", "QUEUED", "CLAIMED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"
]
STATUSES = ("QUEUED", "CLAIMED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE")
TERMINAL_NAMES = sorted(s.value for s in TERMINAL)
# how a status is shown: its badge's colour
STATUS_BADGE = {
    "SUCCEEDED": "ok",
    "RUNNING": "warning",
    "CLAIMED": "warning",
    "QUEUED": "unknown",
    "FAILED": "error",
    "TIMEOUT": "error",
    "STALE": "error",
    "CANCELLED": "unknown",
}


def _visible(principal: Principal | None, server_id: str) -> bool:
    return principal is None or principal.can_see_server(server_id)


async def _server_names(db: Database, principal: Principal | None) -> dict[str, str]:
    return {
        str(s["id"]): str(s["name"])
        for s in await servers.list_servers(db)
        if _visible(principal, str(s["id"]))
    }


@router.get("/orders")
async def orders_page(
    request: Request,
    ctx: Ctx,
    status: Annotated[StatusFilter, Query()] = "",
    server: Annotated[str, Query(max_length=100, description="a server id")] = "",
    playbook: Annotated[str, Query(max_length=200, description="a playbook key")] = "",
    cursor: Annotated[str, Query(max_length=500)] = "",
) -> Response:
    principal = principal_of(request)
    names = await _server_names(ctx.db, principal)
    error = None
    items: list[dict[str, Any]] = []
    next_cursor = None
    server_id = server if server in names else None
    if not server and principal is not None and principal.server_ids is not None and len(names) == 1:
        server_id = next(iter(names))  # a caller scoped to one server lists its orders, as the API does
    if server and server_id is None:
        error = "No such server (or it is outside what you may see)."
    elif server_id is None and principal is not None and principal.server_ids is not None:
        # a scoped caller lists its servers one at a time, as `GET /v1/orders` asks of it
        error = "Choose a server: you may see several, and orders are listed one server at a time."
    else:
        try:
            items, next_cursor = await orders.list_orders(
                ctx.db,
                status=OrderStatus(status) if status else None,
                server_id=server_id,
                playbook_key=playbook or None,
                limit=PAGE_SIZE,
                cursor=cursor or None,
            )
        except DomainError as refusal:
            error = refusal.message
    catalog = [str(p["key"]) for p in await playbooks.list_playbooks(ctx.db)]
    return page(
        request,
        "orders.html",
        {
            "items": items,
            "next_cursor": next_cursor,
            "server_names": names,
            "statuses": STATUSES,
            "status_badge": STATUS_BADGE,
            "catalog": catalog,
            "status": status,
            "server": server,
            "playbook": playbook,
            "cursor": cursor,
            "error": error,
            "filtered": bool(status or server or playbook),
        },
    )


async def latest_report(db: Database, order_id: str) -> dict[str, Any] | None:
    """The report of the order's last completed attempt (Markdown), if any."""
    async with db.read() as tx:
        row = (
            (
                await tx.execute(
                    select(reports)
                    .where(reports.c.order_id == order_id)
                    .order_by(reports.c.attempt.desc(), reports.c.created_at.desc())
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


@router.get("/orders/{order_id}")
async def order_page(request: Request, ctx: Ctx, order_id: uuid.UUID) -> Response:
    principal = principal_of(request)
    # the event log's head first: whatever happens to the order after it is read comes by the stream
    async with ctx.db.read() as tx:
        after = await events.last_id(tx)
    try:
        order = await orders.get_order(ctx.db, str(order_id))
    except NotFound:
        order = None
    if order is None or not _visible(principal, str(order["server_id"])):
        return page(request, "not_found.html", {"what": "order", "back": "/orders"}, status_code=404)
    history = await orders.list_events(ctx.db, str(order_id))
    report = await latest_report(ctx.db, str(order_id))
    # why a queued or claimed order is not running yet (as `waitingFor` in GET /v1/orders/{id})
    waits = await waiting.waiting_for(ctx.db, [order], stale_after=ctx.settings.stale_after)
    try:
        server = await servers.get_server(ctx.db, str(order["server_id"]))
    except NotFound:
        server = None
    status = str(order["status"])
    role = principal.role if principal is not None else Role.OBSERVER
    return page(
        request,
        "order.html",
        {
            "order": order,
            # secret params as the API shows them: the placeholder, never the value
            "params_json": json.dumps(redact_params(order["params"]) or {}, indent=2, default=str),
            "events": history,
            "attempts": order["attempts"],
            "report": report,
            "waiting_for": waits.get(str(order["id"])),
            "server": server,
            "status": status,
            "status_badge": STATUS_BADGE,
            "terminal": OrderStatus(status).is_terminal,
            "terminal_names": TERMINAL_NAMES,
            "order_kinds": list(ORDER_KINDS),
            "after": after,
            # "Run again" opens the run form with this server and playbook; the API checks the role
            "can_run_again": role > Role.OBSERVER,
        },
    )
