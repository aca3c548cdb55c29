"""The runner hot path on both backends: claim-next, start, heartbeat, complete, fencing and retries."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import orders
from ikoma.services.dispatch import Dispatcher, RunnerIdentity
from ikoma.storage.database import Database
from tests.integration import helpers as h

S = OrderStatus

# --- claim ---------------------------------------------------------------------------------------


async def test_claim_returns_the_oldest_eligible_order_first(database: Database) -> None:
    pair = await h.make_pair(database, "web-1")
    first_created = await h.make_order(database, pair.server_id, params={"message": "a"})
    second_created = await h.make_order(database, pair.server_id, params={"message": "b"})
    third_created = await h.make_order(database, pair.server_id, params={"message": "c"})
    # the creation times, not the insertion order, decide: make the last one the oldest
    await h.backdate(database, third_created["id"], created_at=300)
    await h.backdate(database, first_created["id"], created_at=200)
    await h.backdate(database, second_created["id"], created_at=100)
    dispatcher = h.make_dispatcher(database)

    claimed = [await dispatcher.claim_once(pair.identity) for _ in range(4)]

    assert [c["id"] if c else None for c in claimed] == [
        third_created["id"],
        first_created["id"],
        second_created["id"],
        None,
    ]


async def test_runner_claims_an_order_of_its_attached_server_created_before_it_was_attached(
    database: Database,
) -> None:
    server = await h.make_server(database, "db-1")
    order = await h.make_order(database, server["id"])
    assert order["runner_id"] is None
    runner = await h.make_runner(database, "runner-db-1")
    await h.attach(database, server["id"], runner["id"])
    identity = RunnerIdentity(runner_id=runner["id"], server_id=server["id"])

    claimed = await h.make_dispatcher(database).claim_once(identity)

    assert claimed is not None
    assert claimed["id"] == order["id"]
    assert claimed["runner_id"] == runner["id"]


async def test_runner_claims_an_order_addressed_to_it_on_a_server_it_is_not_attached_to(
    database: Database,
) -> None:
    home = await h.make_pair(database, "web-1")
    other_server = await h.make_server(database, "web-2")
    order = await h.make_order(database, other_server["id"], runner_id=home.runner_id)

    claimed = await h.make_dispatcher(database).claim_once(home.identity)

    assert claimed is not None
    assert claimed["id"] == order["id"]


async def test_unattached_runner_claims_only_orders_addressed_to_it(database: Database) -> None:
    runner = await h.make_runner(database, "runner-spare")
    server = await h.make_server(database, "web-3")
    await h.make_order(database, server["id"])
    mine = await h.make_order(database, server["id"], runner_id=runner["id"])
    dispatcher = h.make_dispatcher(database)
    identity = RunnerIdentity(runner_id=runner["id"], server_id=None)

    claimed = await dispatcher.claim_once(identity)

    assert claimed is not None
    assert claimed["id"] == mine["id"]
    assert await dispatcher.claim_once(identity) is None


async def test_another_runners_orders_are_never_claimed(database: Database) -> None:
    web = await h.make_pair(database, "web-1")
    db_pair = await h.make_pair(database, "db-1")
    theirs = [await h.make_order(database, db_pair.server_id) for _ in range(3)]
    dispatcher = h.make_dispatcher(database)

    assert await dispatcher.claim_once(web.identity) is None

    for order in theirs:
        assert (await h.fetch_order(database, order["id"]))["status"] == S.QUEUED
    claimed = await dispatcher.claim_once(db_pair.identity)
    assert claimed is not None
    assert claimed["runner_id"] == db_pair.runner_id


async def test_order_waiting_for_its_retry_delay_is_not_claimable_until_the_delay_passes(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)

    await h.backdate(database, order["id"], not_before=-60)  # a minute ahead of the database clock
    assert await dispatcher.claim_once(pair.identity) is None

    await h.backdate(database, order["id"], not_before=1)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    assert claimed["id"] == order["id"]


async def test_claim_gives_a_lease_and_records_an_attempt_and_a_claimed_event(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database, claim_lease=45)

    claimed = await dispatcher.claim_once(pair.identity)

    assert claimed is not None
    assert claimed["status"] == S.CLAIMED
    assert claimed["attempt"] == 1
    assert claimed["executions"] == 0
    assert str(uuid.UUID(claimed["lease_token"])) == claimed["lease_token"]
    assert 43 < await h.seconds_until(database, order["id"], "lease_expires_at") <= 45
    [attempt] = (await h.fetch_order(database, order["id"]))["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["runner_id"] == pair.runner_id
    assert attempt["lease_token"] == claimed["lease_token"]
    assert attempt["claimed_at"] is not None
    assert (attempt["started_at"], attempt["ended_at"], attempt["outcome"]) == (None, None, None)
    events = await orders.list_events(database, order["id"])
    assert [(e["from_status"], e["to_status"], e["reason"]) for e in events] == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
    ]
    assert events[1]["actor"] == f"runner:{pair.runner_id}"
    assert events[1]["attempt"] == 1


async def test_each_claim_draws_a_new_lease_token(database: Database) -> None:
    pair = await h.make_pair(database)
    for _ in range(3):
        await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)

    tokens = {(await dispatcher.claim_once(pair.identity) or {})["lease_token"] for _ in range(3)}

    assert len(tokens) == 3


async def test_authenticated_runner_claims_through_its_attached_server(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)

    identity = await dispatcher.authenticate(pair.runner_id, pair.token)

    assert identity == pair.identity
    claimed = await dispatcher.claim_once(identity)
    assert claimed is not None
    assert claimed["id"] == order["id"]


# --- start / heartbeat / complete ---------------------------------------------------------------


async def test_claim_start_heartbeat_complete_ends_succeeded_with_its_report(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, params={"message": "hello"})
    dispatcher = h.make_dispatcher(database)

    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    lease = claimed["lease_token"]
    started = await dispatcher.start(pair.identity, order["id"], lease)
    assert started["status"] == S.RUNNING
    assert started["executions"] == 1
    assert started["started_at"] is not None
    beat = await dispatcher.heartbeat(pair.identity, order["id"], lease)
    assert beat["status"] == S.RUNNING
    assert beat["cancelRequested"] is False
    done = await h.complete(dispatcher, pair.identity, order["id"], lease_token=lease, summary="hello")

    assert done["status"] == S.SUCCEEDED
    assert done["report_version"] == "v2"
    assert done["report_summary"] == "hello"
    assert done["report"] == h.v2_report("hello")
    assert done["finished_at"] is not None
    [attempt] = (await h.fetch_order(database, order["id"]))["attempts"]
    assert (attempt["outcome"], attempt["reason"]) == ("SUCCEEDED", "completed")
    assert attempt["started_at"] is not None
    assert attempt["ended_at"] is not None
    assert await h.transitions(database, order["id"]) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
        ("CLAIMED", "RUNNING", "started"),
        ("RUNNING", "SUCCEEDED", "completed"),
    ]


async def test_heartbeat_extends_the_lease_from_the_database_clock(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database, claim_lease=30)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    await h.backdate(database, order["id"], lease_expires_at=-2)  # two seconds left

    beat = await dispatcher.heartbeat(pair.identity, order["id"], claimed["lease_token"])

    assert beat["status"] == S.CLAIMED
    assert 28 < await h.seconds_until(database, order["id"], "lease_expires_at") <= 30


async def test_seed_style_runner_without_lease_token_runs_an_order_to_the_end(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    assert await dispatcher.claim_once(pair.identity) is not None

    await dispatcher.start(pair.identity, order["id"], None)
    await dispatcher.heartbeat(pair.identity, order["id"], None)
    done = await h.complete(dispatcher, pair.identity, order["id"], lease_token=None)

    assert done["status"] == S.SUCCEEDED


Call = Callable[[Dispatcher, RunnerIdentity, str, str | None], Awaitable[Any]]


async def _start(d: Dispatcher, who: RunnerIdentity, order_id: str, lease: str | None) -> Any:
    return await d.start(who, order_id, lease)


async def _heartbeat(d: Dispatcher, who: RunnerIdentity, order_id: str, lease: str | None) -> Any:
    return await d.heartbeat(who, order_id, lease)


async def _complete(d: Dispatcher, who: RunnerIdentity, order_id: str, lease: str | None) -> Any:
    return await h.complete(d, who, order_id, lease_token=lease)


CALLS: dict[str, Call] = {"start": _start, "heartbeat": _heartbeat, "complete": _complete}


async def _refusal(
    call: Call, d: Dispatcher, who: RunnerIdentity, order_id: str, lease: str | None
) -> Conflict:
    with pytest.raises(Conflict) as refused:
        await call(d, who, order_id, lease)
    assert refused.value.status_code == 409
    return refused.value


async def _reasons(
    d: Dispatcher, who: RunnerIdentity, order_id: str, lease: str | None, calls: list[str]
) -> dict[str, str]:
    return {name: (await _refusal(CALLS[name], d, who, order_id, lease)).reason for name in calls}


async def test_runner_calls_on_an_unknown_order_are_order_not_found(database: Database) -> None:
    pair = await h.make_pair(database)
    missing = str(uuid.uuid4())
    dispatcher = h.make_dispatcher(database)

    assert await _reasons(dispatcher, pair.identity, missing, str(uuid.uuid4()), list(CALLS)) == {
        "start": "order_not_found",
        "heartbeat": "order_not_found",
        "complete": "order_not_found",
    }
    refusal = await _refusal(_start, dispatcher, pair.identity, missing, None)
    assert refusal.details == {"orderId": missing}


async def test_runner_calls_on_another_runners_order_are_wrong_runner_and_change_nothing(
    database: Database,
) -> None:
    owner = await h.make_pair(database, "web-1")
    intruder = await h.make_pair(database, "web-2")
    order = await h.make_order(database, owner.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(owner.identity)
    assert claimed is not None

    # the order is in the status each call needs, so only the runner is wrong
    on_claimed = await _reasons(dispatcher, intruder.identity, order["id"], None, ["start", "heartbeat"])
    await dispatcher.start(owner.identity, order["id"], claimed["lease_token"])
    events = await h.count_events(database, order["id"])
    on_running = await _reasons(dispatcher, intruder.identity, order["id"], None, ["heartbeat", "complete"])

    assert on_claimed == {"start": "wrong_runner", "heartbeat": "wrong_runner"}
    assert on_running == {"heartbeat": "wrong_runner", "complete": "wrong_runner"}
    assert await h.count_events(database, order["id"]) == events
    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING


async def test_runner_calls_with_a_foreign_lease_token_are_stale_lease(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    foreign = str(uuid.uuid4())

    on_claimed = await _reasons(dispatcher, pair.identity, order["id"], foreign, ["start", "heartbeat"])
    await dispatcher.start(pair.identity, order["id"], claimed["lease_token"])
    on_running = await _reasons(dispatcher, pair.identity, order["id"], foreign, ["heartbeat", "complete"])

    assert on_claimed == {"start": "stale_lease", "heartbeat": "stale_lease"}
    assert on_running == {"heartbeat": "stale_lease", "complete": "stale_lease"}
    assert (await h.fetch_order(database, order["id"]))["status"] == S.RUNNING


async def test_runner_calls_in_the_wrong_status_are_invalid_status(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    who, order_id = pair.identity, order["id"]

    queued = await _reasons(dispatcher, who, order_id, None, ["start", "heartbeat", "complete"])
    claimed = await dispatcher.claim_once(who)
    assert claimed is not None
    lease = claimed["lease_token"]
    on_claimed = await _reasons(dispatcher, who, order_id, lease, ["complete"])
    await dispatcher.start(who, order_id, lease)
    # start again on RUNNING with the same lease is the replay of a lost answer (test_runner_call_replays)
    on_running = await _reasons(dispatcher, who, order_id, str(uuid.uuid4()), ["start"])
    await h.complete(dispatcher, who, order_id, lease_token=lease)
    succeeded = await _reasons(dispatcher, who, order_id, lease, ["start", "heartbeat"])

    assert queued == {"start": "invalid_status", "heartbeat": "invalid_status", "complete": "invalid_status"}
    assert on_claimed == {"complete": "invalid_status"}
    assert on_running == {"start": "stale_lease"}
    assert succeeded == {"start": "invalid_status", "heartbeat": "invalid_status"}
    refusal = await _refusal(_start, dispatcher, who, order_id, lease)
    assert refusal.details == {"orderId": order_id, "status": "SUCCEEDED"}
    assert (await h.fetch_order(database, order_id))["status"] == S.SUCCEEDED


async def test_completion_replay_with_another_outcome_is_invalid_status(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    lease = running["lease_token"]
    await h.complete(dispatcher, pair.identity, order["id"], S.SUCCEEDED, lease_token=lease)

    refusal = await _refusal(
        lambda d, who, oid, tok: h.complete(d, who, oid, S.FAILED, lease_token=tok),
        dispatcher,
        pair.identity,
        order["id"],
        lease,
    )

    assert refusal.reason == "invalid_status"
    assert (await h.fetch_order(database, order["id"]))["status"] == S.SUCCEEDED


# --- fencing (scenario 3) -------------------------------------------------------------------------


async def test_zombie_runner_is_fenced_off_after_its_claim_went_to_another_runner(database: Database) -> None:
    """Scenario 3: A's lease expires, the order is requeued, B claims and finishes; A's calls are stale."""
    runner_a = await h.make_runner(database, "runner-a")
    runner_b = await h.make_runner(database, "runner-b")
    server = await h.make_server(database, "web-1", runner_id=runner_a["id"])
    order = await h.make_order(database, server["id"])
    dispatcher = h.make_dispatcher(database)
    a = RunnerIdentity(runner_id=runner_a["id"], server_id=server["id"])
    b = RunnerIdentity(runner_id=runner_b["id"], server_id=server["id"])

    claim_a = await dispatcher.claim_once(a)
    assert claim_a is not None
    await h.backdate(database, order["id"], lease_expires_at=1)  # A is paused past its lease
    summary = await h.make_reconciler(database).tick()
    assert summary.requeued == [order["id"]]
    # the operator moves the server to runner B
    await h.attach(database, server["id"], None)
    await h.attach(database, server["id"], runner_b["id"])
    claim_b = await dispatcher.claim_once(b)
    assert claim_b is not None
    assert claim_b["id"] == order["id"]
    assert claim_b["attempt"] == 2
    await dispatcher.start(b, order["id"], claim_b["lease_token"])
    lease_b_expiry = (await h.fetch_order(database, order["id"]))["lease_expires_at"]

    # A wakes up and carries on with its old lease
    for call in (_start, _heartbeat, _complete):
        refusal = await _refusal(call, dispatcher, a, order["id"], claim_a["lease_token"])
        assert refusal.reason == "stale_lease"
    assert (await h.fetch_order(database, order["id"]))["lease_expires_at"] == lease_b_expiry

    done = await h.complete(dispatcher, b, order["id"], lease_token=claim_b["lease_token"], summary="by B")
    assert done["status"] == S.SUCCEEDED
    refusal = await _refusal(_complete, dispatcher, a, order["id"], claim_a["lease_token"])
    assert refusal.reason == "stale_lease"

    final = await h.fetch_order(database, order["id"])
    assert final["status"] == S.SUCCEEDED
    assert final["runner_id"] == runner_b["id"]
    assert final["report_summary"] == "by B"
    assert [(x["attempt"], x["runner_id"], x["outcome"]) for x in final["attempts"]] == [
        (1, runner_a["id"], "LEASE_EXPIRED"),
        (2, runner_b["id"], "SUCCEEDED"),
    ]


async def test_same_runner_reclaiming_fences_off_its_own_earlier_lease(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    first = await dispatcher.claim_once(pair.identity)
    assert first is not None
    await h.backdate(database, order["id"], lease_expires_at=1)
    await h.make_reconciler(database).tick()
    second = await dispatcher.claim_once(pair.identity)
    assert second is not None
    assert second["lease_token"] != first["lease_token"]

    refusal = await _refusal(_start, dispatcher, pair.identity, order["id"], first["lease_token"])

    assert refusal.reason == "stale_lease"
    started = await dispatcher.start(pair.identity, order["id"], second["lease_token"])
    assert started["status"] == S.RUNNING
    assert started["attempt"] == 2


async def test_lease_token_of_a_requeued_claim_is_stale_before_anyone_reclaims(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None
    await h.backdate(database, order["id"], lease_expires_at=1)
    await h.make_reconciler(database).tick()

    refusal = await _refusal(_start, dispatcher, pair.identity, order["id"], claimed["lease_token"])

    assert refusal.reason == "stale_lease"
    assert (await h.fetch_order(database, order["id"]))["status"] == S.QUEUED


# --- completion replay and retries -------------------------------------------------------------------


async def test_completion_replayed_with_the_same_lease_and_outcome_returns_the_order_once(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    first = await h.complete(dispatcher, pair.identity, order["id"], lease_token=running["lease_token"])
    events_after_first = await h.transitions(database, order["id"])

    again = await h.complete(dispatcher, pair.identity, order["id"], lease_token=running["lease_token"])

    assert again["id"] == first["id"]
    assert again["status"] == S.SUCCEEDED
    assert again["finished_at"] == first["finished_at"]
    assert await h.transitions(database, order["id"]) == events_after_first


async def test_failed_completion_replayed_after_its_retry_does_not_requeue_twice(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    await h.complete(dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"])
    events_after_first = await h.transitions(database, order["id"])

    again = await h.complete(
        dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"]
    )

    assert again["status"] == S.QUEUED
    assert await h.transitions(database, order["id"]) == events_after_first


async def test_failed_completion_with_attempts_left_goes_back_to_the_queue_after_a_backoff(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)

    result = await h.complete(
        dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"]
    )

    assert result["status"] == S.QUEUED
    assert result["status_reason"] == "retry"
    assert result["lease_token"] is None
    assert result["lease_expires_at"] is None
    assert result["finished_at"] is None
    assert result["report_version"] == "v2"  # the failed run's report stays readable
    assert 0 < await h.seconds_until(database, order["id"], "not_before") <= 2.0
    events = await orders.list_events(database, order["id"])
    assert [(e["from_status"], e["to_status"], e["reason"]) for e in events[-2:]] == [
        ("RUNNING", "FAILED", "completed"),
        ("FAILED", "QUEUED", "retry"),
    ]
    assert events[-1]["details"] == {"delaySeconds": 2.0, "executions": 1}
    assert events[-1]["actor"] == "system"
    assert await dispatcher.claim_once(pair.identity) is None  # the backoff holds it back

    await h.backdate(database, order["id"], not_before=0.5)
    again = await dispatcher.claim_once(pair.identity)
    assert again is not None
    assert again["attempt"] == 2


async def test_single_attempt_order_that_failed_stays_failed(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=1)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)

    result = await h.complete(
        dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"]
    )

    assert result["status"] == S.FAILED
    assert result["not_before"] is None
    assert result["finished_at"] is not None
    assert (await h.transitions(database, order["id"]))[-1] == ("RUNNING", "FAILED", "completed")
    assert await dispatcher.claim_once(pair.identity) is None


async def test_runner_reported_timeout_or_cancel_is_never_retried(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)

    for outcome in (S.TIMEOUT, S.CANCELLED):
        order = await h.make_order(database, pair.server_id, max_attempts=5)
        running = await h.claim_and_start(dispatcher, pair.identity)
        result = await h.complete(
            dispatcher, pair.identity, order["id"], outcome, lease_token=running["lease_token"]
        )
        assert result["status"] == outcome

    assert await dispatcher.claim_once(pair.identity) is None


async def test_failed_run_after_a_cancel_request_is_not_retried(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    await orders.cancel_order(database, order["id"], reason="maintenance window closed")
    beat = await dispatcher.heartbeat(pair.identity, order["id"], running["lease_token"])
    assert beat["cancelRequested"] is True

    result = await h.complete(
        dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"]
    )

    assert result["status"] == S.FAILED


async def test_every_attempt_row_is_kept_unchanged_across_retries(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    dispatcher = h.make_dispatcher(database)
    closed: list[dict[str, Any]] = []

    for attempt in (1, 2, 3):
        running = await h.claim_and_start(dispatcher, pair.identity)
        assert running["attempt"] == attempt
        result = await h.complete(
            dispatcher, pair.identity, order["id"], S.FAILED, lease_token=running["lease_token"]
        )
        rows = await h.attempt_rows(database, order["id"])
        assert rows[: len(closed)] == closed  # earlier attempts are never rewritten
        closed = rows
        if attempt < 3:
            assert result["status"] == S.QUEUED
            await h.backdate(database, order["id"], not_before=1)

    assert result["status"] == S.FAILED
    assert [(r["attempt"], r["outcome"], r["reason"]) for r in closed] == [
        (1, "FAILED", "completed"),
        (2, "FAILED", "completed"),
        (3, "FAILED", "completed"),
    ]
    assert len({r["lease_token"] for r in closed}) == 3
    assert all(r["started_at"] is not None and r["ended_at"] is not None for r in closed)
    retry_delays = [
        e["details"]["delaySeconds"]
        for e in await orders.list_events(database, order["id"])
        if e["reason"] == "retry"
    ]
    assert retry_delays == [2.0, 4.0]


# --- API restarts (scenario 11) ------------------------------------------------------------------


async def _run_through_every_transition(open_db: Callable[[], Awaitable[Database]], server: str) -> str:
    """Claim → lease lost → reclaim → start → FAILED (retry) → reclaim → start → SUCCEEDED.

    `open_db` is called before every step; each step builds its own dispatcher and reconciler, as a
    freshly started API process would.
    """
    db = await open_db()
    pair = await h.make_pair(db, server)
    order_id = (await h.make_order(db, pair.server_id, max_attempts=3))["id"]
    lease: dict[str, str] = {}

    async def claim(db: Database) -> None:
        claimed = await h.make_dispatcher(db).claim_once(pair.identity)
        assert claimed is not None
        lease["token"] = claimed["lease_token"]

    async def lose_lease(db: Database) -> None:
        await h.backdate(db, order_id, lease_expires_at=1)

    async def reconcile(db: Database) -> None:
        await h.make_reconciler(db).tick()

    async def start(db: Database) -> None:
        await h.make_dispatcher(db).start(pair.identity, order_id, lease["token"])

    async def heartbeat(db: Database) -> None:
        await h.make_dispatcher(db).heartbeat(pair.identity, order_id, lease["token"])

    async def fail(db: Database) -> None:
        await h.complete(h.make_dispatcher(db), pair.identity, order_id, S.FAILED, lease_token=lease["token"])

    async def end_backoff(db: Database) -> None:
        await h.backdate(db, order_id, not_before=1)

    async def succeed(db: Database) -> None:
        await h.complete(h.make_dispatcher(db), pair.identity, order_id, lease_token=lease["token"])

    steps = [claim, lose_lease, reconcile, claim, start, heartbeat, reconcile, fail, end_backoff]
    for step in [*steps, claim, start, succeed, reconcile]:
        await step(db)
        db = await open_db()
    return order_id


async def _outcome(db: Database, order_id: str) -> dict[str, Any]:
    order = await h.fetch_order(db, order_id)
    events = await orders.list_events(db, order_id)
    return {
        "status": order["status"],
        "attempt": order["attempt"],
        "executions": order["executions"],
        "report_summary": order["report_summary"],
        "attempts": [(a["attempt"], a["outcome"], a["reason"]) for a in order["attempts"]],
        "events": [(e["from_status"], e["to_status"], e["reason"], e["attempt"]) for e in events],
    }


async def test_api_restarted_between_every_transition_ends_as_an_uninterrupted_run(
    database: Database, database_url: str
) -> None:
    """Scenario 11: a new database handle and new services before every step change nothing."""
    opened: list[Database] = []

    async def same_process() -> Database:
        return database

    async def restarted_process() -> Database:
        if opened:
            await opened[-1].dispose()
        opened.append(Database(database_url))
        return opened[-1]

    uninterrupted = await _run_through_every_transition(same_process, "web-1")
    restarted = await _run_through_every_transition(restarted_process, "web-2")
    await opened[-1].dispose()

    expected = await _outcome(database, uninterrupted)
    assert await _outcome(database, restarted) == expected
    assert expected["status"] == S.SUCCEEDED
    assert expected["attempts"] == [
        (1, "LEASE_EXPIRED", "lease_expired"),
        (2, "FAILED", "completed"),
        (3, "SUCCEEDED", "completed"),
    ]
