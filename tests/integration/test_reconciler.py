"""The reconciler on both backends: lease expiry, lost runs, timeouts and cancels, by the database clock."""

from __future__ import annotations

import time as time_module
import typing
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, event, update

from ikoma.api.schemas import CompleteBody, LeaseBody, RunnerHeartbeat
from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import orders
from ikoma.services.dispatch import Dispatcher
from ikoma.storage.database import Database
from ikoma.storage.tables import orders as orders_table
from tests.integration import helpers as h

S = OrderStatus
STALE_AFTER = 30.0


async def _claimed(database: Database, **order_fields: Any) -> tuple[h.Pair, dict[str, Any], dict[str, Any]]:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, **order_fields)
    claimed = await h.make_dispatcher(database).claim_once(pair.identity)
    assert claimed is not None
    return pair, order, claimed


async def _running(database: Database, **order_fields: Any) -> tuple[h.Pair, dict[str, Any], Dispatcher]:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, **order_fields)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    return pair, {**order, "lease_token": running["lease_token"]}, dispatcher


# --- expired claims (scenario 4) -----------------------------------------------------------------


async def test_claim_one_second_past_its_lease_is_requeued_and_its_attempt_closed(database: Database) -> None:
    pair, order, claimed = await _claimed(database)
    await h.backdate(database, order["id"], lease_expires_at=1)

    summary = await h.make_reconciler(database).tick()

    assert summary.requeued == [order["id"]]
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.QUEUED
    assert after["status_reason"] == "lease_expired"
    assert after["lease_token"] is None
    assert after["lease_expires_at"] is None
    assert after["attempt"] == 1  # the lost claim stays counted
    assert after["executions"] == 0  # ... but it never ran
    [attempt] = after["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("LEASE_EXPIRED", "lease_expired")
    assert attempt["lease_token"] == claimed["lease_token"]
    assert attempt["ended_at"] is not None
    events = await orders.list_events(database, order["id"])
    assert (events[-1]["from_status"], events[-1]["to_status"], events[-1]["reason"]) == (
        "CLAIMED",
        "QUEUED",
        "lease_expired",
    )
    assert events[-1]["actor"] == "reconciler"
    assert events[-1]["attempt"] == 1
    requeued = await h.make_dispatcher(database).claim_once(pair.identity)
    assert requeued is not None
    assert requeued["attempt"] == 2


async def test_claim_five_seconds_before_its_lease_ends_is_left_alone(database: Database) -> None:
    _, order, claimed = await _claimed(database)
    await h.backdate(database, order["id"], lease_expires_at=-5)
    events_before = await h.transitions(database, order["id"])

    summary = await h.make_reconciler(database).tick()

    assert summary.changed == 0
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.CLAIMED
    assert after["lease_token"] == claimed["lease_token"]
    assert await h.transitions(database, order["id"]) == events_before


async def test_expired_claim_of_a_single_attempt_playbook_is_requeued_because_nothing_ran(
    database: Database,
) -> None:
    _, order, _ = await _claimed(database, max_attempts=1)
    await h.backdate(database, order["id"], lease_expires_at=1)

    await h.make_reconciler(database).tick()

    assert (await h.fetch_order(database, order["id"]))["status"] == S.QUEUED


async def test_only_the_expired_claims_among_many_are_rescued(database: Database) -> None:
    pair = await h.make_pair(database)
    created = [await h.make_order(database, pair.server_id) for _ in range(4)]
    dispatcher = h.make_dispatcher(database)
    for _ in created:
        await dispatcher.claim_once(pair.identity)
    offsets = {created[0]["id"]: 1, created[1]["id"]: 120, created[2]["id"]: -5, created[3]["id"]: -55}
    for order_id, seconds_ago in offsets.items():
        await h.backdate(database, order_id, lease_expires_at=seconds_ago)

    summary = await h.make_reconciler(database).tick()

    assert sorted(summary.requeued) == sorted([created[0]["id"], created[1]["id"]])
    statuses = [(await h.fetch_order(database, o["id"]))["status"] for o in created]
    assert statuses == [S.QUEUED, S.QUEUED, S.CLAIMED, S.CLAIMED]


async def test_long_running_order_that_heartbeats_is_not_timed_out_or_stale(database: Database) -> None:
    """Scenario 4: a playbook with a long timeout, started an hour ago, still heartbeating."""
    _, order, _ = await _running(database, timeout_seconds=86400)
    await h.backdate(database, order["id"], started_at=3600, lease_expires_at=30, last_heartbeat_at=5)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.changed == 0
    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING


# --- lost runs (scenario 2/7) --------------------------------------------------------------------


async def test_silent_running_order_goes_stale_then_back_to_the_queue_while_attempts_remain(
    database: Database,
) -> None:
    pair, order, _ = await _running(database, max_attempts=3)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.stale == [order["id"]]
    assert summary.retried == [order["id"]]
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.QUEUED
    assert after["status_reason"] == "retry"
    assert after["lease_token"] is None
    assert 0 < await h.seconds_until(database, order["id"], "not_before") <= 2.0
    [attempt] = after["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("STALE", "heartbeat_lost")
    events = await orders.list_events(database, order["id"])
    assert [(e["from_status"], e["to_status"], e["reason"], e["actor"]) for e in events[-2:]] == [
        ("RUNNING", "STALE", "heartbeat_lost", "reconciler"),
        ("STALE", "QUEUED", "retry", "reconciler"),
    ]
    assert events[-1]["details"] == {"delaySeconds": 2.0, "executions": 1}
    await h.backdate(database, order["id"], not_before=1)
    again = await h.make_dispatcher(database).claim_once(pair.identity)
    assert again is not None
    assert again["attempt"] == 2


async def test_silent_running_order_with_attempts_spent_ends_stale(database: Database) -> None:
    pair, order, _ = await _running(database, max_attempts=1)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.stale == [order["id"]]
    assert summary.retried == []
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.STALE
    assert after["status_reason"] == "heartbeat_lost"
    assert after["finished_at"] is not None
    assert (await h.transitions(database, order["id"]))[-1] == ("RUNNING", "STALE", "heartbeat_lost")
    assert await h.make_dispatcher(database).claim_once(pair.identity) is None


async def test_running_order_just_inside_the_stale_window_is_left_alone(database: Database) -> None:
    _, order, _ = await _running(database)
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER - 2)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.changed == 0
    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING


async def test_heartbeating_order_is_never_stale_across_ticks_and_reconciler_restarts(
    database: Database,
) -> None:
    """Scenario 7: each heartbeat lands just before the stale window closes; no tick may call it lost."""
    pair, order, dispatcher = await _running(database, max_attempts=1, timeout_seconds=86400)
    await h.backdate(database, order["id"], started_at=10 * STALE_AFTER)
    reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)

    for tick in range(12):
        if tick % 4 == 0:
            reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)  # an API restart
        # the previous heartbeat is almost stale when the tick runs
        await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER - 1)
        summary = await reconciler.tick()
        assert summary.changed == 0, f"tick {tick} changed {summary}"
        beat = await dispatcher.heartbeat(pair.identity, order["id"], order["lease_token"])
        assert beat["status"] == S.RUNNING

    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING
    assert [t for t in await h.transitions(database, order["id"]) if t[2] == "heartbeat_lost"] == []


