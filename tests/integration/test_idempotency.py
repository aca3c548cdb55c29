"""Scenario 12: order creation with an Idempotency-Key, sequential and concurrent, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ikoma.domain.errors import Conflict
from ikoma.services import orders
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from ikoma.storage.tables import order_events
from ikoma.storage.tables import orders as orders_table
from tests.integration import helpers as h

KEY = "deploy-web-1-2026-11-22T10:00"


async def _create(
    database: Database, body: dict[str, Any], key: str | None = KEY
) -> tuple[dict[str, Any], bool]:
    return await orders.create_order(
        database, Wakeups(), body, idempotency_key=key, default_timeout=h.DEFAULT_TIMEOUT
    )


async def test_same_key_and_same_body_give_back_the_same_order_as_a_replay(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id, params={"message": "hello"})

    first, first_replayed = await _create(database, body)
    second, second_replayed = await _create(database, dict(body))

    assert (first_replayed, second_replayed) == (False, True)
    assert second["id"] == first["id"]
    assert second["created_at"] == first["created_at"]
    assert await h.count_rows(database, orders_table) == 1
    assert await h.count_events(database, first["id"]) == 1


async def test_replay_returns_the_order_as_it_is_now(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id)
    first, _ = await _create(database, body)
    await h.make_dispatcher(database).claim_once(pair.identity)

    again, replayed = await _create(database, body)

    assert replayed is True
    assert again["id"] == first["id"]
    assert again["status"] == "CLAIMED"


async def test_key_order_of_the_body_does_not_make_it_a_different_request(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id, params={"message": "hi"})
    first, _ = await _create(database, body)

    again, replayed = await _create(database, dict(reversed(list(body.items()))))

    assert replayed is True
    assert again["id"] == first["id"]


async def test_same_key_with_a_different_body_is_idempotency_conflict(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id, params={"message": "hello"})
    first, _ = await _create(database, body)

    for change in ({"params": {"message": "bye"}}, {"playbook_key": "system.facts"}, {"max_attempts": 1}):
        with pytest.raises(Conflict) as refused:
            await _create(database, {**body, **change})

        assert refused.value.status_code == 409
        assert refused.value.reason == "idempotency_conflict"
        assert refused.value.details == {"idempotencyKey": KEY, "orderId": first["id"]}
    assert await h.count_rows(database, orders_table) == 1


async def test_without_a_key_each_create_queues_a_new_order(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id)

    results = [await _create(database, body, key=None) for _ in range(2)]

    assert results[0][0]["id"] != results[1][0]["id"]
    assert [replayed for _, replayed in results] == [False, False]


async def test_different_keys_with_the_same_body_queue_different_orders(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id)

    first, _ = await _create(database, body, key="facts-web-1-a")
    second, _ = await _create(database, body, key="facts-web-1-b")

    assert first["id"] != second["id"]


async def test_ten_concurrent_creates_with_one_key_make_exactly_one_order(database: Database) -> None:
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id, params={"message": "hello"})

    results = await asyncio.gather(*(_create(database, dict(body)) for _ in range(10)))

    assert len({order["id"] for order, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 9
    assert await h.count_rows(database, orders_table) == 1
    assert await h.count_rows(database, order_events) == 1


async def test_concurrent_creates_with_one_key_and_two_bodies_make_one_order_and_refuse_the_other_body(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    bodies = [h.order_body(pair.server_id, params={"message": m}) for m in ("blue", "green")] * 5

    results = await asyncio.gather(*(_create(database, body) for body in bodies), return_exceptions=True)

    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, Conflict) and r.reason == "idempotency_conflict" for r in refused)
    assert len(created) == 5
    assert len(refused) == 5
    assert len({order["id"] for order, _ in created}) == 1
    assert await h.count_rows(database, orders_table) == 1


async def test_the_same_key_from_two_callers_makes_two_orders_and_reveals_nothing(database: Database) -> None:
    """Keys are per caller: another client choosing the same key is neither replayed nor refused."""
    pair = await h.make_pair(database)
    body = h.order_body(pair.server_id, params={"message": "hello"})

    mine, _ = await orders.create_order(
        database,
        Wakeups(),
        body,
        idempotency_key=KEY,
        default_timeout=h.DEFAULT_TIMEOUT,
        actor="api_client:a",
    )
    theirs, replayed = await orders.create_order(
        database,
        Wakeups(),
        body,
        idempotency_key=KEY,
        default_timeout=h.DEFAULT_TIMEOUT,
        actor="api_client:b",
    )
    other_body = h.order_body(pair.server_id, params={"message": "other"})
    with pytest.raises(Conflict) as refused:
        await orders.create_order(
            database,
            Wakeups(),
            other_body,
            idempotency_key=KEY,
            default_timeout=h.DEFAULT_TIMEOUT,
            actor="api_client:b",
        )

    assert not replayed
    assert theirs["id"] != mine["id"]
    assert refused.value.details["orderId"] == theirs["id"]  # its own order, never the other caller's
    again, replayed_again = await orders.create_order(
        database,
        Wakeups(),
        body,
        idempotency_key=KEY,
        default_timeout=h.DEFAULT_TIMEOUT,
        actor="api_client:a",
    )
    assert replayed_again
    assert again["id"] == mine["id"]
