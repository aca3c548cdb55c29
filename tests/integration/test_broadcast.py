"""The broadcaster (services/broadcast.py): wake-ups delivered after commit, across processes on
PostgreSQL (two Broadcast objects on one database stand for two API processes: each has its own
listening connection), and a lost listening connection restored with a resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from ikoma.domain.errors import Unauthorized
from ikoma.metrics import Metrics
from ikoma.services import doorbell, runners
from ikoma.services.broadcast import APPLICATION_NAME, CLAIMS, CREDENTIALS, Broadcast
from ikoma.services.dispatch import Dispatcher
from ikoma.services.wakeups import BROADCAST, Wakeups
from ikoma.storage.database import Database
from tests import support
from tests.integration import helpers as h

WAIT = 30.0  # generous: only a failure waits this long
CHANNEL = "ikoma_test"


class Inbox:
    """What a subscriber received; `None` is a resync."""

    def __init__(self) -> None:
        self.messages: list[str | None] = []
        self._changed = asyncio.Event()

    def __call__(self, payload: str | None) -> None:
        self.messages.append(payload)
        self._changed.set()

    async def wait_for(self, accept: Callable[[list[str | None]], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not accept(self.messages):
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def broadcast(database: Database) -> AsyncIterator[Broadcast]:
    b = Broadcast(database)
    await b.start()
    yield b
    await b.close()


async def _other_process(database: Database) -> Broadcast:
    """A second process's broadcaster on the same database, listening already."""
    other = Broadcast(Database(database.url))
    await other.start()
    assert await other.wait_connected(within=WAIT)
    return other


async def _listening(b: Broadcast, channel: str) -> None:
    """Wait until the listening connection LISTENs to `channel` (subscribing is asynchronous)."""
    async with asyncio.timeout(WAIT):
        while channel not in b._listening:  # noqa: ASYNC110 - polled: the connection task has no signal for it
            await asyncio.sleep(0.01)


async def test_a_notification_is_delivered_when_its_transaction_commits(
    database: Database, broadcast: Broadcast
) -> None:
    inbox = Inbox()
    broadcast.subscribe(CHANNEL, inbox)

    async with database.write() as tx:
        await broadcast.notify(tx, CHANNEL, "order-1")
        assert inbox.messages == []  # not before the commit

    assert inbox.messages == ["order-1"]


async def test_a_rolled_back_transaction_notifies_nobody(database: Database, broadcast: Broadcast) -> None:
    inbox = Inbox()
    broadcast.subscribe(CHANNEL, inbox)

    async def failing_change() -> None:
        async with database.write() as tx:
            await broadcast.notify(tx, CHANNEL, "order-1")
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        await failing_change()

    async with database.write() as tx:
        await broadcast.notify(tx, CHANNEL, "order-2")
    assert inbox.messages == ["order-2"]


async def test_a_closed_subscription_hears_nothing_more(database: Database, broadcast: Broadcast) -> None:
    inbox = Inbox()
    subscription = broadcast.subscribe(CHANNEL, inbox)
    broadcast.publish(CHANNEL, "first")
    subscription.close()
    broadcast.publish(CHANNEL, "second")
    assert inbox.messages == ["first"]


async def test_payloads_that_postgresql_could_not_carry_are_refused(broadcast: Broadcast) -> None:
    with pytest.raises(ValueError, match="one line"):
        broadcast.publish(CHANNEL, "two\nlines")
    with pytest.raises(ValueError, match="one line"):
        broadcast.publish(CHANNEL, "x" * 8000)
    with pytest.raises(ValueError, match="channel"):
        broadcast.subscribe("Not A Channel;", Inbox())


