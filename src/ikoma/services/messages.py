"""Important messages: recorded once per fingerprint, counted, acknowledged, new again when they return."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from ikoma.domain.errors import NotFound
from ikoma.domain.important import Message, fingerprint
from ikoma.domain.machine_state import iso, utc
from ikoma.services import events, timeline
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import important_messages

_NOW = select(db_now())
MESSAGE_CHARS = 300  # an event stays small: the full text is one GET away


async def record(tx: Tx, *, server_id: str, order_id: str, messages: list[Message]) -> list[str]:
    """Insert new messages, count known ones; a known one acknowledged before is new again.

    Each message that is (again) new is a `message.created` event; returns their ids. The caller holds
    the server's state lock, so two completions of one server never race on the same fingerprint.
    """
    if not messages:
        return []
    prints = {fingerprint(server_id, m.source, m.category, m.message): m for m in messages}
    known = {
        r.fingerprint: r
        for r in await tx.execute(
            select(
                important_messages.c.id, important_messages.c.fingerprint, important_messages.c.acknowledged
            ).where(
                important_messages.c.server_id == server_id,
                important_messages.c.fingerprint.in_(sorted(prints)),
            )
        )
    }
    renewed: list[str] = []
    fresh: list[dict[str, Any]] = []
    for digest, message in prints.items():
        row = known.get(digest)
        if row is None:
            message_id = str(uuid.uuid4())
            fresh.append(
                {
                    "id": message_id,
                    "server_id": server_id,
                    "fingerprint": digest,
                    "source": message.source,
                    "category": message.category,
                    "severity": message.severity,
                    "message": message.message,
                    "package_name": message.package_name,
                    "count": 1,
                    "first_seen_at": db_now(),
                    "last_seen_at": db_now(),
                    "last_order_id": order_id,
                    "acknowledged": False,
                    "acks": [],
                }
            )
            renewed.append(message_id)
            _created(tx, server_id, order_id, message_id, message, again=False)
            continue
        # the text shown is the latest wording (numbers differ from run to run, the fingerprint not)
        await tx.execute(
            update(important_messages)
            .where(important_messages.c.id == row.id)
            .values(
                count=important_messages.c.count + 1,
                last_seen_at=db_now(),
                last_order_id=order_id,
                message=message.message,
                severity=message.severity,
                acknowledged=False,
            )
        )
        if row.acknowledged:
            renewed.append(str(row.id))
            _created(tx, server_id, order_id, str(row.id), message, again=True)
    for values in fresh:
        await tx.execute(insert(important_messages).values(values))
    return renewed


def _created(
    tx: Tx, server_id: str, order_id: str, message_id: str, message: Message, *, again: bool
) -> None:
    events.publish(
        tx,
        "message.created",
        server_id=server_id,
        order_id=order_id,
        data={
            "messageId": message_id,
            "source": message.source,
            "category": message.category,
            "severity": message.severity,
            "message": message.message[:MESSAGE_CHARS],
            "again": again,  # acknowledged before, back again
        },
    )


async def list_messages(
    db: Database, server_id: str, *, only_new: bool = False, limit: int = 200
) -> list[dict[str, Any]]:
    """New (unacknowledged) first, then by last sighting, newest first."""
    query = select(important_messages).where(important_messages.c.server_id == server_id)
    if only_new:
        query = query.where(important_messages.c.acknowledged.is_(False))
    query = query.order_by(
        important_messages.c.acknowledged, important_messages.c.last_seen_at.desc(), important_messages.c.id
    ).limit(limit)
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(query)).mappings()]


async def acknowledge(db: Database, server_id: str, message_id: str, *, actor: str) -> dict[str, Any]:
    """Mark a message seen by `actor`; its acknowledgements are kept, with who and when."""
    async with db.write() as tx:
        row = (
            (
                await tx.execute(
                    select(important_messages).where(
                        important_messages.c.id == message_id, important_messages.c.server_id == server_id
                    )
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(
                "no important message with this id on this server",
                reason="message_not_found",
                messageId=message_id,
            )
        if row["acknowledged"]:
            return dict(row)  # acknowledging twice changes nothing
        # one reading of the clock for both: the acknowledgement and its entry in `acks` agree exactly
        now = _as_utc((await tx.execute(_NOW)).scalar_one())
        acks = [*(row["acks"] or []), {"by": actor, "at": iso(now)}]
        await tx.execute(
            update(important_messages)
            .where(important_messages.c.id == message_id)
            .values(acknowledged=True, acknowledged_at=now, acknowledged_by=actor, acks=acks)
        )
        await timeline.add_event(
            tx,
            server_id=server_id,
            type="message.acknowledged",
            severity="info",
            message=f"acknowledged: {row['message'][:200]}",
            actor=actor,
            details={"messageId": message_id, "category": row["category"]},
        )
        events.publish(
            tx,
            "message.acknowledged",
            server_id=server_id,
            actor=actor,
            data={"messageId": message_id, "category": row["category"]},
        )
        updated = (
            (await tx.execute(select(important_messages).where(important_messages.c.id == message_id)))
            .mappings()
            .one()
        )
        return dict(updated)


def _as_utc(value: Any) -> datetime:
    """The database clock's answer as an aware UTC datetime (SQLite answers it as text)."""
    return utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


async def count_new(tx: Tx, server_ids: list[str]) -> dict[str, int]:
    """Unacknowledged messages per server."""
    rows = await tx.execute(
        select(important_messages.c.server_id, func.count().label("n"))
        .where(important_messages.c.server_id.in_(server_ids), important_messages.c.acknowledged.is_(False))
        .group_by(important_messages.c.server_id)
    )
    return {str(r.server_id): int(r.n) for r in rows}
