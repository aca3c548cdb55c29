"""Order logs, runner registration with bootstrap tokens, and late completion, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from ikoma.domain.errors import Conflict, Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import bootstrap, logs
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from tests.integration.helpers import (
    backdate,
    claim_and_start,
    complete,
    fetch_order,
    make_dispatcher,
    make_order,
    make_pair,
    make_reconciler,
    make_server,
    transitions,
)

LIMIT = 64


async def _append(db: Database, dispatcher, pair, order, chunks, lease=None):  # type: ignore[no-untyped-def]
    async with db.write() as tx:
        await dispatcher.check_logs_allowed(pair.identity, order["id"], lease or order["lease_token"], tx=tx)
        return await logs.append_chunks(tx, Wakeups(), order_id=order["id"], chunks=chunks, limit_bytes=LIMIT)


async def test_log_chunks_are_stored_once_per_seq_and_read_back_in_order(database: Database) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id)
    order = await claim_and_start(dispatcher, pair.identity)
    first = await _append(
        database, dispatcher, pair, order, [logs.Chunk(1, "stderr", "b\n"), logs.Chunk(0, "stdout", "a\n")]
    )
    retry = await _append(
        database, dispatcher, pair, order, [logs.Chunk(1, "stderr", "b\n"), logs.Chunk(2, "stdout", "c\n")]
    )
    assert (first["accepted"], first["duplicates"]) == (2, 0)
    assert (retry["accepted"], retry["duplicates"]) == (1, 1)
    page = await logs.read_logs(database, Wakeups(), order_id=order["id"], after_seq=-1, limit=100, wait=0)
    assert [(c["seq"], c["data"]) for c in page["items"]] == [(0, "a\n"), (1, "b\n"), (2, "c\n")]
    assert page["nextSeq"] == 3
    assert page["done"] is False
    later = await logs.read_logs(database, Wakeups(), order_id=order["id"], after_seq=1, limit=100, wait=0)
    assert [c["seq"] for c in later["items"]] == [2]


async def test_logs_past_the_cap_end_with_one_truncation_marker(database: Database) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id)
    order = await claim_and_start(dispatcher, pair.identity)
    chunks = [logs.Chunk(i, "stdout", "x" * 30) for i in range(5)]  # 150 bytes against a 64-byte cap
    answer = await _append(database, dispatcher, pair, order, chunks)
    assert answer["truncated"] is True
    more = await _append(database, dispatcher, pair, order, [logs.Chunk(9, "stdout", "late")])
    assert more["accepted"] == 0
    page = await logs.read_logs(database, Wakeups(), order_id=order["id"], after_seq=-1, limit=100, wait=0)
    assert [c["stream"] for c in page["items"]] == ["stdout", "stdout", "system"]
    assert "log truncated" in page["items"][-1]["data"]
    assert page["truncated"] is True


async def test_logs_from_another_runner_or_a_stale_lease_are_refused(database: Database) -> None:
    pair = await make_pair(database, "web-1")
    other = await make_pair(database, "web-2")
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id)
    order = await claim_and_start(dispatcher, pair.identity)
    with pytest.raises(Conflict) as wrong:
        await _append(database, dispatcher, other, order, [logs.Chunk(0, "stdout", "x")])
    assert wrong.value.reason == "wrong_runner"
    with pytest.raises(Conflict) as stale:
        await _append(
            database,
            dispatcher,
            pair,
            order,
            [logs.Chunk(0, "stdout", "x")],
            lease="00000000-0000-4000-8000-000000000000",
        )
    assert stale.value.reason == "stale_lease"


async def test_reading_logs_waits_for_the_next_chunk(database: Database) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id)
    order = await claim_and_start(dispatcher, pair.identity)
    wakeups = Wakeups()

    async def write_soon() -> None:
        await asyncio.sleep(0.2)
        async with database.write() as tx:
            await logs.append_chunks(
                tx, wakeups, order_id=order["id"], chunks=[logs.Chunk(0, "stdout", "hi")], limit_bytes=LIMIT
            )

    writer = asyncio.create_task(write_soon())
    page = await logs.read_logs(database, wakeups, order_id=order["id"], after_seq=-1, limit=10, wait=5)
    await writer
    assert [c["data"] for c in page["items"]] == ["hi"]


async def test_a_bootstrap_token_registers_one_runner_attached_to_its_server(database: Database) -> None:
    server = await make_server(database, "db-1")
    issued = await bootstrap.issue_bootstrap_token(
        database, name="runner-db-1", server_id=server["id"], expires_in=600
    )
    registered = await bootstrap.register_runner(
        database, bootstrap_token=issued["token"], name=None, hostname="db-1.local", stale_after=60
    )
    assert registered["name"] == "runner-db-1"
    assert registered["serverId"] == server["id"]
    assert registered["token"].startswith("ikr_")
    with pytest.raises(Unauthorized):
        await bootstrap.register_runner(
            database, bootstrap_token=issued["token"], name="again", hostname=None, stale_after=60
        )


async def test_an_expired_bootstrap_token_is_refused(database: Database) -> None:
    issued = await bootstrap.issue_bootstrap_token(database, name=None, server_id=None, expires_in=60)
    async with database.write() as tx:
        from sqlalchemy import update

        from ikoma.storage.clock import db_now
        from ikoma.storage.tables import runner_bootstrap_tokens

        await tx.execute(update(runner_bootstrap_tokens).values(expires_at=db_now(-1)))
    with pytest.raises(Unauthorized):
        await bootstrap.register_runner(
            database, bootstrap_token=issued["token"], name="late", hostname=None, stale_after=60
        )


async def test_a_failed_registration_keeps_the_bootstrap_token_usable(database: Database) -> None:
    await make_pair(database, "taken")  # creates runner "runner-taken"
    issued = await bootstrap.issue_bootstrap_token(database, name=None, server_id=None, expires_in=600)
    with pytest.raises(Conflict):
        await bootstrap.register_runner(
            database, bootstrap_token=issued["token"], name="runner-taken", hostname=None, stale_after=60
        )
    registered = await bootstrap.register_runner(
        database, bootstrap_token=issued["token"], name="runner-fresh", hostname=None, stale_after=60
    )
    assert registered["name"] == "runner-fresh"


async def test_a_late_report_completes_a_stale_order_once_when_the_lease_is_still_its_own(
    database: Database,
) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id, max_attempts=1)
    order = await claim_and_start(dispatcher, pair.identity)
    await backdate(database, order["id"], last_heartbeat_at=3600, started_at=30)
    await make_reconciler(database).tick()
    assert (await fetch_order(database, order["id"]))["status"] == OrderStatus.STALE
    late = await complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])
    assert late["status"] == OrderStatus.SUCCEEDED
    assert late["status_reason"] == "late_completion"
    again = await complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])
    assert again["status"] == OrderStatus.SUCCEEDED
    assert (await transitions(database, order["id"]))[-1] == ("STALE", "SUCCEEDED", "late_completion")
    assert sum(1 for t in await transitions(database, order["id"]) if t[2] == "late_completion") == 1


async def test_a_late_report_is_refused_once_another_attempt_holds_the_order(database: Database) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id, max_attempts=2)
    order = await claim_and_start(dispatcher, pair.identity)
    await backdate(database, order["id"], last_heartbeat_at=3600, started_at=30)
    await make_reconciler(database).tick()  # STALE then back to QUEUED for a retry
    await backdate(database, order["id"], not_before=1)
    retry = await dispatcher.claim_once(pair.identity)  # the retry holds the order now
    assert retry is not None
    assert retry["attempt"] == 2
    with pytest.raises(Conflict) as refused:
        await complete(dispatcher, pair.identity, order["id"], lease_token=order["lease_token"])
    assert refused.value.reason == "stale_lease"


async def test_a_reader_does_not_skip_a_chunk_still_in_flight_while_the_order_runs(
    database: Database,
) -> None:
    pair = await make_pair(database)
    dispatcher = make_dispatcher(database)
    await make_order(database, pair.server_id)
    order = await claim_and_start(dispatcher, pair.identity)
    await _append(database, dispatcher, pair, order, [logs.Chunk(1, "stdout", "second\n")])
    early = await logs.read_logs(database, Wakeups(), order_id=order["id"], after_seq=-1, limit=10, wait=0)
    assert early["items"] == []
    assert early["nextSeq"] == 0
    await _append(database, dispatcher, pair, order, [logs.Chunk(0, "stdout", "first\n")])
    page = await logs.read_logs(database, Wakeups(), order_id=order["id"], after_seq=-1, limit=10, wait=0)
    assert [c["data"] for c in page["items"]] == ["first\n", "second\n"]
