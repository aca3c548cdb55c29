"""Cursor paging never skips nor repeats an event while several writers commit concurrently.

On PostgreSQL the writers are real concurrent transactions on their own connections, and each holds
its transaction open a random moment after its events were inserted: without the flush's ordering
guard a reader would see a larger id committed first, page past it, and never see the smaller one.
"""

from __future__ import annotations

import asyncio
import random

from ikoma.services import events
from ikoma.storage.database import Database, Tx
from tests.integration.helpers import make_server

WRITERS = 8
TRANSACTIONS = 40  # per writer
PAGE = 7


async def hold_open(_tx: Tx) -> None:
    """Runs after the event flush, before the commit: another writer may insert and commit meanwhile."""
    await asyncio.sleep(random.uniform(0, 0.01))  # noqa: S311 - jitter, not a secret


async def write(db: Database, server_id: str, writer: int) -> None:
    for n in range(TRANSACTIONS):
        async with db.write() as tx:
            for part in range(1 + n % 3):
                events.publish(
                    tx, "server.changed", server_id=server_id, data={"w": writer, "n": n, "p": part}
                )
            tx.before_commit(hold_open)


async def test_a_reader_paging_during_concurrent_writes_sees_every_event_once_in_id_order(
    database: Database,
) -> None:
    server_id = str((await make_server(database, "busy"))["id"])
    async with database.read() as tx:
        start = await events.last_id(tx)
    writers = [asyncio.create_task(write(database, server_id, w)) for w in range(WRITERS)]
    seen: list[int] = []
    cursor = start
    while True:
        done = all(w.done() for w in writers)  # read before the last page: nothing commits after it
        async with database.read() as tx:
            page = await events.read(tx, after=cursor, limit=PAGE)
        seen += [e.id for e in page]
        cursor = page[-1].id if page else cursor
        if done and not page:
            break
        if not page:
            await asyncio.sleep(0)
    await asyncio.gather(*writers)

    async with database.read() as tx:
        stored = [e.id for e in await events.read(tx, after=start, limit=100_000)]
    expected = WRITERS * sum(1 + n % 3 for n in range(TRANSACTIONS))
    assert len(stored) == expected
    assert seen == stored  # every committed event, once, in id order
