"""Webhooks (issue 12) on SQLite and PostgreSQL: registration and its checks, the sealed secret, signed
deliveries in event id order, backoff, auto-disable, redelivery, filters — against a real HTTP receiver.

Tests never sleep for a retry to come due: `make_due` moves a delivery's next attempt to the past by the
database clock, the only clock deliveries are scheduled with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, text, update

from ikoma.domain.errors import Conflict, DomainError, NotFound
from ikoma.services import events, servers, webhooks
from ikoma.services.vault import Vault
from ikoma.services.webhook_delivery import DeliveryPolicy, WebhookDispatcher, retry_delay
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import events as events_table
from ikoma.storage.tables import webhook_deliveries
from ikoma.storage.tables import webhooks as webhooks_table
from tests.integration.helpers import server_fields
from tests.integration.webhook_receiver import Receiver

POLICY = DeliveryPolicy(
    timeout_s=10,
    retry_base_s=30,
    retry_max_delay_s=60,
    retry_window_s=3600,
    disable_after=3,
    allow_private=True,
)


@pytest.fixture
def vault() -> Vault:
    return Vault([Fernet.generate_key()])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


async def register(db: Database, vault: Vault, url: str, kinds: list[str], **options: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"server_ids": None, "labels": None, "description": None, "allow_private": True}
    fields.update(options)
    return await webhooks.create_webhook(db, vault, url=url, kinds=kinds, created_by="admin", **fields)


async def publish(db: Database, *kinds: str, server_id: str | None = None) -> list[int]:
    """Publish events, one transaction; their ids in order."""
    async with db.read() as tx:
        before = await events.last_id(tx)
    async with db.write() as tx:
        for n, kind in enumerate(kinds):
            events.publish(tx, kind, server_id=server_id, actor="test", data={"n": n})
    async with db.read() as tx:
        return [e.id for e in await events.read(tx, after=before, limit=100)]


async def deliveries(db: Database, webhook_id: str) -> list[dict[str, Any]]:
    """Oldest first (the log's own listing is newest first)."""
    return list(reversed(await webhooks.list_deliveries(db, webhook_id, limit=500)))


async def make_due(db: Database, webhook_id: str) -> None:
    async with db.write() as tx:
        await tx.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.webhook_id == webhook_id, webhook_deliveries.c.status == "pending")
            .values(next_attempt_at=db_now(-1))
        )


def dispatcher(db: Database, vault: Vault, **policy: Any) -> WebhookDispatcher:
    return WebhookDispatcher(db, vault, replace(POLICY, **policy), registry=CollectorRegistry())


def counted(sender: WebhookDispatcher, outcome: str) -> float:
    return float(sender.deliveries.labels(outcome=outcome)._value.get())


# --- registration ------------------------------------------------------------------------------------
async def test_secret_is_shown_once_and_stored_sealed_never_in_clear(
    database: Database, database_url: str, vault: Vault
) -> None:
    created = await register(database, vault, "http://127.0.0.1:9/hook", ["order.failed", "message"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert created["kinds"] == ["order.failed", "message"]
    assert "secret" not in await webhooks.get_webhook(database, created["id"])
    assert all("secret" not in w for w in await webhooks.list_webhooks(database))

    async with database.read() as tx:
        stored = (await tx.execute(select(webhooks_table.c.secret))).scalar_one()
        dumped = str((await tx.execute(text("SELECT * FROM webhooks"))).all())
    assert stored.startswith("ikv1:")
    assert vault.unseal(stored) == secret
    assert secret not in dumped
    if database_url.startswith("sqlite"):
        await database.dispose()  # the whole file, WAL included, holds no trace of the secret
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [path, path.with_name(path.name + "-wal")]
        assert all(secret.encode() not in f.read_bytes() for f in files if f.exists())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "webhook_url_invalid"),
        ("example.com/hook", "webhook_url_invalid"),
        ("http://example.com/hook#part", "webhook_url_invalid"),
        ("http://127.0.0.1:8080/hook", "webhook_target_private"),
        ("http://localhost/hook", "webhook_target_private"),
        ("http://10.1.2.3/hook", "webhook_target_private"),
        ("https://192.168.0.10/hook", "webhook_target_private"),
        ("http://100.64.0.1/hook", "webhook_target_private"),
        ("http://169.254.169.254/latest/meta-data", "webhook_target_private"),
        ("http://[::1]:3000/hook", "webhook_target_private"),
        ("http://[::ffff:127.0.0.1]/hook", "webhook_target_private"),
        ("http://[fe80::1]/hook", "webhook_target_private"),
        ("http://0.0.0.0/hook", "webhook_target_private"),
        ("http://no-such-host.invalid/hook", "webhook_target_unresolvable"),
    ],
)
async def test_urls_that_are_not_http_or_reach_inside_the_network_are_refused(
    database: Database, vault: Vault, url: str, reason: str
) -> None:
    with pytest.raises(DomainError) as refused:
        await register(database, vault, url, ["order"], allow_private=False)
    assert (refused.value.status_code, refused.value.reason) == (422, reason)
    assert await webhooks.list_webhooks(database) == []


