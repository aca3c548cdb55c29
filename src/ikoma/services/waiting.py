"""Why an order is not running yet (`waitingFor`): read at read time, for a page in a constant number
of queries, never written (the claim path stays as it is).

It mirrors the claim (services/dispatch_sql.py): a QUEUED order is taken by a runner that is not
revoked and is either the order's runner (`orders.runner_id`) or the one attached to the order's live
server, once `not_before` has passed, oldest first. So, for a QUEUED order, the first that holds:

- `no_runner_attached`: no such runner (none attached, none named, or revoked);
- `runner_offline` (`since`: its last heartbeat, null when never seen): none of them sent a heartbeat
  within IKOMA_STALE_AFTER, so none is polling;
- `not_before` (`until`): a retry's backoff has not ended;
- `runner_busy` (`busyWith`: the orders it holds): the runner has orders in hand. The API does not
  know a runner's parallelism (`ikoma runner --parallel`), so this says it is working, not that every
  worker is taken; the order is claimed when a worker comes free;
- `queued`: it will be claimed at the runner's next poll.

A CLAIMED order waits for its runner to start it: `claimed` (`until`: the lease's end), or, once the
lease has run out, `lease_expired_requeue` (the reconciler puts it back in the queue at its next tick).
RUNNING and terminal orders wait for nothing (null).

`ordersAhead` counts the QUEUED orders of the same server (or the same runner) that would be claimed
first, and `estimate` (when the runner has finished orders to learn from) is
`(ordersAhead + orders in hand) x the median duration of its last 20 finished orders` (of the last
week) — an upper bound for a runner with one worker.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select

from ikoma.domain.lifecycle import ACTIVE, OrderStatus
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import orders, runners, servers

RECENT_DURATIONS = 20  # finished orders per runner the median is taken over
# ... among those created in the last week: the claim index (runner, status, created_at) bounds the read
RECENT_SECONDS = 7 * 86400
BUSY_SHOWN = 10  # orders listed in `busyWith`
_FINISHED = (OrderStatus.SUCCEEDED.value, OrderStatus.FAILED.value)


def _utc(value: Any) -> datetime | None:
    """A timestamp from either backend (SQLite: naive UTC, or text when not typed) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class _Runner:
    id: str
    revoked: bool
    online: bool
    last_heartbeat_at: datetime | None


@dataclass(slots=True)
class _Facts:
    """What the page's waiting orders need to know, read once for all of them."""

    now: datetime
    server_runner: dict[str, str | None]  # live server id -> its runner
    runners: dict[str, _Runner]
    in_hand: dict[str, list[dict[str, Any]]]  # runner id -> its CLAIMED/RUNNING orders
    ahead: dict[str, int]  # order id -> QUEUED orders claimed before it
    medians: dict[str, float]  # runner id -> median seconds of its recent finished orders


async def waiting_for(
    db: Database, rows: Iterable[dict[str, Any]], *, stale_after: float
) -> dict[str, dict[str, Any] | None]:
    """`waitingFor` of each order row (by id): a typed reason, or None when the order waits for nothing.

    At most five reads whatever the number of rows (none when no row waits).
    """
    found: dict[str, dict[str, Any] | None] = {}
    waiting = []
    for row in rows:
        found[str(row["id"])] = None
        if row["status"] in (OrderStatus.QUEUED.value, OrderStatus.CLAIMED.value):
            waiting.append(row)
    if not waiting:
        return found
    facts = await _read_facts(db, waiting, stale_after)
    for row in waiting:
        found[str(row["id"])] = _explain(row, facts)
    return found


