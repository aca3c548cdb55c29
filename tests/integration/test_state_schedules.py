"""Collection schedules: defaults for servers with a runner, ordinary orders, never a second one pending."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from ikoma.domain.errors import Invalid
from ikoma.domain.lifecycle import OrderStatus
from ikoma.metrics import Metrics
from ikoma.services import schedules
from ikoma.services.reconciler import Reconciler
from ikoma.services.schedules import Scheduler
from ikoma.services.wakeups import Wakeups
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import order_events, orders
from ikoma.storage.tables import schedules as schedules_table
from tests.integration.helpers import (
    STALE_AFTER,
    claim_and_start,
    complete,
    make_dispatcher,
    make_pair,
    make_server,
)

DEFAULTS = {"system.metrics": 300, "apt.analyze": 86400, "system.facts": 604800}


def reconciler(db: Database, wakeups: Wakeups) -> Reconciler:
    return Reconciler(
        db,
        stale_after=STALE_AFTER,
        interval=1.0,
        wakeups=wakeups,
        metrics=Metrics(),
        scheduler=Scheduler(wakeups, default_timeout=600, defaults=DEFAULTS),
    )


async def _orders(db: Database, server_id: str) -> list[tuple[str, str]]:
    async with db.read() as tx:
        rows = await tx.execute(
            select(orders.c.playbook_key, orders.c.status)
            .where(orders.c.server_id == server_id)
            .order_by(orders.c.playbook_key, orders.c.created_at)
        )
        return [(r.playbook_key, r.status) for r in rows]


async def _make_due(db: Database) -> None:
    async with db.write() as tx:
        await tx.execute(update(schedules_table).values(next_run_at=db_now(-1)))


async def test_a_reconciler_tick_queues_the_default_collections_of_servers_with_a_runner(
    database: Database,
) -> None:
    pair = await make_pair(database)
    lonely = await make_server(database, "no-runner")
    wakeups = Wakeups()
    summary = await reconciler(database, wakeups).tick()
    assert len(summary.scheduled) == 3
    assert await _orders(database, pair.server_id) == sorted((key, "QUEUED") for key in DEFAULTS)
    assert await _orders(database, str(lonely["id"])) == []  # nobody would ever run them
    async with database.read() as tx:
        actors = {r.actor for r in await tx.execute(select(order_events.c.actor))}
        rows = list((await tx.execute(select(schedules_table))).mappings())
    assert all(a.startswith("schedule:") for a in actors)
    assert {r["playbook_key"]: r["interval_s"] for r in rows} == DEFAULTS
    assert all(r["last_order_id"] is not None and r["next_run_at"] is not None for r in rows)


async def test_a_schedule_never_stacks_a_second_order_while_one_is_pending(database: Database) -> None:
    pair = await make_pair(database)
    wakeups = Wakeups()
    tick = reconciler(database, wakeups)
    await tick.tick()
    await _make_due(database)  # due again while the first orders wait
    assert (await tick.tick()).scheduled == []
    dispatcher = make_dispatcher(database)
    # the runner takes one (CLAIMED, then RUNNING): still pending, still no second one
    running = await claim_and_start(dispatcher, pair.identity)
    assert (await tick.tick()).scheduled == []
    await complete(dispatcher, pair.identity, str(running["id"]), lease_token=running["lease_token"])
    again = await tick.tick()
    assert len(again.scheduled) == 1  # only the playbook whose order ended
    counts: dict[str, int] = {}
    for key, _ in await _orders(database, pair.server_id):
        counts[key] = counts.get(key, 0) + 1
    assert counts[running["playbook_key"]] == 2
    assert sum(counts.values()) == 4


async def test_a_schedule_is_not_due_before_its_interval(database: Database) -> None:
    await make_pair(database)
    tick = reconciler(database, Wakeups())
    await tick.tick()
    async with database.write() as tx:
        await tx.execute(update(orders).values(status=OrderStatus.CANCELLED.value))
    assert (await tick.tick()).scheduled == []  # nothing pending, but not due yet
    await _make_due(database)
    assert len((await tick.tick()).scheduled) == 3


async def test_put_replaces_schedules_and_disabled_defaults_do_not_come_back(database: Database) -> None:
    pair = await make_pair(database)
    tick = reconciler(database, Wakeups())
    await tick.tick()
    result = await schedules.replace_schedules(
        database,
        pair.server_id,
        [{"playbook_key": "system.metrics", "interval_s": 120, "enabled": True}],
    )
    assert {(r["playbook_key"], r["interval_s"], r["enabled"]) for r in result} == {
        ("system.metrics", 120, True),
        ("apt.analyze", 86400, False),
        ("system.facts", 604800, False),
    }
    async with database.write() as tx:
        await tx.execute(update(orders).values(status=OrderStatus.CANCELLED.value))
    await _make_due(database)
    assert len((await tick.tick()).scheduled) == 1
    assert len(await schedules.list_schedules(database, pair.server_id)) == 3
    with pytest.raises(Invalid) as refused:
        await schedules.replace_schedules(
            database, pair.server_id, [{"playbook_key": "shell.exec", "interval_s": 120, "enabled": True}]
        )
    assert getattr(refused.value, "reason", None) == "validation_error"
