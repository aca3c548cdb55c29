"""Runner lifecycle on both backends: heartbeats without optional facts, revoke, rotate, delete.

Revocation releases what the runner holds through the reconciler's own paths: a claim that never
started is requeued as a new attempt; a run ends STALE (CANCELLED when a cancel was asked) and is
requeued only while attempts remain, so a one-attempt order never runs twice.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import JSON, select, update

from ikoma.domain.errors import Conflict, NotFound, Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import orders, runners
from ikoma.services.dispatch import RunnerIdentity
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import machine_events
from ikoma.storage.tables import runners as runners_table
from tests.integration import helpers as h

S = OrderStatus
ADMIN = "admin"


async def _revoke(database: Database, ref: str, actor: str = ADMIN) -> dict[str, Any]:
    return await runners.revoke_runner(
        database, h.make_reconciler(database), ref, actor=actor, stale_after=h.STALE_AFTER
    )


async def _stored_capabilities(database: Database, runner_id: str) -> Any:
    async with database.read() as tx:
        query = select(runners_table.c.capabilities).where(runners_table.c.id == runner_id)
        return (await tx.execute(query)).scalar_one()


async def _timeline_types(database: Database, server_id: str) -> list[str]:
    async with database.read() as tx:
        query = (
            select(machine_events.c.type)
            .where(machine_events.c.server_id == server_id)
            .order_by(machine_events.c.id)
        )
        return list((await tx.execute(query)).scalars())


# --- heartbeats that leave optional facts out (issue 9, defect 1) --------------------------------


@pytest.mark.parametrize("facts", [{}, {"version": "1.0.0"}], ids=["empty", "version-only"])
async def test_heartbeat_without_capabilities_stores_an_empty_list_and_the_list_still_reads(
    database: Database, facts: dict[str, Any]
) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)

    await dispatcher.record_heartbeat(
        pair.identity, version=facts.get("version"), hostname=None, capabilities=None
    )

    assert await _stored_capabilities(database, pair.runner_id) == []
    [listed] = await runners.list_runners(database, stale_after=h.STALE_AFTER)
    assert listed["capabilities"] == []
    assert listed["online"] is True
    assert listed["version"] == facts.get("version")


async def test_heartbeat_without_capabilities_keeps_the_ones_reported_before(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    await dispatcher.record_heartbeat(
        pair.identity, version="2.0", hostname="web-1", capabilities=["shell.exec"]
    )

    await dispatcher.record_heartbeat(pair.identity, version="1.0.0", hostname=None, capabilities=None)

    runner = await runners.get_runner(database, pair.runner_id, stale_after=h.STALE_AFTER)
    assert runner["capabilities"] == ["shell.exec"]
    assert (runner["version"], runner["hostname"]) == ("1.0.0", "web-1")


async def test_a_stored_json_null_capabilities_reads_as_an_empty_list(database: Database) -> None:
    """Rows written before the fix (JSON `null`) must not break the listing for everyone."""
    pair = await h.make_pair(database)
    await h.make_runner(database, "runner-healthy")
    async with database.write() as tx:
        await tx.execute(
            update(runners_table)
            .where(runners_table.c.id == pair.runner_id)
            .values(capabilities=JSON.NULL)  # JSON `null`, as a version-only heartbeat once stored
        )
    assert await _stored_capabilities(database, pair.runner_id) is None  # the poisoned row is real

    listed = await runners.list_runners(database, stale_after=h.STALE_AFTER)

    assert [r["capabilities"] for r in listed] == [[], []]
    assert (await runners.get_runner(database, pair.runner_id, stale_after=1))["capabilities"] == []


# --- show ------------------------------------------------------------------------------------------


async def test_runner_is_found_by_its_id_or_its_name_and_an_unknown_one_is_runner_not_found(
    database: Database,
) -> None:
    pair = await h.make_pair(database)

    by_id = await runners.get_runner(database, pair.runner_id, stale_after=h.STALE_AFTER)
    by_name = await runners.get_runner(database, "runner-web-1", stale_after=h.STALE_AFTER)

    assert by_id == by_name
    assert by_id["server_name"] == "web-1"
    assert "token_hash" not in by_id
    for unknown in ("runner-nope", "00000000-0000-4000-8000-000000000000"):
        with pytest.raises(NotFound) as refused:
            await runners.get_runner(database, unknown, stale_after=h.STALE_AFTER)
        assert refused.value.reason == "runner_not_found"


# --- revoke ----------------------------------------------------------------------------------------


async def test_revoked_runner_is_refused_at_its_next_call(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    assert await dispatcher.authenticate(pair.runner_id, pair.token)

    revoked = await _revoke(database, "runner-web-1", actor="api_client:abc")

    assert revoked["revoked_by"] == "api_client:abc"
    assert revoked["revoked_at"] is not None
    with pytest.raises(Unauthorized):
        await dispatcher.authenticate(pair.runner_id, pair.token)
    with pytest.raises(Unauthorized):
        async with dispatcher.runner_call(pair.runner_id, pair.token):
            pass


async def test_revoking_requeues_a_claimed_order_as_a_new_attempt_for_another_runner(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=1)
    dispatcher = h.make_dispatcher(database)
    claimed = await dispatcher.claim_once(pair.identity)
    assert claimed is not None

    revoked = await _revoke(database, pair.runner_id)

    assert revoked["requeued_order_ids"] == [order["id"]]
    assert revoked["ended_order_ids"] == []
    after = await h.fetch_order(database, order["id"])
    assert (after["status"], after["status_reason"], after["lease_token"]) == (
        S.QUEUED,
        "runner_revoked",
        None,
    )
    assert after["executions"] == 0  # nothing ran: even a one-attempt order may run elsewhere
    [attempt] = await h.attempt_rows(database, order["id"])
    assert (attempt["outcome"], attempt["reason"]) == ("RUNNER_REVOKED", "runner_revoked")
    events = await orders.list_events(database, order["id"])
    assert (
        events[-1]["from_status"],
        events[-1]["to_status"],
        events[-1]["reason"],
        events[-1]["actor"],
    ) == (
        "CLAIMED",
        "QUEUED",
        "runner_revoked",
        ADMIN,
    )

    replacement = await h.make_runner(database, "runner-web-1b")
    await h.attach(database, pair.server_id, replacement["id"])
    identity = RunnerIdentity(runner_id=replacement["id"], server_id=pair.server_id)
    again = await dispatcher.claim_once(identity)
    assert again is not None
    assert (again["id"], again["attempt"], again["runner_id"]) == (order["id"], 2, replacement["id"])


async def test_revoking_ends_a_running_one_attempt_order_stale_and_never_reruns_it(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=1)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)

    revoked = await _revoke(database, pair.runner_id)

    assert revoked["ended_order_ids"] == [order["id"]]
    assert revoked["requeued_order_ids"] == []
    after = await h.fetch_order(database, order["id"])
    assert (after["status"], after["status_reason"]) == (S.STALE, "runner_revoked")
    assert after["finished_at"] is not None
    assert await h.transitions(database, order["id"]) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
        ("CLAIMED", "RUNNING", "started"),
        ("RUNNING", "STALE", "runner_revoked"),
    ]
    # the revoked runner cannot report late either: its credentials are gone
    with pytest.raises(Unauthorized):
        await dispatcher.authenticate(pair.runner_id, pair.token)
    assert running["lease_token"] is not None


async def test_revoking_requeues_a_running_order_that_has_attempts_left(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    await h.claim_and_start(h.make_dispatcher(database), pair.identity)

    revoked = await _revoke(database, pair.runner_id)

    assert revoked["requeued_order_ids"] == [order["id"]]
    assert revoked["ended_order_ids"] == []
    after = await h.fetch_order(database, order["id"])
    assert (after["status"], after["status_reason"], after["executions"]) == (S.QUEUED, "retry", 1)
    assert (await h.transitions(database, order["id"]))[-2:] == [
        ("RUNNING", "STALE", "runner_revoked"),
        ("STALE", "QUEUED", "retry"),
    ]


async def test_revoking_a_runner_whose_run_was_asked_to_cancel_ends_it_cancelled(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id, max_attempts=3)
    await h.claim_and_start(h.make_dispatcher(database), pair.identity)
    await orders.cancel_order(database, order["id"], reason="no longer needed")

    revoked = await _revoke(database, pair.runner_id)

    assert revoked["ended_order_ids"] == [order["id"]]
    after = await h.fetch_order(database, order["id"])
    assert (after["status"], after["status_reason"]) == (S.CANCELLED, "runner_revoked")


async def test_revoking_puts_runner_revoked_on_its_server_timeline_once(database: Database) -> None:
    pair = await h.make_pair(database)

    first = await _revoke(database, pair.runner_id)
    second = await _revoke(database, pair.runner_id, actor="api_client:late")

    assert second["revoked_at"] == first["revoked_at"]
    assert second["revoked_by"] == ADMIN  # the first revocation is the one kept
    assert second["online"] is False
    assert (await _timeline_types(database, pair.server_id)).count("runner.revoked") == 1


async def test_a_claim_by_a_runner_authenticated_before_its_revocation_is_refused(database: Database) -> None:
    """A long-poll that began before the revocation must not be handed an order after it."""
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    identity = await dispatcher.authenticate(pair.runner_id, pair.token)
    await _revoke(database, pair.runner_id)
    order = await h.make_order(database, pair.server_id)

    with pytest.raises(Unauthorized):
        await dispatcher.claim_once(identity)
    with pytest.raises(Unauthorized):
        await dispatcher.claim_next(identity, wait=0.2)

    assert (await h.fetch_order(database, order["id"]))["status"] == S.QUEUED


async def test_a_claim_racing_an_uncommitted_revocation_waits_for_it_and_is_refused(
    database: Database,
) -> None:
    """The claim reads the runner row under a share lock: it cannot slip past a revocation in flight.

    The revocation holds its transaction open while the claim starts; the claim must wait for it and
    then see it, instead of claiming an order that the revocation (which saw none) would never release.
    """
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    identity = await dispatcher.authenticate(pair.runner_id, pair.token)
    order = await h.make_order(database, pair.server_id)
    claiming: asyncio.Task[Any] | None = None
    async with database.write() as tx:
        await tx.execute(
            update(runners_table).where(runners_table.c.id == pair.runner_id).values(revoked_at=db_now())
        )
        claiming = asyncio.create_task(dispatcher.claim_once(identity))
        await asyncio.sleep(0.3)  # let the claim reach the runner row (if it got further, it fails below)
    with pytest.raises(Unauthorized):
        await claiming

    assert (await h.fetch_order(database, order["id"]))["status"] == S.QUEUED


# --- rotate ----------------------------------------------------------------------------------------


async def test_rotated_token_replaces_the_old_one_at_once(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    before_rotation = await dispatcher.authenticate(pair.runner_id, pair.token)

    rotated = await runners.rotate_token(database, "runner-web-1", actor=ADMIN, stale_after=h.STALE_AFTER)

    assert rotated["token"].startswith("ikr_")
    assert rotated["token"] != pair.token
    assert rotated["token"].startswith(rotated["token_prefix"])
    assert rotated["token_rotated_at"] is not None
    with pytest.raises(Unauthorized):
        await dispatcher.authenticate(pair.runner_id, pair.token)
    await h.make_order(database, pair.server_id)
    with pytest.raises(Unauthorized):  # a call authenticated with the old token cannot claim either
        await dispatcher.claim_once(before_rotation)
    fresh = await dispatcher.authenticate(pair.runner_id, rotated["token"])
    assert await dispatcher.claim_once(fresh) is not None
    assert "runner.token_rotated" in await _timeline_types(database, pair.server_id)


async def test_rotating_a_revoked_runner_is_refused_with_runner_revoked(database: Database) -> None:
    pair = await h.make_pair(database)
    await _revoke(database, pair.runner_id)

    with pytest.raises(Conflict) as refused:
        await runners.rotate_token(database, pair.runner_id, actor=ADMIN, stale_after=h.STALE_AFTER)

    assert refused.value.reason == "runner_revoked"
    with pytest.raises(Unauthorized):
        await h.make_dispatcher(database).authenticate(pair.runner_id, pair.token)


# --- delete ----------------------------------------------------------------------------------------


async def test_deleting_a_runner_that_claimed_an_order_is_runner_in_use(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    await h.complete(
        h.make_dispatcher(database),
        pair.identity,
        order["id"],
        lease_token=(await h.claim_and_start(h.make_dispatcher(database), pair.identity))["lease_token"],
    )

    with pytest.raises(Conflict) as refused:
        await runners.delete_runner(database, "runner-web-1", actor=ADMIN, stale_after=h.STALE_AFTER)

    assert refused.value.reason == "runner_in_use"
    assert refused.value.details["attempts"] == 1
    assert (await h.fetch_order(database, order["id"]))["runner_id"] == pair.runner_id


async def test_deleting_a_runner_an_order_is_addressed_to_is_runner_in_use(database: Database) -> None:
    spare = await h.make_runner(database, "runner-spare")
    server = await h.make_server(database, "web-9")
    await h.make_order(database, server["id"], runner_id=spare["id"])

    with pytest.raises(Conflict) as refused:
        await runners.delete_runner(database, spare["id"], actor=ADMIN, stale_after=h.STALE_AFTER)

    assert refused.value.reason == "runner_in_use"


async def test_deleting_a_never_used_runner_forgets_it_and_detaches_its_server(database: Database) -> None:
    pair = await h.make_pair(database)

    await runners.delete_runner(database, pair.runner_id, actor=ADMIN, stale_after=h.STALE_AFTER)

    assert await runners.list_runners(database, stale_after=h.STALE_AFTER) == []
    with pytest.raises(NotFound):
        await runners.get_runner(database, pair.runner_id, stale_after=h.STALE_AFTER)
    server = (await h.make_pair(database, "web-2")).server  # names are free again
    assert server["name"] == "web-2"
    assert "runner.deleted" in await _timeline_types(database, pair.server_id)
    with pytest.raises(Unauthorized):
        await h.make_dispatcher(database).authenticate(pair.runner_id, pair.token)
