"""The order's history: transition events and attempt rows. Every transition goes through here.

Each transition is also published to the event log (services/events.py) in the same transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, update

from ikoma.domain.event_kinds import order_kind
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import events as event_log
from ikoma.storage.clock import db_now
from ikoma.storage.database import Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import order_attempts, order_events

_CLOSE_ATTEMPT = Prepared(
    update(order_attempts)
    .where(
        order_attempts.c.order_id == bindparam("o_id"),
        order_attempts.c.attempt == bindparam("o_attempt"),
        # an attempt is closed once and never rewritten
        order_attempts.c.ended_at.is_(None),
    )
    .values(ended_at=db_now(), outcome=bindparam("o_outcome"), reason=bindparam("o_reason"))
)


def event(
    order_id: str,
    from_status: OrderStatus | None,
    to_status: OrderStatus,
    reason: str,
    *,
    attempt: int,
    actor: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "from_status": from_status.value if from_status else None,
        "to_status": to_status.value,
        "reason": reason,
        "attempt": attempt,
        "actor": actor,
        "details": details,
    }


_INSERT_EVENTS = Prepared(insert(order_events))
_RUNNER = "runner:"  # how a runner acts (services/dispatch.py RunnerIdentity.actor)
_OPEN_ATTEMPT = Prepared(insert(order_attempts).values(claimed_at=db_now()))
_MARK_STARTED = Prepared(
    update(order_attempts)
    .where(order_attempts.c.order_id == bindparam("o_id"), order_attempts.c.attempt == bindparam("o_attempt"))
    .values(started_at=db_now())
)


async def record_events(tx: Tx, events: list[dict[str, Any]]) -> None:
    if events:
        await tx.execute(_INSERT_EVENTS, events if len(events) > 1 else events[0])
        for one in events:
            _publish(tx, one)


def _publish(tx: Tx, one: dict[str, Any]) -> None:
    """The transition in the event log; its server is the order's (filled in by the insert)."""
    actor: str = one["actor"]
    data = {
        "from": one["from_status"],
        "to": one["to_status"],
        "reason": one["reason"],
        "attempt": one["attempt"],
    }
    if one["details"]:
        data["details"] = one["details"]  # a retry's delay, a cancel's reason
    event_log.publish(
        tx,
        order_kind(one["to_status"], one["reason"]),
        order_id=one["order_id"],
        runner_id=actor.removeprefix(_RUNNER) if actor.startswith(_RUNNER) else None,
        actor=actor,
        data=data,
    )


async def open_attempt(tx: Tx, *, order_id: str, attempt: int, runner_id: str, lease_token: str) -> None:
    await tx.execute(
        _OPEN_ATTEMPT,
        {"order_id": order_id, "attempt": attempt, "runner_id": runner_id, "lease_token": lease_token},
    )


async def mark_attempt_started(tx: Tx, *, order_id: str, attempt: int) -> None:
    await tx.execute(_MARK_STARTED, {"o_id": order_id, "o_attempt": attempt})


async def close_attempts(tx: Tx, closings: list[tuple[str, int, str, str]]) -> None:
    """Close attempts given as (order_id, attempt, outcome, reason)."""
    if closings:
        rows = [{"o_id": o, "o_attempt": a, "o_outcome": out, "o_reason": r} for o, a, out, r in closings]
        await tx.execute(_CLOSE_ATTEMPT, rows if len(rows) > 1 else rows[0])
