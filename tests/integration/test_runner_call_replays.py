"""Runner calls whose answer was lost after the commit: the same call again answers as the first did."""

from __future__ import annotations

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services.dispatch import RunnerIdentity
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


async def test_tokenless_zombie_cannot_touch_the_same_runners_newer_attempt(database: Database) -> None:
    """Scenario 3 without a token: the runner's process of attempt 1 wakes up after the same runner
    identity reclaimed the order as attempt 2; its tokenless calls are refused, the holder's go through."""
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    first = await dispatcher.claim_once(pair.identity)
    assert first is not None
    await h.backdate(database, order["id"], lease_expires_at=1)
    await h.make_reconciler(database).tick()
    second = await dispatcher.claim_once(pair.identity)
    assert second is not None
    assert second["attempt"] == 2

    with pytest.raises(Conflict) as refused:
        await dispatcher.start(pair.identity, order["id"], None)
    assert refused.value.reason == "lease_token_required"
    started = await dispatcher.start(pair.identity, order["id"], second["lease_token"])
    assert started["attempt"] == 2
    with pytest.raises(Conflict) as refused:
        await dispatcher.heartbeat(pair.identity, order["id"], None)
    assert refused.value.reason == "lease_token_required"
    with pytest.raises(Conflict) as refused:
        await h.complete(dispatcher, pair.identity, order["id"], lease_token=None)
    assert refused.value.reason == "lease_token_required"
    done = await h.complete(dispatcher, pair.identity, order["id"], lease_token=second["lease_token"])
    assert done["status"] == OrderStatus.SUCCEEDED


async def test_tokenless_runner_still_runs_a_retry_whose_first_attempt_was_another_runners(
    database: Database,
) -> None:
    """The tokenless rule is per runner: a seed-style runner's first attempt at an order is its own."""
    runner_a = await h.make_runner(database, "runner-a")
    runner_b = await h.make_runner(database, "runner-b")
    server = await h.make_server(database, "web-1", runner_id=runner_a["id"])
    order = await h.make_order(database, server["id"], max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    a = RunnerIdentity(runner_id=runner_a["id"], server_id=server["id"])
    b = RunnerIdentity(runner_id=runner_b["id"], server_id=server["id"])
    assert await dispatcher.claim_once(a) is not None
    await h.backdate(database, order["id"], lease_expires_at=1)
    await h.make_reconciler(database).tick()
    await h.attach(database, server["id"], None)
    await h.attach(database, server["id"], runner_b["id"])
    claimed = await dispatcher.claim_once(b)
    assert claimed is not None
    assert claimed["attempt"] == 2

    await dispatcher.start(b, order["id"], None)
    done = await h.complete(dispatcher, b, order["id"], lease_token=None)

    assert done["status"] == OrderStatus.SUCCEEDED
