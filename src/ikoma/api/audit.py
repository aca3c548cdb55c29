"""`GET /v1/audit`: the audit log, newest first, filtered, a page at a time (admin only, see policy)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ikoma.api.deps import Ctx
from ikoma.api.query_times import utc
from ikoma.services import audit

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit")
async def list_audit(
    ctx: Ctx,
    actor: Annotated[
        str | None, Query(max_length=100, description="an actor id (API client id, admin) or token prefix")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=200, description="prefix: `execute:`, `mcp:deploy.`, `POST /v1/`")
    ] = None,
    outcome: Literal["allowed", "denied", "error"] | None = None,
    target: Annotated[
        str | None, Query(max_length=300, description="exact target, e.g. `web-1/myapp`")
    ] = None,
    since: Annotated[datetime | None, Query(description="entries at or after this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="entries before this time (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """`{items, nextCursor}`: pass `nextCursor` back as `cursor` for the next (older) page."""
    return await audit.list_entries(
        ctx.db,
        actor=actor,
        action=action,
        outcome=outcome,
        target=target,
        since=utc(since, "since"),
        until=utc(until, "until"),
        cursor=cursor,
        limit=limit,
    )
