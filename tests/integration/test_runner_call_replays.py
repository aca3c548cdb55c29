"""Runner calls whose answer was lost after the commit: the same call again answers as the first did."""

from __future__ import annotations

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import OrderStatus
from ikoma.storage.database import Database
from tests.integration import helpers as h


async def test_start_retried_with_the_same_lease_answers_the_running_order_once(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None

    first = await dispatcher.start(pair.identity, order["id"], claimed["lease_token"])
    again = await dispatcher.start(pair.identity, order["id"], claimed["lease_token"])

    assert again["status"] == first["status"] == OrderStatus.RUNNING.value
    assert again["attempt"] == first["attempt"] == 1
    assert again["executions"] == first["executions"] == 1  # started once, not twice
    assert await h.transitions(database, order["id"]) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
        ("CLAIMED", "RUNNING", "started"),
    ]


async def test_start_retried_with_another_lease_token_is_still_refused(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    await dispatcher.start(pair.identity, order["id"], claimed["lease_token"])

    with pytest.raises(Conflict) as refused:
        await dispatcher.start(pair.identity, order["id"], "00000000-0000-4000-8000-000000000000")
    assert refused.value.reason == "stale_lease"


async def test_tokenless_start_of_a_running_order_is_not_replayed(database: Database) -> None:
    """Without the lease token a second start cannot be told from a second runner process: refused."""
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    assert await dispatcher.claim_once(pair.identity) is not None
    await dispatcher.start(pair.identity, order["id"], None)

    with pytest.raises(Conflict) as refused:
        await dispatcher.start(pair.identity, order["id"], None)
    assert refused.value.reason == "invalid_status"
