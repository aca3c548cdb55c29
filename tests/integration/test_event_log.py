"""The event log (issue 12): every listed change writes its event in the transaction that makes it.

Both backends (the `database` fixture). Each test does the change through the service a route calls
and reads the log back with `events.read`, as GET /v1/events does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import events, orders
from ikoma.services.events import Event
from ikoma.services.retention import Sweeper
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import events as event_table
from tests.integration.helpers import (
    claim_and_start,
    complete,
    make_dispatcher,
    make_order,
    make_pair,
)


async def log_after(db: Database, after: int = 0, **filters: Any) -> list[Event]:
    async with db.read() as tx:
        return await events.read(tx, after=after, limit=1000, **filters)


async def head(db: Database) -> int:
    async with db.read() as tx:
        return await events.last_id(tx)


def kinds(found: list[Event]) -> list[str]:
    return [e.kind for e in found]


async def test_an_order_run_logs_created_claimed_started_succeeded_with_its_server(
    database: Database,
) -> None:
    pair = await make_pair(database)
    start = await head(database)
    order = await make_order(database, pair.server_id)
    dispatcher = make_dispatcher(database)
    running = await claim_and_start(dispatcher, pair.identity)
    await complete(dispatcher, pair.identity, str(order["id"]), lease_token=running["lease_token"])

    found = await log_after(database, start, order_id=str(order["id"]))
    assert kinds(found)[:4] == ["order.created", "order.claimed", "order.started", "order.succeeded"]
    assert all(e.server_id == pair.server_id for e in found)
    claimed = found[1]
    assert claimed.runner_id == pair.runner_id
    assert claimed.actor == f"runner:{pair.runner_id}"
    assert claimed.data == {"from": "QUEUED", "to": "CLAIMED", "reason": "claimed", "attempt": 1}
    assert [e.id for e in found] == sorted(e.id for e in found)
    assert found[0].to_json()["serverId"] == pair.server_id
    assert found[0].topic == "order"


async def test_a_rolled_back_change_leaves_no_event(database: Database) -> None:
    pair = await make_pair(database)
    start = await head(database)

    async def change_that_fails() -> None:
        async with database.write() as tx:
            events.publish(tx, "server.changed", server_id=pair.server_id, data={"fields": ["name"]})
            raise RuntimeError("the change fails after publishing")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    assert await log_after(database, start) == []


async def test_events_published_in_one_transaction_are_stored_in_publish_order(database: Database) -> None:
    pair = await make_pair(database)
    start = await head(database)
    async with database.write() as tx:
        for n in range(5):
            events.publish(tx, "server.changed", server_id=pair.server_id, data={"n": n})
    found = await log_after(database, start)
    assert [e.data["n"] for e in found] == [0, 1, 2, 3, 4]
    assert found[0].ts is not None
    assert found[0].actor is None


async def test_a_cancel_logs_cancelled_with_the_reason_given(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    start = await head(database)
    await orders.cancel_order(database, str(order["id"]), reason="wrong server", actor="admin")
    [cancelled] = await log_after(database, start)
    assert cancelled.kind == "order.cancelled"
    assert cancelled.data["details"] == {"reason": "wrong server"}
    assert cancelled.server_id == pair.server_id


async def test_a_failed_run_with_attempts_left_logs_failed_then_requeued(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    dispatcher = make_dispatcher(database)
    running = await claim_and_start(dispatcher, pair.identity)
    start = await head(database)
    await complete(
        dispatcher, pair.identity, str(order["id"]), OrderStatus.FAILED, lease_token=running["lease_token"]
    )
    transitions = [e for e in await log_after(database, start) if e.topic == "order"]
    assert kinds(transitions) == ["order.failed", "order.requeued"]
    assert transitions[1].data["reason"] == "retry"


async def test_retention_deletes_old_events_and_ids_are_never_handed_out_again(
    database: Database, tmp_path: Path
) -> None:
    pair = await make_pair(database)
    start = await head(database)
    async with database.write() as tx:
        for n in range(3):
            events.publish(tx, "server.changed", server_id=pair.server_id, data={"n": n})
    every = await log_after(database)
    old = [e.id for e in every if e.id <= start + 2]
    async with database.write() as tx:
        await tx.execute(update(event_table).where(event_table.c.id.in_(old)).values(ts=db_now(-31 * 86400)))
    assert await Sweeper(database, tmp_path, event_days=30).prune_events() == len(old)
    assert [e.data for e in await log_after(database)] == [{"n": 2}]

    # everything gone: the next event still gets a larger id, or readers past it would skip it
    async with database.write() as tx:
        await tx.execute(update(event_table).values(ts=db_now(-31 * 86400)))
    assert await Sweeper(database, tmp_path, event_days=30).prune_events() == 1
    async with database.write() as tx:
        events.publish(tx, "server.changed", server_id=pair.server_id)
    [newest] = await log_after(database)
    assert newest.id > every[-1].id
