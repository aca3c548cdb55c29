"""Liveness, readiness and Prometheus metrics (the root `/` is the console's fleet overview)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
import structlog
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import text
from starlette.responses import Response

from ikoma import __version__
from ikoma.api.deps import Ctx
from ikoma.api.errors import json_response
from ikoma.services import orders, runners

router = APIRouter()
log = structlog.get_logger("ikoma.server")


class Readiness(BaseModel):
    """What /readyz answers, ready (200) or not (503)."""

    status: Literal["ready", "unavailable"]
    database: Literal["ok", "error"]
    migrations: Literal["current", "behind"] | None = None
    current: str | None = None
    head: str | None = None
    error: str | None = None


READY_POLL_SECONDS = 0.1
READY_PATIENCE_SECONDS = 60.0


@router.get("/health")
async def health() -> dict[str, Any]:
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    responses={
        200: {"model": Readiness, "description": "ready"},
        503: {"model": Readiness, "description": "the database does not answer, or its schema is behind"},
    },
)
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


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},  # Prometheus text
)
async def metrics(ctx: Ctx) -> Response:
    by_status = await orders.count_by_status(ctx.db)
    online = await runners.count_online(ctx.db, stale_after=ctx.settings.stale_after)
    ctx.metrics.set_snapshot(by_status, online)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def announce_when_ready(url: str, line: str, *, patience: float = READY_PATIENCE_SECONDS) -> bool:
    """Print `line` once `<url>/readyz` answers 200 from outside, i.e. once the server really listens.

    Uvicorn binds its socket only after the lifespan's start-up, so the start-up itself cannot say so;
    this runs beside it. Past `patience` it logs why instead and returns False.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    last = "no answer yet"
    async with httpx.AsyncClient(timeout=2.0) as client:
        while loop.time() < deadline:
            try:
                response = await client.get(f"{url}/readyz")
                if response.status_code == 200:
                    print(line, flush=True)
                    return True
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(READY_POLL_SECONDS)
    log.warning("not ready", url=f"{url}/readyz", waited_seconds=patience, last=last)
    return False
