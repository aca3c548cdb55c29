"""`waitingFor` (services/waiting.py), each cause on real data on SQLite and PostgreSQL, the estimate, the
constant number of reads for a page, and the order routes carrying it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import waiting
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import orders as orders_table
from ikoma.storage.tables import runners
from tests.integration import helpers as h
from tests.integration.inprocess_api import running_app


async def seen(db: Database, runner_id: str, seconds_ago: float) -> None:
    async with db.write() as tx:
        await tx.execute(
            update(runners).where(runners.c.id == runner_id).values(last_heartbeat_at=db_now(-seconds_ago))
        )


async def online_pair(db: Database, name: str = "web-1") -> h.Pair:
    pair = await h.make_pair(db, name)
    await seen(db, pair.runner_id, 1)
    return pair


async def why(db: Database, order_id: str) -> dict[str, Any] | None:
    row = await h.fetch_order(db, order_id)
    return (await waiting.waiting_for(db, [row], stale_after=h.STALE_AFTER))[order_id]


def utc(value: Any) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def test_an_order_on_a_server_without_runner_waits_for_one_to_be_attached(database: Database) -> None:
    server = await h.make_server(database, "bare")
    order = await h.make_order(database, str(server["id"]))

    found = await why(database, order["id"])

    assert found is not None
    assert found["reason"] == "no_runner_attached"
    assert "runner_id" not in found


async def test_a_revoked_runner_counts_as_no_runner(database: Database) -> None:
    pair = await online_pair(database)
    order = await h.make_order(database, pair.server_id)
    async with database.write() as tx:
        await tx.execute(update(runners).where(runners.c.id == pair.runner_id).values(revoked_at=db_now()))

    assert (await why(database, order["id"]) or {})["reason"] == "no_runner_attached"


async def test_an_order_whose_runner_stopped_heartbeating_waits_for_it_since_its_last_heartbeat(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    await seen(database, pair.runner_id, h.STALE_AFTER + 30)
    order = await h.make_order(database, pair.server_id)

    found = await why(database, order["id"])

    assert found is not None
    assert found["reason"] == "runner_offline"
    assert found["runner_id"] == pair.runner_id
    last = await h.database_now(database, -(h.STALE_AFTER + 30))
    assert abs((utc(found["since"]) - utc(last)).total_seconds()) < 5


async def test_a_runner_never_seen_is_offline_with_no_since(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)

    found = await why(database, order["id"])

    assert found is not None
    assert (found["reason"], found["since"]) == ("runner_offline", None)
    assert "never" in found["message"]


async def test_a_retry_in_backoff_waits_until_not_before(database: Database) -> None:
    pair = await online_pair(database)
    order = await h.make_order(database, pair.server_id)
    await h.backdate(database, order["id"], not_before=-90)  # 90 s ahead of the database clock

    found = await why(database, order["id"])

    assert found is not None
    assert found["reason"] == "not_before"
    assert 80 < found["estimate"]["starts_in_seconds"] <= 90
    assert abs((utc(found["until"]) - utc(await h.database_now(database, 90))).total_seconds()) < 5


async def test_an_order_behind_a_working_runner_says_with_what_and_estimates_when(database: Database) -> None:
    pair = await online_pair(database)
    dispatcher = h.make_dispatcher(database)
    for seconds in (10, 20, 60):  # finished orders to learn from: median 20 s
        done = await h.make_order(database, pair.server_id)
        running = await h.claim_and_start(dispatcher, pair.identity)
        await h.complete(dispatcher, pair.identity, done["id"], lease_token=running["lease_token"])
        await h.backdate(database, done["id"], started_at=seconds + 100, finished_at=100)
    held = await h.make_order(database, pair.server_id)
    await h.claim_and_start(dispatcher, pair.identity)
    first = await h.make_order(database, pair.server_id)
    second = await h.make_order(database, pair.server_id)
    # the queue's order is (created_at, id): two orders of the same millisecond go by their random ids
    await h.backdate(database, first["id"], created_at=1)

    found = await why(database, second["id"])

    assert found is not None
    assert found["reason"] == "runner_busy"
    assert found["runner_id"] == pair.runner_id
    assert [o["id"] for o in found["busy_with"]] == [held["id"]]
    assert found["busy_with"][0]["status"] == OrderStatus.RUNNING.value
    assert found["orders_ahead"] == 1  # `first`
    assert found["estimate"] == {"starts_in_seconds": 40.0, "orders_ahead": 1, "median_seconds": 20.0}
    assert (await why(database, first["id"]) or {})["orders_ahead"] == 0


async def test_an_order_for_an_idle_online_runner_is_claimed_at_its_next_poll(database: Database) -> None:
    pair = await online_pair(database)
    order = await h.make_order(database, pair.server_id)

    found = await why(database, order["id"])

    assert found is not None
    assert (found["reason"], found["runner_id"], found["orders_ahead"]) == ("queued", pair.runner_id, 0)
    assert "estimate" not in found  # nothing finished yet: no basis


async def test_a_claimed_order_waits_for_its_runner_to_start_it_until_the_lease_ends(
    database: Database,
) -> None:
    pair = await online_pair(database)
    order = await h.make_order(database, pair.server_id)
    await h.make_dispatcher(database).claim_once(pair.identity)

    found = await why(database, order["id"])
    assert found is not None
    assert (found["reason"], found["runner_id"]) == ("claimed", pair.runner_id)
    assert found["until"] is not None

    await h.backdate(database, order["id"], lease_expires_at=5)
    expired = await why(database, order["id"])
    assert expired is not None
    assert expired["reason"] == "lease_expired_requeue"


async def test_running_and_finished_orders_wait_for_nothing(database: Database) -> None:
    pair = await online_pair(database)
    dispatcher = h.make_dispatcher(database)
    done = await h.make_order(database, pair.server_id)
    running = await h.claim_and_start(dispatcher, pair.identity)
    await h.complete(dispatcher, pair.identity, done["id"], lease_token=running["lease_token"])
    live = await h.make_order(database, pair.server_id)
    await h.claim_and_start(dispatcher, pair.identity)

    assert await why(database, done["id"]) is None
    assert await why(database, live["id"]) is None


@pytest.fixture
def statements() -> Iterator[list[str]]:
    seen_statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen_statements.append(statement)

    event.listen(Engine, "before_cursor_execute", capture)
    yield seen_statements
    event.remove(Engine, "before_cursor_execute", capture)


async def test_a_page_is_explained_in_the_same_few_reads_whatever_its_size(
    database: Database, statements: list[str]
) -> None:
    pairs = [await online_pair(database, f"web-{n}") for n in range(6)]
    bare = await h.make_server(database, "bare")
    made = [await h.make_order(database, p.server_id) for p in pairs for _ in range(3)]
    made += [await h.make_order(database, str(bare["id"])) for _ in range(2)]
    dispatcher = h.make_dispatcher(database)
    await h.claim_and_start(dispatcher, pairs[0].identity)
    rows = [await h.fetch_order(database, o["id"]) for o in made]

    counts = []
    for page in (rows[:2], rows):
        statements.clear()
        await waiting.waiting_for(database, page, stale_after=h.STALE_AFTER)
        counts.append(len(statements))

    assert counts[0] == counts[1] <= 5


async def test_order_routes_carry_waiting_for_in_list_and_detail(database_url: str, tmp_path: Path) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        bare = await h.make_server(ctx.db, "bare")
        order = await h.make_order(ctx.db, str(bare["id"]))
        other = await h.make_order(ctx.db, str(bare["id"]))
        async with ctx.db.write() as tx:  # a finished order next to it
            await tx.execute(
                update(orders_table).where(orders_table.c.id == other["id"]).values(status="CANCELLED")
            )

        page = (await client.get("/v1/orders")).json()["items"]
        detail = (await client.get(f"/v1/orders/{order['id']}")).json()

    by_id = {item["id"]: item["waitingFor"] for item in page}
    assert by_id[order["id"]]["reason"] == "no_runner_attached"
    assert by_id[other["id"]] is None
    assert detail["waitingFor"]["reason"] == "no_runner_attached"
    assert detail["waitingFor"]["message"]


async def test_orders_ahead_counts_the_runners_queue_across_servers_but_not_orders_in_backoff(
    database: Database,
) -> None:
    pair = await online_pair(database)
    other_server = await h.make_server(database, "other")
    sent_here = await h.make_order(database, str(other_server["id"]), runner_id=pair.runner_id)
    backing_off = await h.make_order(database, pair.server_id)
    mine = await h.make_order(database, pair.server_id)
    await h.backdate(database, sent_here["id"], created_at=3)
    await h.backdate(database, backing_off["id"], created_at=2, not_before=-60)

    found = await why(database, mine["id"])

    assert found is not None
    assert (found["reason"], found["orders_ahead"]) == ("queued", 1)  # `sent_here`, not `backing_off`
