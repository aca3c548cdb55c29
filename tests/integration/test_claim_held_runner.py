"""A claim call reads its runner once: the authentication holds the runner's row to the commit.

`claim-next?wait=0` authenticates in the claim's transaction with the runner's row held (FOR SHARE on
PostgreSQL; SQLite has one writer), so the claim skips its separate liveness check. These prove the
check is not lost on either backend: a revocation in flight is waited for and refuses the claim, and a
revocation that comes after the authentication waits for the claim, then releases the order it took.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import update

from ikoma.domain.errors import Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import runners
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runners as runners_table
from tests.integration import helpers as h


async def _revoke(database: Database, runner_id: str) -> dict[str, Any]:
    return await runners.revoke_runner(
        database, h.make_reconciler(database), runner_id, actor="admin", stale_after=h.STALE_AFTER
    )


async def test_a_claim_call_claims_the_oldest_order_for_its_runner(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)

    async with dispatcher.runner_call(pair.runner_id, pair.token, claim=True) as (identity, tx):
        claimed = await dispatcher.claim_once(identity, tx=tx)

    assert claimed is not None
    assert (claimed["id"], claimed["runner_id"]) == (order["id"], pair.runner_id)
    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.CLAIMED


async def test_a_claim_call_racing_an_uncommitted_revocation_waits_for_it_and_is_refused(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)

    async def claim() -> Any:
        async with dispatcher.runner_call(pair.runner_id, pair.token, claim=True) as (identity, tx):
            return await dispatcher.claim_once(identity, tx=tx)

    async with database.write() as tx:
        await tx.execute(
            update(runners_table).where(runners_table.c.id == pair.runner_id).values(revoked_at=db_now())
        )
        claiming = asyncio.create_task(claim())
        await asyncio.sleep(0.3)  # let the claim reach the runner row (if it got further, it fails below)
    with pytest.raises(Unauthorized):
        await claiming

    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.QUEUED


async def test_a_revocation_after_a_claim_calls_authentication_waits_and_releases_the_claimed_order(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=2)
    dispatcher = h.make_dispatcher(database)

    async with dispatcher.runner_call(pair.runner_id, pair.token, claim=True) as (identity, tx):
        revoking = asyncio.create_task(_revoke(database, pair.runner_id))
        await asyncio.sleep(0.3)  # the revocation reaches the held row (if it got past it, it fails below)
        claimed = await dispatcher.claim_once(identity, tx=tx)
    await revoking

    # the claim happened, and the revocation, which committed after it, released what it took; had the
    # revocation slipped in before the claim, the revoked runner would hold the order now
    assert claimed is not None
    assert claimed["id"] == order["id"]
    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.QUEUED