@pytest.mark.postgres
async def test_a_message_reaches_the_other_processes_once_and_not_its_own_twice(
    database: Database, broadcast: Broadcast
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has one process")
    here, there = Inbox(), Inbox()
    broadcast.subscribe(CHANNEL, here)
    other = await _other_process(database)
    try:
        other.subscribe(CHANNEL, there)
        await _listening(other, CHANNEL)
        assert await broadcast.wait_connected(within=WAIT)
        await _listening(broadcast, CHANNEL)

        async with database.write() as tx:
            await broadcast.notify(tx, CHANNEL, "in-a-transaction")
        broadcast.publish(CHANNEL, "after-a-commit")
        broadcast.publish(CHANNEL, "after-a-commit")  # sent once per batch

        await there.wait_for(lambda got: "in-a-transaction" in got and "after-a-commit" in got)
        async with database.write() as tx:  # a marker: everything sent before it has arrived
            await broadcast.notify(tx, CHANNEL, "marker")
        await there.wait_for(lambda got: "marker" in got)
        await here.wait_for(lambda got: "marker" in got)
        assert here.messages == ["in-a-transaction", "after-a-commit", "after-a-commit", "marker"]
        assert there.messages.count("after-a-commit") == 1
        assert there.messages.count("in-a-transaction") == 1
    finally:
        await other.close()
        await other.db.dispose()


@pytest.mark.postgres
async def test_a_killed_listening_connection_comes_back_and_its_listeners_resync(
    database: Database, broadcast: Broadcast
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has no listening connection")
    inbox = Inbox()
    broadcast.subscribe(CHANNEL, inbox)
    other = await _other_process(database)
    try:
        assert await broadcast.wait_connected(within=WAIT)
        await _listening(broadcast, CHANNEL)
        generation = broadcast.generation

        await _terminate_listeners(database)

        await inbox.wait_for(lambda got: None in got)  # told to re-read what it may have missed
        assert broadcast.reliable
        assert broadcast.generation > generation
        async with other.db.write() as tx:  # the other process's messages arrive again
            await other.notify(tx, CHANNEL, "after-the-cut")
        await inbox.wait_for(lambda got: "after-the-cut" in got)
    finally:
        await other.close()
        await other.db.dispose()


async def _terminate_listeners(database: Database) -> None:
    """pg_terminate_backend on every broadcast listening connection of this test's database."""
    name = database.url.rpartition("/")[2]
    conn = await asyncpg.connect(support.pg_url(name), timeout=10)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
        assert killed >= 1
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_an_order_created_in_another_process_wakes_a_claim_waiting_here(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite has one process")
    # no doorbell read during the test: only the other process's message can wake the claim
    monkeypatch.setattr(doorbell, "FALLBACK_POLL_SECONDS", 3600.0)
    pair = await h.make_pair(database)
    here_metrics = Metrics()
    here_broadcast = Broadcast(database, metrics=here_metrics)
    await here_broadcast.start()
    dispatcher = Dispatcher(
        database,
        claim_lease=h.CLAIM_LEASE,
        wakeups=Wakeups(here_broadcast),
        metrics=here_metrics,
        broadcast=here_broadcast,
    )
    other = await _other_process(database)
    try:
        assert await here_broadcast.wait_connected(within=WAIT)
        await _listening(here_broadcast, CLAIMS)
        identity = await dispatcher.authenticate(pair.runner_id, pair.token)
        waiting = asyncio.create_task(dispatcher.claim_next(identity, wait=WAIT))
        await asyncio.sleep(0.2)  # the claim looks, finds nothing, and waits

        await h.make_order(other.db, pair.server_id, wakeups=Wakeups(other))

        order = await asyncio.wait_for(waiting, timeout=WAIT)
        assert order is not None
        assert here_metrics.claim_wakeups.labels(source=BROADCAST)._value.get() == 1
        assert here_metrics.broadcasts_received.labels(channel=CLAIMS)._value.get() >= 1
    finally:
        await dispatcher.close()
        await other.close()
        await other.db.dispose()
        await here_broadcast.close()


async def test_a_revoked_runner_is_refused_by_the_token_cache_of_every_process(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    here_broadcast = Broadcast(database)
    await here_broadcast.start()
    dispatcher = Dispatcher(
        database,
        claim_lease=h.CLAIM_LEASE,
        wakeups=Wakeups(here_broadcast),
        metrics=Metrics(),
        broadcast=here_broadcast,
    )
    other = here_broadcast if database.is_sqlite else await _other_process(database)
    try:
        if not database.is_sqlite:
            assert await here_broadcast.wait_connected(within=WAIT)
            await _listening(here_broadcast, CREDENTIALS)
        await dispatcher.authenticate(pair.runner_id, pair.token)  # verified once: cached
        assert dispatcher.credentials.lookup(pair.runner_id, pair.token) is not None

        await runners.revoke_runner(
            other.db,
            h.make_reconciler(other.db),
            pair.runner_id,
            actor="admin",
            stale_after=h.STALE_AFTER,
            broadcast=other,
        )

        async with asyncio.timeout(WAIT):  # at once here; through PostgreSQL from another process
            while dispatcher.credentials.lookup(pair.runner_id, pair.token) is not None:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.01)
        with pytest.raises(Unauthorized):
            await dispatcher.authenticate(pair.runner_id, pair.token)
    finally:
        await dispatcher.close()
        if other is not here_broadcast:
            await other.close()
            await other.db.dispose()
        await here_broadcast.close()
