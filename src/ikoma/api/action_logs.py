"""`GET /action_logs` and `GET /action_logs/search` (seed 002): the audit log as the console searches it.

Admin only, as `GET /v1/audit` (api/policy.py): entries name who did what to which machine, and their
refusals. Parsing only here; the queries are services/action_logs.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from ikoma.api.deps import Ctx
from ikoma.api.query_times import utc
from ikoma.services import action_logs
from ikoma.services.action_logs import Channel, Filters, Outcome

router = APIRouter(tags=["audit"])


def filters(
    actor: Annotated[
        str | None,
        Query(
            max_length=100,
            description="an actor id, a token prefix, `admin`, or `kind:id` (`user:<id>`, `api_client:<id>`)",
        ),
    ] = None,
    action: Annotated[
        str | None,
        Query(max_length=200, description="prefix: `POST /v1/orders`, `execute:`, `mcp:deploy.`"),
    ] = None,
    target: Annotated[
        str | None, Query(max_length=300, description="prefix of the target, e.g. `/v1/servers/<id>`")
    ] = None,
    outcome: Outcome | None = None,
    channel: Channel | None = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="entries at or after this time (ISO 8601)")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="entries before this time (ISO 8601)")
    ] = None,
) -> Filters:
    return Filters(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        channel=channel,
        since=utc(since, "from"),
        until=utc(until, "to"),
    )


ActionLogFilters = Annotated[Filters, Depends(filters)]


@router.get("/action_logs")
async def list_action_logs(
    ctx: Ctx, where: ActionLogFilters, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """`{items}`: the newest `limit` entries that match, newest first."""
    return {"items": await action_logs.list_entries(ctx.db, where, limit=limit)}


@router.get("/action_logs/search")
async def search_action_logs(
    ctx: Ctx,
    where: ActionLogFilters,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=100, description="`nextCursor` of the page before")
    ] = None,
    stats: Annotated[
        bool, Query(description="count by action and outcome (false: skip, `stats` null)")
    ] = True,
) -> dict[str, Any]:
    """`{items, nextCursor, stats}`: a page newest first (pass `nextCursor` back as `cursor` for the
    older one; null on the last page) and `stats` = `{total, byOutcome, byAction, otherActions}` over
    every entry that matches the filters."""
    return await action_logs.search(ctx.db, where, cursor=cursor, limit=limit, stats=stats)