async def _read_facts(db: Database, waiting: list[dict[str, Any]], stale_after: float) -> _Facts:
    server_ids = sorted({str(r["server_id"]) for r in waiting})
    queued_ids = [str(r["id"]) for r in waiting if r["status"] == OrderStatus.QUEUED.value]
    async with db.read() as tx:
        # the database clock comes with the servers (a waiting order's server is live: a server is
        # deleted only once its orders have ended), read apart only when none is
        live_servers = list(
            await tx.execute(
                select(servers.c.id, servers.c.runner_id, db_now().label("now")).where(
                    servers.c.id.in_(server_ids), servers.c.deleted_at.is_(None)
                )
            )
        )
        now = _utc(live_servers[0].now if live_servers else (await tx.execute(select(db_now()))).scalar_one())
        assert now is not None
        server_runner = {str(r.id): (str(r.runner_id) if r.runner_id else None) for r in live_servers}
        runner_ids = sorted(
            {str(r["runner_id"]) for r in waiting if r["runner_id"]}
            | {rid for rid in server_runner.values() if rid}
        )
        known: dict[str, _Runner] = {}
        if runner_ids:
            online = and_(
                runners.c.revoked_at.is_(None),
                runners.c.last_heartbeat_at.is_not(None),
                runners.c.last_heartbeat_at >= db_now(-stale_after),
            )
            for r in await tx.execute(
                select(
                    runners.c.id,
                    runners.c.revoked_at.is_not(None).label("revoked"),
                    online.label("online"),
                    runners.c.last_heartbeat_at,
                ).where(runners.c.id.in_(runner_ids))
            ):
                known[str(r.id)] = _Runner(
                    str(r.id), bool(r.revoked), bool(r.online), _utc(r.last_heartbeat_at)
                )
        in_hand: dict[str, list[dict[str, Any]]] = {}
        medians: dict[str, float] = {}
        live = [rid for rid, runner in known.items() if runner.online]
        if live:
            held = await tx.execute(
                select(orders.c.id, orders.c.runner_id, orders.c.status, orders.c.playbook_key)
                .where(orders.c.runner_id.in_(live), orders.c.status.in_([s.value for s in ACTIVE]))
                .order_by(orders.c.created_at, orders.c.id)
            )
            for order in held.mappings():
                in_hand.setdefault(str(order["runner_id"]), []).append(dict(order))
            medians = await _medians(tx, live)
        ahead = await _ahead(tx, queued_ids) if queued_ids else {}
    return _Facts(now, server_runner, known, in_hand, ahead, medians)


def _queued_before(mine: Any, other: Any, same: Any) -> Any:
    """How many claimable QUEUED orders matching `same` come before `mine` in the claim's order."""
    return (
        select(func.count())
        .select_from(other)
        .where(
            same,
            other.c.status == OrderStatus.QUEUED.value,
            or_(other.c.not_before.is_(None), other.c.not_before <= db_now()),
            or_(
                other.c.created_at < mine.c.created_at,
                and_(other.c.created_at == mine.c.created_at, other.c.id < mine.c.id),
            ),
        )
        .scalar_subquery()
    )


def _ahead_statement() -> Any:
    # Two counts, each on its own claim index (server, status, created_at) and (runner, status,
    # created_at), rather than one over `server OR runner`, which no index serves; the second leaves
    # out the first's orders. Built once: aliases of a 30-column table cost more to build than to run.
    mine, by_server, by_runner = orders.alias("mine"), orders.alias("by_server"), orders.alias("by_runner")
    same_server = by_server.c.server_id == mine.c.server_id
    same_runner = and_(by_runner.c.runner_id == mine.c.runner_id, by_runner.c.server_id != mine.c.server_id)
    ahead = _queued_before(mine, by_server, same_server) + func.coalesce(
        _queued_before(mine, by_runner, same_runner), 0
    )
    return select(mine.c.id, ahead.label("ahead")).where(mine.c.id.in_(bindparam("ids", expanding=True)))


_AHEAD = _ahead_statement()


async def _ahead(tx: Any, order_ids: list[str]) -> dict[str, int]:
    """Per QUEUED order: the claimable QUEUED orders of its server or its runner claimed before it."""
    rows = await tx.execute(_AHEAD, {"ids": order_ids})
    return {str(r.id): int(r.ahead) for r in rows}