async def test_running_order_that_never_heartbeated_is_judged_from_its_start(database: Database) -> None:
    _, order, _ = await _running(database, max_attempts=1)
    await h.backdate(database, order["id"], started_at=STALE_AFTER + 1)
    async with database.write() as tx:
        await tx.execute(
            update(orders_table).where(orders_table.c.id == order["id"]).values(last_heartbeat_at=None)
        )

    await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert (await h.fetch_order(database, order["id"]))["status"] == S.STALE


# --- timeouts --------------------------------------------------------------------------------------


async def test_running_order_past_its_timeout_ends_timeout_and_is_not_retried(database: Database) -> None:
    pair, order, _ = await _running(database, timeout_seconds=60, max_attempts=3)
    await h.backdate(database, order["id"], started_at=61, last_heartbeat_at=1)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.timed_out == [order["id"]]
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.TIMEOUT
    assert after["status_reason"] == "timed_out"
    assert after["finished_at"] is not None
    assert (after["attempts"][0]["outcome"], after["attempts"][0]["reason"]) == ("TIMEOUT", "timed_out")
    assert (await h.transitions(database, order["id"]))[-1] == ("RUNNING", "TIMEOUT", "timed_out")
    assert await h.make_dispatcher(database).claim_once(pair.identity) is None


async def test_running_order_just_inside_its_timeout_is_left_alone(database: Database) -> None:
    _, order, _ = await _running(database, timeout_seconds=60)
    await h.backdate(database, order["id"], started_at=58, last_heartbeat_at=1)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert summary.changed == 0
    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING


