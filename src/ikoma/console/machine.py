"""The machine page (`/machines/{id}`): state, hardware, 24 h charts, live timeline, important messages,
reports, raw logs, schedules and the orders queued or running, for one server.

Every section is read through the services the API uses (and shaped by the API's wire helpers), within
the caller's server scope: a server outside it is "not found", as in the API. The page is rendered in
one pass; the timeline then goes live from `/v1/events/stream?serverId=...&after=<last event id>`, so
no event between the render and the subscription is lost.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from ikoma.api import state as state_wire
from ikoma.api.deps import Ctx
from ikoma.bootstrap import Context
from ikoma.console.rendering import page, principal_of
from ikoma.domain.errors import NotFound
from ikoma.domain.event_kinds import KINDS
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.machine_state import utc
from ikoma.services import (
    events,
    fleet,
    messages,
    metrics_history,
    orders,
    reports,
    schedules,
    state,
    timeline,
)
from ikoma.storage.database import Database
from ikoma.storage.tables import artifacts
from ikoma.storage.tables import orders as orders_table

router = APIRouter(include_in_schema=False)

CHART_STEP_SECONDS = 300  # 24 h in 288 points: enough for a 1280 px chart, light to embed
TIMELINE_ITEMS = 50
REPORTS_LISTED = 10
REPORTS_RENDERED = 3
RAW_LOGS_LISTED = 20
PENDING = (OrderStatus.QUEUED, OrderStatus.CLAIMED, OrderStatus.RUNNING)
CHARTS = (
    ("load1", "CPU load (1 min)", ""),
    ("memory_used_percent", "Memory used", "%"),
    ("root_used_percent", "Root disk used", "%"),
)


def chart_series(metrics: dict[str, Any]) -> dict[str, Any]:
    """Columns as uPlot takes them: `t` in epoch seconds, one list per metric (None: a gap), and the
    window shown (`from`, `to`), so a few points are drawn where they fall in the 24 h."""
    points: list[dict[str, Any]] = metrics["points"]
    series: dict[str, Any] = {
        "from": int(utc(metrics["from_"]).timestamp()),
        "to": int(utc(metrics["to"]).timestamp()),
        "t": [int(utc(p["at"]).timestamp()) for p in points],
    }
    for key, _, _ in CHARTS:
        series[key] = [p.get(key) for p in points]
    return series


async def raw_logs(db: Database, server_id: str) -> list[dict[str, Any]]:
    """The server's raw order logs still kept (newest first), with their order's playbook and status."""
    query = (
        select(
            artifacts.c.id,
            artifacts.c.order_id,
            artifacts.c.bytes,
            artifacts.c.retention_policy,
            artifacts.c.created_at,
            artifacts.c.expires_at,
            orders_table.c.playbook_key,
            orders_table.c.status,
        )
        .select_from(artifacts.join(orders_table, orders_table.c.id == artifacts.c.order_id))
        .where(artifacts.c.server_id == server_id, artifacts.c.deleted_at.is_(None))
        .order_by(artifacts.c.created_at.desc(), artifacts.c.id.desc())
        .limit(RAW_LOGS_LISTED)
    )
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(query)).mappings()]


async def pending_orders(db: Database, server_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for status in PENDING:
        page_of, _ = await orders.list_orders(db, status=status, server_id=server_id, limit=50)
        found.extend(page_of)
    return sorted(found, key=lambda o: o["created_at"])


async def machine_view(ctx: Context, server_id: str) -> dict[str, Any]:
    """Everything the page shows, read through the services (NotFound when there is no such server)."""
    db = ctx.db
    view = await state.get_state(db, server_id, stale_after=ctx.settings.stale_after)
    try:
        hardware: dict[str, Any] | None = await state.get_hardware(db, server_id)
    except NotFound:
        hardware = None  # no facts collected yet: the section says so
    metrics = await metrics_history.series(db, server_id, start=None, end=None, step=CHART_STEP_SECONDS)
    entries, _ = await timeline.list_timeline(db, server_id, limit=TIMELINE_ITEMS)
    listed, _ = await reports.list_reports(db, server_id, limit=REPORTS_LISTED)
    rendered = [await reports.get_report(db, str(r["id"])) for r in listed[:REPORTS_RENDERED]]
    async with db.read() as tx:
        last_event_id = await events.last_id(tx)
    shown_messages = [state_wire._message_wire(m) for m in await messages.list_messages(db, server_id)]
    return {
        "view": view,
        "state": state_wire._state_wire(view),
        "hardware": hardware,
        "metrics": metrics,
        "series": chart_series(metrics),
        "timeline": entries,
        "messages": shown_messages,
        "attention": fleet.attention(view, sum(1 for m in shown_messages if m["new"])),
        "reports": listed,
        "rendered_reports": rendered,
        "raw_logs": await raw_logs(db, server_id),
        "schedules": await schedules.list_schedules(db, server_id),
        "orders": await pending_orders(db, server_id),
        "stream_url": f"/v1/events/stream?serverId={server_id}&after={last_event_id}",
        "event_kinds": list(KINDS),
    }


@router.get("/machines/{server_id}")
async def machine_page(request: Request, server_id: uuid.UUID, ctx: Ctx) -> Response:
    principal = principal_of(request)
    try:
        if principal is None or not principal.can_see_server(str(server_id)):
            raise NotFound("no server with this id", reason="server_not_found", serverId=str(server_id))
        found = await machine_view(ctx, str(server_id))
    except NotFound:
        return page(request, "not_found.html", {"what": "server", "back": "/"}, status_code=404)
    return page(request, "machine.html", {**found, "charts": CHARTS, "server_id": str(server_id)})