async def test_private_targets_are_accepted_when_allowed_and_bad_kinds_or_servers_are_not(
    database: Database, vault: Vault
) -> None:
    assert (await register(database, vault, "http://127.0.0.1:8080/hook", ["order"]))["enabled"] is True
    for kinds in (["order.faild"], ["orders"], [""]):
        with pytest.raises(DomainError) as refused:
            await register(database, vault, "http://127.0.0.1/x", kinds)
        assert refused.value.reason == "unknown_event_kind"
    with pytest.raises(DomainError) as unknown:
        await register(
            database,
            vault,
            "http://127.0.0.1/x",
            ["order"],
            server_ids=["00000000-0000-0000-0000-000000000001"],
        )
    assert unknown.value.reason == "unknown_server"
    assert (await register(database, vault, "http://127.0.0.1/x", ["order.*", "order."]))["kinds"] == [
        "order"
    ]
    assert (await register(database, vault, "http://127.0.0.1/x", ["order", "*"]))["kinds"] == ["*"]


async def test_changes_publish_webhook_events_and_delete_removes_the_delivery_log(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    created = await register(database, vault, receiver.url, ["server"])
    changed = await webhooks.update_webhook(
        database,
        created["id"],
        {"kinds": ["runner.offline"], "description": "ops"},
        actor="admin",
        allow_private=True,
    )
    assert (changed["kinds"], changed["description"]) == (["runner.offline"], "ops")
    with pytest.raises(DomainError) as refused:
        await webhooks.update_webhook(
            database, created["id"], {"url": "http://10.0.0.1/"}, actor="admin", allow_private=False
        )
    assert refused.value.reason == "webhook_target_private"
    assert (await webhooks.disable_webhook(database, created["id"], actor="admin"))[
        "disabled_reason"
    ] == "manual"
    assert (await webhooks.enable_webhook(database, created["id"], actor="admin"))["enabled"] is True
    await publish(database, "runner.offline")
    await dispatcher(database, vault).run_once()
    assert len(await deliveries(database, created["id"])) == 1
    await webhooks.delete_webhook(database, created["id"], actor="admin")
    with pytest.raises(NotFound):
        await webhooks.get_webhook(database, created["id"])
    async with database.read() as tx:
        said = await events.read(tx, after=0, limit=100, kinds=["webhook"])
        left = (await tx.execute(select(webhook_deliveries))).all()
    assert [e.data.get("changed") for e in said if e.kind == "webhook.changed"] == [
        ["description", "events"],
        ["enabled"],
    ]
    assert all(e.data["webhookId"] == created["id"] and "url" not in e.data for e in said)
    assert [e.kind for e in said] == [
        "webhook.created",
        "webhook.changed",
        "webhook.disabled",
        "webhook.changed",
        "webhook.deleted",
    ]
    assert left == []


# --- delivery ----------------------------------------------------------------------------------------
async def test_matching_events_are_delivered_signed_in_id_order_with_their_headers(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    await publish(database, "server.created")  # before the webhook: not sent
    hook = await register(database, vault, receiver.url, ["server"])
    ids = await publish(database, "server.changed", "order.created", "server.deleted", "server.attached")
    sender = dispatcher(database, vault)
    await sender.run_once()

    got = receiver.snapshot()
    assert [r.event["id"] for r in got] == [ids[0], ids[2], ids[3]]
    assert [r.headers["x-ikoma-event"] for r in got] == [
        "server.changed",
        "server.deleted",
        "server.attached",
    ]
    assert all(r.signature_valid(hook["secret"]) for r in got)
    assert not got[0].signature_valid("whsec_another")
    assert got[0].headers["content-type"] == "application/json"
    assert int(got[0].headers["x-ikoma-timestamp"]) > 1_700_000_000
    assert set(got[0].event) == {
        "id",
        "ts",
        "kind",
        "topic",
        "serverId",
        "orderId",
        "runnerId",
        "actor",
        "data",
    }

    log = await deliveries(database, hook["id"])
    assert [d["id"] for d in log] == [r.headers["x-ikoma-delivery"] for r in got]
    assert [(d["status"], d["attempts"], d["status_code"]) for d in log] == [("delivered", 1, 204)] * 3
    assert all(d["duration_ms"] is not None and d["error"] is None for d in log)
    assert (await webhooks.get_webhook(database, hook["id"]))["last_event_id"] == ids[3]
    assert counted(sender, "delivered") == 3
    await sender.run_once()  # nothing new: nothing sent again
    assert len(receiver.snapshot()) == 3


async def test_a_failing_endpoint_is_retried_with_growing_delays_then_the_webhook_is_disabled(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    receiver.answer = 500
    hook = await register(database, vault, receiver.url, ["order"])
    first, second = await publish(database, "order.failed", "order.created")
    sender = dispatcher(database, vault)

    delays = []
    for attempt in (1, 2, 3):
        await sender.run_once()
        assert len(receiver.snapshot()) == attempt
        async with database.read() as tx:
            row = (await tx.execute(select(webhook_deliveries))).mappings().one()  # the second waits
        delays.append((row["next_attempt_at"] - row["last_attempt_at"]).total_seconds())
        assert (row["attempts"], row["status_code"], row["error"]) == (attempt, 500, "HTTP 500")
        await sender.run_once()  # not due yet: nothing is sent, and the next event does not overtake
        assert len(receiver.snapshot()) == attempt
        await make_due(database, hook["id"])
    # base 30 s doubling, capped at 60 s, each with up to half taken off (jitter); the last was not set
    assert 15 - 1 <= delays[0] <= 30 + 1
    assert 30 - 1 <= delays[1] <= 60 + 1

    disabled = await webhooks.get_webhook(database, hook["id"])
    assert (disabled["enabled"], disabled["disabled_reason"], disabled["consecutive_failures"]) == (
        False,
        "consecutive_failures",
        3,
    )
    async with database.read() as tx:
        said = await events.read(tx, after=second, limit=10, kinds=["webhook.disabled"])
    assert [(e.actor, e.data["webhookId"], e.data["reason"]) for e in said] == [
        ("system", hook["id"], "consecutive_failures")
    ]
    assert (counted(sender, "retrying"), counted(sender, "failed")) == (2, 1)
    await sender.run_once()
    assert len(receiver.snapshot()) == 3  # disabled: nothing goes out

    receiver.answer = 200
    await webhooks.enable_webhook(database, hook["id"], actor="admin")
    await sender.run_once()
    assert [r.event["id"] for r in receiver.snapshot()] == [first, first, first, first, second]
    log = await deliveries(database, hook["id"])
    assert [(d["status"], d["attempts"]) for d in log] == [("delivered", 4), ("delivered", 1)]
    assert (await webhooks.get_webhook(database, hook["id"]))["consecutive_failures"] == 0


async def test_a_delivery_past_the_retry_window_fails_and_the_next_event_goes(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    receiver.answer = 503
    hook = await register(database, vault, receiver.url, ["order"])
    await publish(database, "order.failed", "order.timeout")
    await dispatcher(database, vault, retry_window_s=0.001, disable_after=10).run_once()
    log = await deliveries(database, hook["id"])
    assert [(d["kind"], d["status"], d["attempts"]) for d in log] == [
        ("order.failed", "failed", 1),
        ("order.timeout", "failed", 1),
    ]
    assert all(d["failed_at"] is not None and d["next_attempt_at"] is None for d in log)


async def test_redelivery_sends_the_same_event_under_a_new_delivery_id(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    hook = await register(database, vault, receiver.url, ["message"])
    (event_id,) = await publish(database, "message.created")
    sender = dispatcher(database, vault)
    await sender.run_once()
    (original,) = await deliveries(database, hook["id"])
    again = await webhooks.redeliver(database, hook["id"], original["id"])
    assert (again["status"], again["redelivery_of"], again["event_id"]) == (
        "pending",
        original["id"],
        event_id,
    )
    await sender.run_once()
    first, second = receiver.snapshot()
    assert first.body == second.body
    assert first.event["id"] == event_id
    assert [first.headers["x-ikoma-delivery"], second.headers["x-ikoma-delivery"]] == [
        original["id"],
        again["id"],
    ]

    with pytest.raises(NotFound) as unknown:
        await webhooks.redeliver(database, hook["id"], "00000000-0000-0000-0000-000000000001")
    assert unknown.value.reason == "delivery_not_found"
    await webhooks.disable_webhook(database, hook["id"], actor="admin")
    with pytest.raises(Conflict) as disabled:
        await webhooks.redeliver(database, hook["id"], original["id"])
    assert disabled.value.reason == "webhook_disabled"
    await webhooks.enable_webhook(database, hook["id"], actor="admin")
    async with database.write() as tx:  # retention took the event
        await tx.execute(delete(events_table).where(events_table.c.id == event_id))
    with pytest.raises(Conflict) as expired:
        await webhooks.redeliver(database, hook["id"], original["id"])
    assert expired.value.reason == "event_expired"


async def test_server_and_label_filters_choose_the_events_delivered(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    prod = await servers.create_server(
        database, server_fields("web-1", labels={"env": "prod", "tier": "web"})
    )
    dev = await servers.create_server(database, server_fields("web-2", labels={"env": "dev"}))
    await register(database, vault, receiver.url + "/a", ["server"], server_ids=[str(dev["id"])])
    await register(database, vault, receiver.url + "/b", ["server"], labels={"env": "prod"})
    await publish(database, "server.changed", server_id=str(prod["id"]))
    await publish(database, "server.changed", server_id=str(dev["id"]))
    await publish(database, "server.changed")  # of no server: neither filter lets it through
    await dispatcher(database, vault).run_once()
    got = {(r.path, r.event["serverId"]) for r in receiver.snapshot()}
    assert got == {("/hook/a", str(dev["id"])), ("/hook/b", str(prod["id"]))}
    assert len(receiver.snapshot()) == 2


async def test_a_webhook_leased_by_another_process_is_left_to_it(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    hook = await register(database, vault, receiver.url, ["order"])
    await publish(database, "order.created")
    async with database.write() as tx:
        await tx.execute(update(webhooks_table).values(lease_until=db_now(60)))
    sender = dispatcher(database, vault)
    assert await sender.due_webhooks() == []
    await sender.drain(hook["id"])
    assert receiver.snapshot() == []
    async with database.write() as tx:  # the holder died: its lease runs out
        await tx.execute(update(webhooks_table).values(lease_until=db_now(-1)))
    await sender.run_once()
    assert len(receiver.snapshot()) == 1


async def test_two_dispatchers_on_one_database_send_each_event_once_in_order(
    database: Database, database_url: str, vault: Vault, receiver: Receiver
) -> None:
    """Two replicas' dispatchers at once: the webhook's lease lets one send at a time, in order."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite is served by one process, with one connection: replicas need PostgreSQL")
    hook = await register(database, vault, receiver.url, ["order"])
    ids = await publish(database, *["order.created"] * 6)
    other = Database(database_url)
    try:
        first, second = dispatcher(database, vault), dispatcher(other, vault)
        for _ in ids:
            await asyncio.gather(first.run_once(), second.run_once())
    finally:
        await other.dispose()
    assert [r.event["id"] for r in receiver.snapshot()] == ids
    assert len({d["event_id"] for d in await deliveries(database, hook["id"])}) == len(ids)


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    lowest = [retry_delay(n, 10, 300, rand=lambda: 0.0) for n in range(1, 8)]
    highest = [retry_delay(n, 10, 300, rand=lambda: 1.0) for n in range(1, 8)]
    assert highest == [10, 20, 40, 80, 160, 300, 300]
    assert lowest == [5, 10, 20, 40, 80, 150, 150]
    assert retry_delay(10_000, 10, 300, rand=lambda: 1.0) == 300


async def test_the_delivery_log_forgets_finished_deliveries_past_its_retention_never_pending_ones(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    hook = await register(database, vault, receiver.url, ["order"])
    await publish(database, "order.created")
    await dispatcher(database, vault).run_once()
    receiver.answer = 500
    await publish(database, "order.failed")
    sender = dispatcher(database, vault, log_retention_s=0.001)
    await sender.run_once()
    await sender.prune_log()
    assert [(d["kind"], d["status"]) for d in await deliveries(database, hook["id"])] == [
        ("order.failed", "pending")
    ]


async def test_commits_cost_the_dispatcher_no_read_while_no_webhook_is_enabled(
    database: Database, vault: Vault, receiver: Receiver
) -> None:
    """Every event-writing commit rings the loop; with no enabled webhook it must not read each time
    (a drain writes three events per order). A webhook changed in this process is looked at at once."""
    sender = dispatcher(database, vault, poll_interval_s=3600)
    looks = 0
    due = sender.due_webhooks

    async def counting_due() -> list[str]:
        nonlocal looks
        looks += 1
        return await due()

    sender.due_webhooks = counting_due  # type: ignore[method-assign]
    loop = asyncio.create_task(sender.run_forever())
    try:
        for _ in range(20):
            await publish(database, "order.created")
            await asyncio.sleep(0.01)
        assert looks == 0

        hook = await register(database, vault, receiver.url, ["order"])
        sender.wake()  # what the API does after a webhook change
        ids = await publish(database, "order.created")
        for _ in range(1000):  # the answer is recorded after the receiver got the POST
            log = await deliveries(database, hook["id"])
            if log and log[-1]["status"] == "delivered":
                break
            await asyncio.sleep(0.02)
        assert [d["status"] for d in await deliveries(database, hook["id"])] == ["delivered"]
        assert [r.event["id"] for r in receiver.snapshot()] == ids[-1:]
        assert looks > 0
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await sender.close()
