"""Rendered reports: one per completed order attempt, Markdown with summary and steps."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select

from ikoma.domain.errors import NotFound
from ikoma.domain.report_markdown import render
from ikoma.services.orders import newest_first_page
from ikoma.storage.database import Database, Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import reports

LISTED = [c for c in reports.c if c.name != "markdown"]
# built once: values go as parameters (cheaper than building the statement per completion)
_INSERT = Prepared(insert(reports).returning(*LISTED))


async def record(
    tx: Tx,
    order: dict[str, Any],
    *,
    server_name: str,
    important: list[dict[str, Any]],
    artifact: dict[str, Any] | None,
) -> dict[str, Any]:
    rendered = render(order, server_name=server_name, important=important, artifact=artifact)
    values = {
        "id": str(uuid.uuid4()),
        "server_id": order["server_id"],
        "order_id": order["id"],
        "attempt": order["attempt"],
        "playbook_key": order["playbook_key"],
        "status": order["status"],
        "title": rendered.title,
        "summary": rendered.summary,
        "markdown": rendered.markdown,
        "artifact_id": artifact["id"] if artifact else None,
    }
    row = (await tx.execute(_INSERT, values)).mappings().one()
    return dict(row)


async def get_report(db: Database, report_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        row = (await tx.execute(select(reports).where(reports.c.id == report_id))).mappings().first()
    if row is None:
        raise NotFound("no report with this id", reason="report_not_found", reportId=report_id)
    return dict(row)


async def list_reports(
    db: Database,
    server_id: str,
    *,
    playbook_key: str | None = None,
    order_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first, without the Markdown (GET /v1/reports/:id has it)."""
    query = select(*LISTED).where(reports.c.server_id == server_id)
    if playbook_key is not None:
        query = query.where(reports.c.playbook_key == playbook_key)
    if order_id is not None:
        query = query.where(reports.c.order_id == order_id)
    return await newest_first_page(db, query, reports, limit=limit, cursor=cursor)