async def test_runner_completing_after_its_order_timed_out_is_refused(database: Database) -> None:
    pair, order, dispatcher = await _running(database, timeout_seconds=60)
    await h.backdate(database, order["id"], started_at=61, last_heartbeat_at=1)
    await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    with pytest.raises(Conflict) as refused:
        await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])

    assert refused.value.reason == "invalid_status"
    assert (await h.fetch_order(database, order["id"]))["status"] == S.TIMEOUT


# --- cancels (scenario 6) ----------------------------------------------------------------------------


async def test_cancel_requested_on_a_dead_runner_ends_cancelled_and_is_never_requeued(
    database: Database,
) -> None:
    pair, order, _ = await _running(database, max_attempts=3)
    requested = await orders.cancel_order(database, order["id"], reason="wrong server")
    assert requested["status"] == S.RUNNING
    assert requested["cancel_requested"] is True
    await h.backdate(database, order["id"], last_heartbeat_at=STALE_AFTER + 1)
    reconciler = h.make_reconciler(database, stale_after=STALE_AFTER)

    summary = await reconciler.tick()
    later = await reconciler.tick()

    assert summary.cancelled == [order["id"]]
    assert summary.stale == summary.retried == []
    assert later.changed == 0
    after = await h.fetch_order(database, order["id"])
    assert after["status"] == S.CANCELLED
    assert after["status_reason"] == "heartbeat_lost"
    assert (after["attempts"][0]["outcome"], after["attempts"][0]["reason"]) == (
        "CANCELLED",
        "heartbeat_lost",
    )
    assert await h.transitions(database, order["id"]) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
        ("CLAIMED", "RUNNING", "started"),
        ("RUNNING", "RUNNING", "cancel_requested"),
        ("RUNNING", "CANCELLED", "heartbeat_lost"),
    ]
    assert await h.make_dispatcher(database).claim_once(pair.identity) is None


async def test_cancel_of_a_claimed_order_ends_it_at_once_and_closes_its_attempt(database: Database) -> None:
    pair, order, claimed = await _claimed(database)

    cancelled = await orders.cancel_order(database, order["id"], reason="operator changed their mind")

    assert cancelled["status"] == S.CANCELLED
    assert cancelled["status_reason"] == "cancelled_by_user"
    assert cancelled["finished_at"] is not None
    [attempt] = (await h.fetch_order(database, order["id"]))["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("CANCELLED", "cancelled_by_user")
    events = await orders.list_events(database, order["id"])
    assert (events[-1]["from_status"], events[-1]["to_status"], events[-1]["reason"]) == (
        "CLAIMED",
        "CANCELLED",
        "cancelled_by_user",
    )
    assert events[-1]["details"] == {"reason": "operator changed their mind"}
    with pytest.raises(Conflict) as refused:
        await h.make_dispatcher(database).start(pair.identity, order["id"], claimed["lease_token"])
    assert refused.value.reason == "invalid_status"
    # even once its lease has run out, a cancelled claim is not requeued
    await h.backdate(database, order["id"], lease_expires_at=10)
    assert (await h.make_reconciler(database).tick()).changed == 0


async def test_cancel_of_a_queued_order_ends_it_at_once(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)

    cancelled = await orders.cancel_order(database, order["id"], reason=None)

    assert cancelled["status"] == S.CANCELLED
    assert (await h.transitions(database, order["id"]))[-1] == ("QUEUED", "CANCELLED", "cancelled_by_user")
    assert await h.make_dispatcher(database).claim_once(pair.identity) is None


async def test_cancel_of_an_ended_order_is_invalid_status(database: Database) -> None:
    pair, order, dispatcher = await _running(database)
    await h.complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])

    with pytest.raises(Conflict) as refused:
        await orders.cancel_order(database, order["id"], reason=None)

    assert refused.value.reason == "invalid_status"
    assert (await h.fetch_order(database, order["id"]))["status"] == S.SUCCEEDED


# --- one tick, many orders -----------------------------------------------------------------------------


