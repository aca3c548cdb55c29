"""A server's timeline: its own events (runner online/offline, attach/detach, acknowledgements, state
changes) and the transitions of its orders, read together newest first.

Order transitions are not copied into `machine_events`: every transition already has an `order_events`
row, so the timeline reads them through a UNION with `order_events` joined to `orders` by server. The
completion path stays as lean as it was (no second insert per transition) and there is one history of
each order, not two that could disagree; the price is a join on read, served by the orders index on
(server_id, …) and the order_events index on (order_id, id).
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    case,
    cast,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)

from ikoma.domain.errors import Invalid
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import events
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import machine_events, order_events, orders, runner_presence, runners, servers

SEVERITIES = ("info", "warning", "error")
_INSERT_EVENT = insert(machine_events)
_ERRORS = [OrderStatus.FAILED.value, OrderStatus.TIMEOUT.value, OrderStatus.STALE.value]


async def add_event(
    tx: Tx,
    *,
    server_id: str,
    type: str,
    severity: str,
    message: str,
    actor: str,
    order_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await tx.execute(
        _INSERT_EVENT,
        {
            "server_id": server_id,
            "type": type,
            "severity": severity,
            "message": message,
            "actor": actor,
            "order_id": order_id,
            "details": details,
        },
    )


def _order_type() -> Any:
    return case(
        (order_events.c.reason == "cancel_requested", literal("order.cancel_requested")),
        else_=literal("order.") + func.lower(order_events.c.to_status),
    )


def _order_severity() -> Any:
    return case(
        (order_events.c.to_status.in_(_ERRORS), literal("error")),
        (order_events.c.to_status == OrderStatus.CANCELLED.value, literal("warning")),
        (order_events.c.reason == "cancel_requested", literal("warning")),
        else_=literal("info"),
    )


def _sources(server_id: str) -> Any:
    own = select(
        machine_events.c.at.label("at"),
        literal("event").label("source"),
        cast(machine_events.c.id, BigInteger).label("id"),
        machine_events.c.type.label("type"),
        machine_events.c.severity.label("severity"),
        machine_events.c.message.label("message"),
        machine_events.c.actor.label("actor"),
        cast(machine_events.c.order_id, String).label("order_id"),
        cast(null(), String).label("playbook_key"),
        cast(null(), String).label("from_status"),
        cast(null(), String).label("to_status"),
        cast(null(), String).label("reason"),
        machine_events.c.details.label("details"),
    ).where(machine_events.c.server_id == server_id)
    transitions = (
        select(
            order_events.c.at.label("at"),
            literal("order").label("source"),
            cast(order_events.c.id, BigInteger).label("id"),
            _order_type().label("type"),
            _order_severity().label("severity"),
            cast(null(), String).label("message"),
            order_events.c.actor.label("actor"),
            cast(order_events.c.order_id, String).label("order_id"),
            orders.c.playbook_key.label("playbook_key"),
            order_events.c.from_status.label("from_status"),
            order_events.c.to_status.label("to_status"),
            order_events.c.reason.label("reason"),
            order_events.c.details.label("details"),
        )
        .select_from(order_events.join(orders, orders.c.id == order_events.c.order_id))
        .where(orders.c.server_id == server_id)
    )
    return union_all(own, transitions).subquery("timeline")


def encode_cursor(at: datetime, source: str, entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{source}|{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, source, entry_id = raw.split("|", 2)
        if source not in ("event", "order"):
            raise ValueError(source)
        return datetime.fromisoformat(stamp), source, int(entry_id)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("cursor is not one this API issued", field="cursor") from None


def _message(row: dict[str, Any]) -> str:
    if row["source"] == "event":
        return str(row["message"])
    if row["reason"] == "cancel_requested":
        return f"{row['playbook_key']}: cancel requested"
    moved = f"{row['from_status']} → {row['to_status']}" if row["from_status"] else row["to_status"]
    return f"{row['playbook_key']}: {moved} ({row['reason']})"


async def list_timeline(
    db: Database,
    server_id: str,
    *,
    types: list[str] | None = None,
    severities: list[str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first. A type filter `order` matches `order.*`; `order.failed` matches itself."""
    t = _sources(server_id)
    query = select(t)
    if types:
        query = query.where(or_(*[or_(t.c.type == k, t.c.type.like(f"{k}.%")) for k in types]))
    if severities:
        bad = sorted(set(severities) - set(SEVERITIES))
        if bad:
            raise Invalid(f"unknown severity {bad[0]!r}", field="severity", allowed=list(SEVERITIES))
        query = query.where(t.c.severity.in_(severities))
    if cursor is not None:
        at, source, entry_id = decode_cursor(cursor)
        # order: at desc, source asc, id desc
        query = query.where(
            or_(
                t.c.at < at,
                and_(t.c.at == at, t.c.source > source),
                and_(t.c.at == at, t.c.source == source, t.c.id < entry_id),
            )
        )
    query = query.order_by(t.c.at.desc(), t.c.source, t.c.id.desc()).limit(limit + 1)
    async with db.read() as tx:
        rows = [dict(r) for r in (await tx.execute(query)).mappings()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(last["at"], last["source"], int(last["id"]))
    items = [
        {
            "id": f"{r['source']}:{r['id']}",
            "at": r["at"],
            "type": r["type"],
            "severity": r["severity"],
            "message": _message(r),
            "actor": r["actor"],
            # SQLite reads the id back as 32 hex digits: shown dashed, as every id is
            "order_id": None if r["order_id"] is None else str(uuid.UUID(str(r["order_id"]))),
            "details": r["details"],
        }
        for r in rows
    ]
    return items, next_cursor


# --- runner presence -----------------------------------------------------------------------------------


async def track_presence(tx: Tx, *, stale_after: float, actor: str = "reconciler") -> int:
    """Put "runner online"/"runner offline" on the timeline of the runner's server once per change.

    Called from the reconciler tick: the heartbeat path stays a single UPDATE. Returns the changes.
    """
    online = and_(
        runners.c.last_heartbeat_at.is_not(None), runners.c.last_heartbeat_at >= db_now(-stale_after)
    )
    rows = list(
        await tx.execute(
            select(
                runners.c.id,
                runners.c.name,
                online.label("online"),
                runner_presence.c.online.label("known"),
                servers.c.id.label("server_id"),
            )
            .select_from(
                runners.outerjoin(runner_presence, runner_presence.c.runner_id == runners.c.id).outerjoin(
                    servers, and_(servers.c.runner_id == runners.c.id, servers.c.deleted_at.is_(None))
                )
            )
            .where(runners.c.revoked_at.is_(None))
        )
    )
    changes = 0
    for row in rows:
        now_online = bool(row.online)
        if row.known is None:
            await tx.execute(insert(runner_presence).values(runner_id=row.id, online=now_online))
            if not now_online:
                continue  # never seen alive: nothing went offline
        elif bool(row.known) == now_online:
            continue
        else:
            await tx.execute(
                update(runner_presence)
                .where(runner_presence.c.runner_id == row.id)
                .values(online=now_online, changed_at=db_now())
            )
        changes += 1
        events.publish(
            tx,
            "runner.online" if now_online else "runner.offline",
            server_id=None if row.server_id is None else str(row.server_id),
            runner_id=str(row.id),
            actor=actor,
            data={"name": row.name},
        )
        if row.server_id is not None:
            await add_event(
                tx,
                server_id=str(row.server_id),
                type="runner.online" if now_online else "runner.offline",
                severity="info" if now_online else "warning",
                message=f"runner {row.name} " + ("online" if now_online else "offline (no heartbeat)"),
                actor=actor,
                details={"runnerId": str(row.id)},
            )
    return changes
