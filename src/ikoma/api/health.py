"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.responses import Response

from ikoma import __version__
from ikoma.api.deps import Ctx
from ikoma.api.errors import json_response
from ikoma.services import orders, runners

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, Any]:
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> Response:
    """Readiness: the database answers and its schema is at the migrations head."""
    try:
        async with ctx.db.read() as tx:
            current = (await tx.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except Exception as exc:  # any failure here means "not ready", with its kind
        return json_response({"status": "unavailable", "database": "error", "error": type(exc).__name__}, 503)
    if current != ctx.head_revision:
        return json_response(
            {
                "status": "unavailable",
                "database": "ok",
                "migrations": "behind",
                "current": current,
                "head": ctx.head_revision,
            },
            503,
        )
    return json_response({"status": "ready", "database": "ok", "migrations": "current"})


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    by_status = await orders.count_by_status(ctx.db)
    online = await runners.count_online(ctx.db, stale_after=ctx.settings.stale_after)
    ctx.metrics.set_snapshot(by_status, online)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
