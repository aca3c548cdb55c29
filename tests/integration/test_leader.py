"""Leader election (services/leader.py) and migrations from two processes at once (storage/migrate.py).

Two `Leader` objects on one database stand for two API processes: each has its own connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ikoma.services.leader import APPLICATION_NAME, Leader
from ikoma.storage import migrate
from ikoma.storage.database import Database
from tests import support

WAIT = 30.0  # generous: only a failure waits this long
INTERVAL = 0.05


class Loop:
    """A background loop that records whether it runs."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.stopped = asyncio.Event()
        self.starts = 0

    def factory(self) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            self.starts += 1
            self.stopped.clear()
            self.running.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.running.clear()
                self.stopped.set()

        return run


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - polled: the states of two objects
            await asyncio.sleep(0.01)


async def test_the_only_process_leads_and_runs_its_loops(database: Database) -> None:
    leader = Leader(database, interval=INTERVAL)
    loop = Loop()
    leader.run_while_leading("reconciler", loop.factory())
    await leader.start()
    try:
        await asyncio.wait_for(loop.running.wait(), WAIT)
        assert leader.is_leader
    finally:
        await leader.close()
    assert loop.stopped.is_set()
    assert not leader.is_leader


async def test_a_loop_registered_after_the_election_starts_at_once(database: Database) -> None:
    leader = Leader(database, interval=INTERVAL)
    await leader.start()
    try:
        await asyncio.wait_for(leader.wait_elected(), WAIT)
        loop = Loop()
        leader.run_while_leading("webhooks", loop.factory())
        await asyncio.wait_for(loop.running.wait(), WAIT)
    finally:
        await leader.close()


@pytest.mark.postgres
async def test_one_of_two_processes_leads_and_the_other_takes_over_when_it_stops(
    database: Database,
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has one process")
    first, second = Leader(database, interval=INTERVAL), Leader(Database(database.url), interval=INTERVAL)
    loops = {first: Loop(), second: Loop()}
    for leader, loop in loops.items():
        leader.run_while_leading("reconciler", loop.factory())
    await first.start()
    await asyncio.wait_for(first.wait_elected(), WAIT)
    await second.start()
    try:
        await asyncio.sleep(INTERVAL * 10)  # the second tried, several times, and did not get it
        assert first.is_leader
        assert not second.is_leader
        assert loops[second].starts == 0

        await first.close()  # its session ends: the lock is free

        await asyncio.wait_for(second.wait_elected(), WAIT)
        await asyncio.wait_for(loops[second].running.wait(), WAIT)
        assert loops[first].stopped.is_set()
    finally:
        await first.close()
        await second.close()
        await second.db.dispose()


@pytest.mark.postgres
async def test_a_leader_whose_connection_is_killed_stops_its_loops(database: Database) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has no leader connection")
    first, second = Leader(database, interval=INTERVAL), Leader(Database(database.url), interval=INTERVAL)
    loops = {first: Loop(), second: Loop()}
    for leader, loop in loops.items():
        leader.run_while_leading("reconciler", loop.factory())
    await first.start()
    await asyncio.wait_for(first.wait_elected(), WAIT)
    await asyncio.wait_for(loops[first].running.wait(), WAIT)
    await second.start()
    try:
        await _terminate(database, first)

        await asyncio.wait_for(loops[first].stopped.wait(), WAIT)
        # exactly one leads again (either may win the race for the freed lock), and runs the loop
        await _until(lambda: first.is_leader or second.is_leader)
        leading = first if first.is_leader else second
        await asyncio.wait_for(loops[leading].running.wait(), WAIT)
        await asyncio.sleep(INTERVAL * 10)
        assert first.is_leader != second.is_leader
    finally:
        await first.close()
        await second.close()
        await second.db.dispose()


async def _terminate(database: Database, leader: Leader) -> None:
    """pg_terminate_backend on `leader`'s own connection (the other one is left alone)."""
    pid = leader._conn.get_server_pid()
    conn = await asyncpg.connect(support.pg_url(database.url.rpartition("/")[2]), timeout=10)
    try:
        name = await conn.fetchval("SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid)
        assert name == APPLICATION_NAME
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


@pytest.mark.postgres
def test_two_migrations_at_once_both_succeed_and_apply_each_revision_once() -> None:
    support.require_pg()
    name = support.create_pg_database("ikoma_migrate")
    url = support.pg_url(name)

    async def two_at_once() -> None:
        async with asyncio.timeout(120):  # without the lock the two migrators block each other
            await asyncio.gather(migrate.upgrade(url), migrate.upgrade(url))

    try:
        asyncio.run(two_at_once())

        report = asyncio.run(migrate.check(url))
        assert report.ok, report.problems
    finally:
        support.drop_pg_database(name)


async def test_migrating_a_current_database_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ikoma.db'}"
    await migrate.upgrade(url)
    await migrate.upgrade(url)
    assert (await migrate.check(url)).ok