async def _medians(tx: Any, runner_ids: list[str]) -> dict[str, float]:
    """Median seconds of each runner's last RECENT_DURATIONS finished orders (one windowed read)."""
    rank = (
        func.row_number()
        .over(partition_by=orders.c.runner_id, order_by=orders.c.finished_at.desc())
        .label("rank")
    )
    recent = (
        select(orders.c.runner_id, orders.c.started_at, orders.c.finished_at, rank)
        .where(
            orders.c.runner_id.in_(runner_ids),
            orders.c.status.in_(_FINISHED),
            orders.c.created_at >= db_now(-RECENT_SECONDS),
            orders.c.started_at.is_not(None),
            orders.c.finished_at.is_not(None),
        )
        .subquery()
    )
    durations: dict[str, list[float]] = {}
    for r in await tx.execute(select(recent).where(recent.c.rank <= RECENT_DURATIONS)):
        started, finished = _utc(r.started_at), _utc(r.finished_at)
        assert started is not None
        assert finished is not None
        durations.setdefault(str(r.runner_id), []).append(max(0.0, (finished - started).total_seconds()))
    return {rid: float(statistics.median(found)) for rid, found in durations.items()}


def _explain(row: dict[str, Any], facts: _Facts) -> dict[str, Any]:
    since = _utc(row["updated_at"])
    if row["status"] == OrderStatus.CLAIMED.value:
        until = _utc(row["lease_expires_at"])
        runner_id = str(row["runner_id"]) if row["runner_id"] else None
        if until is not None and until < facts.now:
            return {
                "reason": "lease_expired_requeue",
                "message": "its runner claimed it but did not start it before the lease ran out; "
                "the reconciler puts it back in the queue at its next tick",
                "since": until,
                "runner_id": runner_id,
            }
        return {
            "reason": "claimed",
            "message": "its runner has claimed it and is starting it",
            "since": _utc(row["claimed_at"]) or since,
            "until": until,
            "runner_id": runner_id,
        }
    candidates = [
        facts.runners[rid]
        for rid in dict.fromkeys(  # the server's runner first, then the one the order names
            [facts.server_runner.get(str(row["server_id"])), str(row["runner_id"] or "") or None]
        )
        if rid is not None and rid in facts.runners and not facts.runners[rid].revoked
    ]
    ahead = facts.ahead.get(str(row["id"]), 0)
    if not candidates:
        return {
            "reason": "no_runner_attached",
            "message": "no runner can take it: attach a runner to its server",
            "since": since,
        }
    online = [c for c in candidates if c.online]
    if not online:
        first = candidates[0]
        return {
            "reason": "runner_offline",
            "message": "its runner has not been seen within IKOMA_STALE_AFTER"
            if first.last_heartbeat_at
            else "its runner has never been seen",
            "since": first.last_heartbeat_at,
            "runner_id": first.id,
        }
    not_before = _utc(row["not_before"])
    if not_before is not None and not_before > facts.now:
        return {
            "reason": "not_before",
            "message": "a retry waits for its backoff to end",
            "since": since,
            "until": not_before,
            "runner_id": online[0].id,
            "estimate": {
                "starts_in_seconds": round((not_before - facts.now).total_seconds(), 3),
                "orders_ahead": ahead,
                "median_seconds": facts.medians.get(online[0].id),
            },
        }
    busy = [(c, facts.in_hand.get(c.id, [])) for c in online]
    runner, held = max(busy, key=lambda pair: len(pair[1]))
    answer: dict[str, Any] = {
        "reason": "runner_busy" if held else "queued",
        "message": f"its runner is working on {len(held)} order(s); it is claimed when a worker is free"
        if held
        else "it is claimed at its runner's next poll",
        "since": since,
        "runner_id": runner.id,
        "orders_ahead": ahead,
    }
    if held:
        answer["busy_with"] = held[:BUSY_SHOWN]
    median = facts.medians.get(runner.id)
    if median is not None and (held or ahead):
        answer["estimate"] = {
            "starts_in_seconds": round((ahead + len(held)) * median, 3),
            "orders_ahead": ahead,
            "median_seconds": round(median, 3),
        }
    return answer
