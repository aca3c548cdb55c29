"""After the API was away, runners get `stale_after` to reach it again before silence is judged."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import OrderStatus
from ikoma.settings import SettingsError, load_settings
from ikoma.storage.database import Database
from tests.integration import helpers as h

STALE_AFTER = 30.0


async def _running(database: Database) -> tuple[h.Pair, dict[str, Any]]:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    running = await h.claim_and_start(h.make_dispatcher(database), pair.identity)
    return pair, {**order, "lease_token": running["lease_token"]}


async def test_a_run_silent_during_the_outage_is_not_stale_right_after_the_api_starts(
    database: Database,
) -> None:
    """Scenario 7: the API was down longer than stale_after; its runner kept the step alive."""
    pair, order = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER * 3)
    reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)
    reconciler.started_at = time.monotonic()  # what run_forever records when the API starts

    summary = await reconciler.tick()

    assert summary.stale == []
    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.RUNNING
    # the runner is back: its heartbeat and completion go through under its lease
    dispatcher = h.make_dispatcher(database)
    await dispatcher.heartbeat(pair.identity, order["id"], order["lease_token"])
    done = await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])
    assert done["status"] == OrderStatus.SUCCEEDED
    assert done["attempt"] == 1


async def test_a_run_still_silent_once_the_grace_is_over_goes_stale(database: Database) -> None:
    _, order = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER * 3)
    reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)
    reconciler.started_at = time.monotonic() - STALE_AFTER - 1

    summary = await reconciler.tick()

    assert summary.stale == [order["id"]]


async def test_an_expired_claim_waits_for_the_grace_too(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    await h.backdate(database, order["id"], lease_expires_at=STALE_AFTER)
    reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)
    reconciler.started_at = time.monotonic()

    assert (await reconciler.tick()).requeued == []
    started = await dispatcher.start(pair.identity, order["id"], claimed["lease_token"])
    assert started["status"] == OrderStatus.RUNNING


def test_in_grace_is_measured_from_the_start_of_reconciling() -> None:
    reconciler = h.make_reconciler(None, stale_after=10.0)  # type: ignore[arg-type]
    assert not reconciler.in_grace()  # ticks driven by hand (tests, tools) have no grace
    reconciler.started_at = 100.0
    assert reconciler.in_grace(now=109.9)
    assert not reconciler.in_grace(now=110.0)


@pytest.mark.parametrize(("stale_after", "claim_lease"), [(4, 60), (1, 3), (2, 6)])
def test_a_stale_threshold_not_above_the_runners_heartbeat_is_refused_at_start(
    stale_after: float, claim_lease: float
) -> None:
    with pytest.raises(SettingsError, match="IKOMA_STALE_AFTER"):
        load_settings(stale_after=stale_after, claim_lease=claim_lease)


def test_a_stale_threshold_above_the_runners_heartbeat_is_accepted() -> None:
    assert load_settings(stale_after=5, claim_lease=60).stale_after == 5
    assert load_settings(stale_after=3, claim_lease=6).stale_after == 3


async def test_a_late_success_wins_over_a_retry_nobody_claimed_yet(database: Database) -> None:
    """Scenario 13: the run was judged lost and requeued; its spooled success arrives before any claim."""
    pair, order = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)
    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()
    assert summary.retried == [order["id"]]
    dispatcher = h.make_dispatcher(database)

    done = await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])
    again = await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])

    assert done["status"] == again["status"] == OrderStatus.SUCCEEDED
    assert done["status_reason"] == "late_completion"
    assert done["attempt"] == 1  # the step ran once; no second attempt
    assert await dispatcher.claim_once(pair.identity) is None
    assert (await h.transitions(database, order["id"]))[-3:] == [
        ("RUNNING", "STALE", "heartbeat_lost"),
        ("STALE", "QUEUED", "retry"),
        ("QUEUED", "SUCCEEDED", "late_completion"),
    ]


async def test_a_late_result_after_the_retry_was_claimed_is_refused(database: Database) -> None:
    pair, order = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)
    await h.make_reconciler(database, stale_after=STALE_AFTER).tick()
    await h.backdate(database, order["id"], not_before=1)
    dispatcher = h.make_dispatcher(database)
    retry = await dispatcher.claim_once(pair.identity)
    assert retry is not None
    assert retry["attempt"] == 2

    with pytest.raises(Conflict) as refused:
        await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])

    assert refused.value.reason == "stale_lease"
    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.CLAIMED


async def test_a_late_failure_leaves_the_scheduled_retry_in_place(database: Database) -> None:
    pair, order = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)
    await h.make_reconciler(database, stale_after=STALE_AFTER).tick()
    dispatcher = h.make_dispatcher(database)

    with pytest.raises(Conflict):
        await h.complete(
            dispatcher,
            pair.identity,
            order["id"],
            lease_token=order["lease_token"],
            outcome=OrderStatus.FAILED,
        )

    assert (await h.fetch_order(database, order["id"]))["status"] == OrderStatus.QUEUED


def test_the_grace_starts_again_when_the_api_begins_to_serve() -> None:
    """A slow start-up must not eat the grace: it counts from the moment requests are accepted."""
    reconciler = h.make_reconciler(None, stale_after=10.0)  # type: ignore[arg-type]
    reconciler.started_at = 100.0  # run_forever began while start-up went on
    assert not reconciler.in_grace(now=110.5)
    reconciler.begin_grace()  # the API accepts requests from now on
    assert reconciler.started_at is not None
    assert reconciler.in_grace(now=reconciler.started_at + 9.9)
    assert not reconciler.in_grace(now=reconciler.started_at + 10.0)
