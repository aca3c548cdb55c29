"""What a webhook sends next: its oldest pending delivery (a retry or a redelivery) when it is due, else
the next event past its cursor that passes its filter, for which a pending delivery is created while
the cursor moves past it, in the same transaction. A pending delivery that is not due yet holds back
everything after it: events go out in id order.

The webhook's lease (`webhooks.lease_until`) is taken in the same transaction and kept for the HTTP
call that follows (services/webhook_delivery.py releases it when it records the outcome), so one
process at a time sends a webhook's deliveries.
"""

from __future__ import annotations

import uuid
from typing import Literal

import orjson
from sqlalchemy import insert, or_, select, update

from ikoma.services import events
from ikoma.services.vault import Vault
from ikoma.services.webhook_http import Job
from ikoma.services.webhooks import read_kinds
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import servers, webhook_deliveries, webhooks

PAGE = 200  # events read per look at a webhook's filter
MAX_PAGES = 10  # per transaction: a filter that matches little must not hold the database long
Wait = Literal["wait"]
WAIT: Wait = "wait"


async def next_job(db: Database, vault: Vault, webhook_id: str, *, lease_s: float) -> Job | None:
    """Lease the webhook and return its next delivery to attempt, or None (nothing due, disabled,
    deleted, or leased by another process). Released again when there is nothing to send."""
    async with db.write() as tx:
        leased = await tx.execute(
            update(webhooks)
            .where(
                webhooks.c.id == webhook_id,
                webhooks.c.enabled.is_(True),
                or_(webhooks.c.lease_until.is_(None), webhooks.c.lease_until < db_now()),
            )
            .values(lease_until=db_now(lease_s))
        )
        if not getattr(leased, "rowcount", 0):
            return None  # disabled, deleted, or another process is delivering it
        pending = await _pending_job(tx, vault, webhook_id)
        job = await _new_job(tx, vault, webhook_id) if pending is None else pending
        if job == WAIT or job is None:
            await _release(tx, webhook_id)
            return None
        return job


async def _pending_job(tx: Tx, vault: Vault, webhook_id: str) -> Job | Wait | None:
    """The oldest pending delivery if it is due, WAIT if it is not (nothing may go before it), None
    if there is none; deliveries of events no longer kept fail here."""
    while True:
        row = (
            (
                await tx.execute(
                    select(
                        webhook_deliveries,
                        (webhook_deliveries.c.next_attempt_at <= db_now()).label("due"),
                    )
                    .where(
                        webhook_deliveries.c.webhook_id == webhook_id,
                        webhook_deliveries.c.status == "pending",
                    )
                    .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
                    .limit(1)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        if not row["due"]:
            return WAIT
        found = await events.read(tx, after=int(row["event_id"]) - 1, limit=1)
        if found and found[0].id == row["event_id"]:
            return await _job(tx, vault, webhook_id, str(row["id"]), found[0])
        await tx.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.id == row["id"])
            .values(status="failed", failed_at=db_now(), next_attempt_at=None, error="event no longer kept")
        )


async def _new_job(tx: Tx, vault: Vault, webhook_id: str) -> Job | None:
    """A delivery of the next event past the cursor that passes the filter; the cursor moves on."""
    hook = (await tx.execute(select(webhooks).where(webhooks.c.id == webhook_id))).mappings().one()
    cursor = int(hook["last_event_id"])
    scope = set(hook["server_ids"]) if hook["server_ids"] is not None else None
    for _ in range(MAX_PAGES):
        page = await events.read(
            tx, after=cursor, limit=PAGE, kinds=read_kinds(hook["kinds"]), server_ids=scope
        )
        if not page:
            break
        labels = await _labels_of(tx, {e.server_id for e in page if e.server_id}) if hook["labels"] else {}
        for event in page:
            cursor = event.id
            if hook["labels"] and not _carries(labels.get(event.server_id or ""), hook["labels"]):
                continue
            delivery_id = str(uuid.uuid4())
            await tx.execute(
                insert(webhook_deliveries).values(
                    id=delivery_id,
                    webhook_id=webhook_id,
                    event_id=event.id,
                    kind=event.kind,
                    status="pending",
                    attempts=0,
                    next_attempt_at=db_now(),
                )
            )
            await _move_cursor(tx, webhook_id, cursor)
            return await _job(tx, vault, webhook_id, delivery_id, event)
        if len(page) < PAGE:
            break
    await _move_cursor(tx, webhook_id, cursor)
    return None


async def _job(tx: Tx, vault: Vault, webhook_id: str, delivery_id: str, event: events.Event) -> Job:
    hook = (
        await tx.execute(select(webhooks.c.url, webhooks.c.secret).where(webhooks.c.id == webhook_id))
    ).one()
    return Job(
        delivery_id=delivery_id,
        webhook_id=webhook_id,
        url=hook.url,
        secret=vault.unseal(hook.secret),
        kind=event.kind,
        body=orjson.dumps(event.to_json()),
    )


async def _release(tx: Tx, webhook_id: str) -> None:
    await tx.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(lease_until=None))


async def _move_cursor(tx: Tx, webhook_id: str, cursor: int) -> None:
    await tx.execute(
        update(webhooks)
        .where(webhooks.c.id == webhook_id, webhooks.c.last_event_id < cursor)
        .values(last_event_id=cursor)
    )


async def _labels_of(tx: Tx, server_ids: set[str]) -> dict[str, dict[str, str]]:
    if not server_ids:
        return {}
    rows = await tx.execute(
        select(servers.c.id, servers.c.labels).where(servers.c.id.in_(sorted(server_ids)))
    )
    return {str(r.id): dict(r.labels or {}) for r in rows}


def _carries(labels: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    return labels is not None and all(labels.get(k) == v for k, v in wanted.items())
