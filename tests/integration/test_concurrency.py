"""Scenario 1: concurrent claimers on SQLite and PostgreSQL — every order is claimed exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import insert, select

from ikoma.domain.lifecycle import OrderStatus
from ikoma.services.dispatch import Dispatcher, RunnerIdentity
from ikoma.storage.database import Database
from ikoma.storage.tables import order_attempts, order_events, orders
from tests.integration import helpers as h

ORDERS = 2000
CLAIMERS = 8


async def _queue_orders(database: Database, server_id: str, runner_id: str | None, count: int) -> list[str]:
    """Queue `count` orders in one transaction (the same rows `create_order` writes, without the cost)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    rows = [
        {
            "id": order_id,
            "status": OrderStatus.QUEUED.value,
            "server_id": server_id,
            "runner_id": runner_id,
            "playbook_key": h.PLAYBOOK,
            "action": "run",
            "params": {"message": f"ping {n}"},
            "attempt": 0,
            "executions": 0,
            "max_attempts": 3,
            "timeout_s": 60,
            "cancel_requested": False,
            "status_reason": "created",
        }
        for n, order_id in enumerate(ids)
    ]
    async with database.write() as tx:
        await tx.execute(insert(orders), rows)
    return ids


async def _drain(dispatcher: Dispatcher, identity: RunnerIdentity) -> list[dict[str, Any]]:
    claimed = []
    while (order := await dispatcher.claim_once(identity)) is not None:
        claimed.append(order)
    return claimed


async def _race(claimers: list[tuple[Dispatcher, RunnerIdentity]]) -> list[list[dict[str, Any]]]:
    return await asyncio.wait_for(
        asyncio.gather(*(_drain(dispatcher, identity) for dispatcher, identity in claimers)), timeout=60
    )


async def _assert_claimed_exactly_once(
    database: Database, expected_ids: list[str], claims: list[dict[str, Any]]
) -> None:
    claimed_ids = Counter(str(c["id"]) for c in claims)
    assert [order_id for order_id, n in claimed_ids.items() if n > 1] == []
    assert len(claims) == len(expected_ids)
    assert set(claimed_ids) == set(expected_ids)
    assert len({c["lease_token"] for c in claims}) == len(claims)
    async with database.read() as tx:
        statuses = Counter((await tx.execute(select(orders.c.status, orders.c.attempt))).all())
        attempts = Counter((await tx.execute(select(order_attempts.c.attempt))).scalars())
        claim_events = Counter(
            (
                await tx.execute(select(order_events.c.order_id).where(order_events.c.to_status == "CLAIMED"))
            ).scalars()
        )
    assert statuses == {("CLAIMED", 1): len(expected_ids)}
    assert attempts == {1: len(expected_ids)}
    assert len(claim_events) == len(expected_ids)
    assert set(claim_events.values()) == {1}


async def test_eight_runners_each_claim_every_order_of_their_own_server_exactly_once(
    database: Database,
) -> None:
    pairs = [await h.make_pair(database, f"web-{n}") for n in range(1, CLAIMERS + 1)]
    expected: dict[str, list[str]] = {}
    for pair in pairs:
        expected[pair.runner_id] = await _queue_orders(
            database, pair.server_id, pair.runner_id, ORDERS // CLAIMERS
        )

    results = await _race([(h.make_dispatcher(database), pair.identity) for pair in pairs])

    for pair, claims in zip(pairs, results, strict=True):
        assert sorted(str(c["id"]) for c in claims) == sorted(expected[pair.runner_id])
        assert {c["runner_id"] for c in claims} == {pair.runner_id}
    await _assert_claimed_exactly_once(
        database, [i for ids in expected.values() for i in ids], [c for claims in results for c in claims]
    )


async def test_eight_claimers_racing_for_one_pool_claim_every_order_exactly_once(database: Database) -> None:
    server = await h.make_server(database, "batch-1")
    # queued before any runner is attached: the orders carry no runner, only their server
    ids = await _queue_orders(database, server["id"], None, ORDERS)
    runner = await h.make_runner(database, "runner-batch-1")
    await h.attach(database, server["id"], runner["id"])
    identity = RunnerIdentity(runner_id=runner["id"], server_id=server["id"])
    shared = h.make_dispatcher(database)

    results = await _race([(shared, identity) for _ in range(CLAIMERS)])

    claims = [c for per_claimer in results for c in per_claimer]
    await _assert_claimed_exactly_once(database, ids, claims)
    if not database.is_sqlite:
        # with a connection pool the claimers really overlap: the work is shared out
        assert sum(1 for per_claimer in results if per_claimer) > 1


async def test_claimers_finding_nothing_return_none_without_error(database: Database) -> None:
    pair = await h.make_pair(database)
    results = await _race([(h.make_dispatcher(database), pair.identity) for _ in range(CLAIMERS)])
    assert results == [[] for _ in range(CLAIMERS)]
