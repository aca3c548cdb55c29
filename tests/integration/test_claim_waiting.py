"""Long-polling claims (issue 11): a waiting runner queries nothing while it waits, and still gets its
order: at once when it is created here, within a doorbell tick when nothing here could notify it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from ikoma.services import orders
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from tests.integration import helpers as h


@pytest.fixture
def statements() -> Iterator[list[str]]:
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    event.listen(Engine, "before_cursor_execute", capture)
    yield seen
    event.remove(Engine, "before_cursor_execute", capture)


async def test_twenty_idle_long_polls_run_no_write_while_they_wait(
    database: Database, statements: list[str]
) -> None:
    pairs = [await h.make_pair(database, f"idle-{n}") for n in range(20)]
    dispatcher = h.make_dispatcher(database)
    statements.clear()

    answers = await asyncio.gather(*(dispatcher.claim_next(p.identity, wait=2.5) for p in pairs))

    assert answers == [None] * 20
    writes = [s for s in statements if s.startswith(("UPDATE", "INSERT", "DELETE"))]
    assert writes == []
    # one look each when the poll begins, then the doorbell's one question a second for all of them
    looks = [s for s in statements if s.startswith("SELECT")]
    assert 20 <= len(looks) <= 20 + 4, looks


async def test_an_order_created_here_wakes_its_waiting_runner_at_once(database: Database) -> None:
    pair = await h.make_pair(database)
    wakeups = Wakeups()
    dispatcher = h.make_dispatcher(database)
    dispatcher.wakeups = wakeups
    waiting = asyncio.create_task(dispatcher.claim_next(pair.identity, wait=25))
    await asyncio.sleep(0.3)

    order = await h.make_order(database, pair.server_id, wakeups=wakeups)
    claimed = await asyncio.wait_for(waiting, timeout=20)  # far less than the 25 s wait

    assert claimed is not None
    assert claimed["id"] == order["id"]


async def test_an_order_nobody_here_announced_is_found_by_the_doorbell(database: Database) -> None:
    """As if another API process created it: no notification reaches this process's waiters."""
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    waiting = asyncio.create_task(dispatcher.claim_next(pair.identity, wait=25))
    await asyncio.sleep(0.3)

    order, _ = await orders.create_order(
        database, Wakeups(), h.order_body(pair.server_id), idempotency_key=None, default_timeout=60
    )
    claimed = await asyncio.wait_for(waiting, timeout=20)

    assert claimed is not None
    assert claimed["id"] == order["id"]


async def test_a_retry_whose_delay_ends_during_the_wait_is_claimed(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    await h.backdate(database, order["id"], not_before=-2)  # claimable two seconds from now
    dispatcher = h.make_dispatcher(database)

    claimed = await asyncio.wait_for(dispatcher.claim_next(pair.identity, wait=25), timeout=20)

    assert claimed is not None
    assert claimed["id"] == order["id"]
    await dispatcher.close()
