"""A server's metrics over time: the points ingestion recorded, optionally averaged per step."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ikoma.domain.errors import Invalid
from ikoma.domain.machine_state import utc
from ikoma.services.state import require_server
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import machine_metrics

DEFAULT_WINDOW = timedelta(hours=24)
MAX_POINTS = 5000
COLUMNS = ("load1", "load5", "memory_used_percent", "root_used_percent")


async def series(
    db: Database,
    server_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    step: int | None,
) -> dict[str, Any]:
    """Points in [start, end] (default: the last 24 h by the database clock), oldest first.

    With `step` (seconds), points are averaged per step-long bucket, weighted by how many samples
    each point already stands for (hourly points after downsampling).
    """
    async with db.read() as tx:
        await require_server(tx, server_id)
        if end is None or start is None:
            now = utc((await tx.execute(select(db_now()))).scalar_one())
        until = utc(end) if end is not None else now
        since = utc(start) if start is not None else until - DEFAULT_WINDOW
        if since > until:
            raise Invalid("from is after to", field="from")
        rows = await tx.execute(
            select(machine_metrics)
            .where(
                machine_metrics.c.server_id == server_id,
                machine_metrics.c.at >= since,
                machine_metrics.c.at <= until,
            )
            .order_by(machine_metrics.c.at, machine_metrics.c.id)
            .limit(MAX_POINTS)
        )
        points = [dict(r) for r in rows.mappings()]
    if step:
        points = _bucketed(points, since, step)
    return {"server_id": server_id, "from_": since, "to": until, "step": step, "points": points}


def _bucketed(points: list[dict[str, Any]], start: datetime, step: int) -> list[dict[str, Any]]:
    buckets: dict[int, list[dict[str, Any]]] = {}
    for point in points:
        index = int((utc(point["at"]) - start).total_seconds() // step)
        buckets.setdefault(index, []).append(point)
    out = []
    for index in sorted(buckets):
        group = buckets[index]
        merged: dict[str, Any] = {
            "at": start + timedelta(seconds=index * step),
            "samples": sum(int(p["samples"]) for p in group),
        }
        for column in COLUMNS:
            weighted = [(p[column], int(p["samples"])) for p in group if p[column] is not None]
            total = sum(w for _, w in weighted)
            merged[column] = round(sum(v * w for v, w in weighted) / total, 3) if total else None
        out.append(merged)
    return out