async def test_each_reconciler_transition_is_recorded_with_its_reason(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    expired_claim = await h.make_order(database, pair.server_id)
    lost_run = await h.make_order(database, pair.server_id, max_attempts=1)
    overdue = await h.make_order(database, pair.server_id, timeout_seconds=60)
    cancel_lost = await h.make_order(database, pair.server_id)
    healthy = await h.make_order(database, pair.server_id)
    assert await dispatcher.claim_once(pair.identity) is not None
    for _ in range(4):
        await h.claim_and_start(dispatcher, pair.identity)
    await orders.cancel_order(database, cancel_lost["id"], reason=None)
    await h.backdate(database, expired_claim["id"], lease_expires_at=1)
    await h.backdate(database, lost_run["id"], last_heartbeat_at=STALE_AFTER + 1)
    await h.backdate(database, overdue["id"], started_at=61)
    await h.backdate(database, cancel_lost["id"], last_heartbeat_at=STALE_AFTER + 1)

    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert (summary.requeued, summary.stale, summary.timed_out, summary.cancelled) == (
        [expired_claim["id"]],
        [lost_run["id"]],
        [overdue["id"]],
        [cancel_lost["id"]],
    )
    expected = {
        expired_claim["id"]: ("CLAIMED", "QUEUED", "lease_expired"),
        lost_run["id"]: ("RUNNING", "STALE", "heartbeat_lost"),
        overdue["id"]: ("RUNNING", "TIMEOUT", "timed_out"),
        cancel_lost["id"]: ("RUNNING", "CANCELLED", "heartbeat_lost"),
        healthy["id"]: ("CLAIMED", "RUNNING", "started"),
    }
    for order_id, last in expected.items():
        assert (await h.transitions(database, order_id))[-1] == last


# --- clock skew (scenario 8) -------------------------------------------------------------------------


@pytest.fixture
def bound_parameters() -> Iterator[list[Any]]:
    """Every parameter value bound into a SQL statement while the test runs, on any engine."""
    seen: list[Any] = []

    def capture(
        _conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, executemany: bool
    ) -> None:
        batches = parameters if executemany else [parameters]
        for batch in batches:
            seen.extend(batch.values() if isinstance(batch, dict) else batch)

    event.listen(Engine, "before_cursor_execute", capture)
    yield seen
    event.remove(Engine, "before_cursor_execute", capture)


async def test_claims_leases_and_expiry_never_bind_a_time_from_this_process(
    database: Database, bound_parameters: list[Any]
) -> None:
    """Every `now` is computed by the database: no statement carries a timestamp taken by Python."""
    pair = await h.make_pair(database)
    expiring = await h.make_order(database, pair.server_id)
    lost = await h.make_order(database, pair.server_id, max_attempts=2)
    dispatcher = h.make_dispatcher(database)
    bound_parameters.clear()

    claimed = await dispatcher.claim_once(pair.identity)
    running = await h.claim_and_start(dispatcher, pair.identity)
    await dispatcher.heartbeat(pair.identity, lost["id"], running["lease_token"])
    await dispatcher.record_heartbeat(
        pair.identity, version="1.4.0", hostname="web-1", capabilities=["shell"]
    )
    await h.backdate(database, expiring["id"], lease_expires_at=1)
    await h.backdate(database, lost["id"], last_heartbeat_at=STALE_AFTER + 1)
    summary = await h.make_reconciler(database, stale_after=STALE_AFTER).tick()

    assert claimed is not None
    assert summary.requeued == [expiring["id"]]
    assert summary.retried == [lost["id"]]
    assert bound_parameters, "the listener saw no statement"
    clock_values = [p for p in bound_parameters if isinstance(p, datetime | date | time)]
    assert clock_values == []


async def test_expiry_follows_the_database_timestamps_whatever_the_process_clock_says(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process clock is ten minutes fast; the lease still expires exactly when the database says."""
    real_time = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real_time() + 600)
    _, order, _ = await _claimed(database)
    reconciler = h.make_reconciler(database)

    await h.backdate(database, order["id"], lease_expires_at=-5)
    assert (await reconciler.tick()).changed == 0
    await h.backdate(database, order["id"], lease_expires_at=1)
    assert (await reconciler.tick()).requeued == [order["id"]]


def _time_fields(model: type[BaseModel]) -> list[str]:
    hints = typing.get_type_hints(model, include_extras=True)
    return [
        name
        for name in model.model_fields
        if any(kind in str(hints[name]) for kind in ("datetime", "date", "time"))
    ]


@pytest.mark.parametrize("model", [RunnerHeartbeat, LeaseBody, CompleteBody], ids=lambda m: m.__name__)
def test_no_runner_request_carries_a_client_time(model: type[BaseModel]) -> None:
    assert _time_fields(model) == []


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (RunnerHeartbeat, {"version": "1.4.0", "clientTime": "2020-01-01T00:00:00Z"}),
        (LeaseBody, {"leaseExpiresAt": "2099-01-01T00:00:00Z"}),
        (CompleteBody, {"status": "SUCCEEDED", "report": {}, "finishedAt": "2020-01-01T00:00:00Z"}),
    ],
    ids=["heartbeat", "lease", "complete"],
)
def test_runner_request_with_a_client_time_field_is_refused(
    model: type[BaseModel], body: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert [e["type"] for e in refused.value.errors()] == ["extra_forbidden"]
