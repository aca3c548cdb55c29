"""The operator's side on both backends: servers, runners, playbooks, order listing and events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.services import orders, playbooks, runners, servers
from ikoma.storage.database import Database
from ikoma.storage.tables import orders as orders_table
from tests.integration import helpers as h

S = OrderStatus


async def _runner_row(database: Database, runner_id: str) -> dict[str, Any]:
    listed = await runners.list_runners(database, stale_after=h.STALE_AFTER)
    [row] = [r for r in listed if r["id"] == runner_id]
    return row


# --- servers ---------------------------------------------------------------------------------------


async def test_created_server_is_listed_with_its_fields_and_no_runner(database: Database) -> None:
    created = await h.make_server(database, "web-1")

    assert created["name"] == "web-1"
    assert created["hostname"] == "web-1.example.net"
    assert created["labels"] == {"env": "prod"}
    assert (created["runner_id"], created["runner_name"]) == (None, None)
    assert "deleted_at" not in created
    assert await servers.list_servers(database) == [created]
    assert await servers.get_server(database, created["id"]) == created


async def test_server_name_already_in_use_is_a_conflict(database: Database) -> None:
    await h.make_server(database, "web-1")

    with pytest.raises(Conflict) as refused:
        await h.make_server(database, "web-1")

    assert refused.value.reason == "conflict"
    assert refused.value.details == {"field": "name"}
    assert len(await servers.list_servers(database)) == 1


async def test_renaming_a_server_to_a_name_in_use_is_a_conflict(database: Database) -> None:
    await h.make_server(database, "web-1")
    other = await h.make_server(database, "web-2")

    with pytest.raises(Conflict):
        await servers.update_server(database, other["id"], {"name": "web-1"})

    assert (await servers.get_server(database, other["id"]))["name"] == "web-2"


async def test_partial_update_changes_only_the_given_fields(database: Database) -> None:
    server = await h.make_server(database, "web-1")

    updated = await servers.update_server(
        database, server["id"], {"port": 2222, "labels": {"env": "staging"}}
    )

    assert (updated["port"], updated["labels"]) == (2222, {"env": "staging"})
    assert (updated["hostname"], updated["os_family"]) == (server["hostname"], server["os_family"])


async def test_attached_runner_shows_on_the_server_and_the_server_on_the_runner(database: Database) -> None:
    server = await h.make_server(database, "web-1")
    runner = await h.make_runner(database, "runner-web-1")

    attached = await h.attach(database, server["id"], runner["id"])

    assert (attached["runner_id"], attached["runner_name"]) == (runner["id"], "runner-web-1")
    row = await _runner_row(database, runner["id"])
    assert (row["server_id"], row["server_name"]) == (server["id"], "web-1")


async def test_unattached_runner_lists_no_server(database: Database) -> None:
    runner = await h.make_runner(database, "runner-spare")

    assert (runner["server_id"], runner["server_name"]) == (None, None)
    row = await _runner_row(database, runner["id"])
    assert (row["server_id"], row["server_name"]) == (None, None)
    assert "token_hash" not in row
    assert "token" not in row


async def test_detaching_a_runner_clears_both_sides(database: Database) -> None:
    pair = await h.make_pair(database)

    detached = await h.attach(database, pair.server_id, None)

    assert (detached["runner_id"], detached["runner_name"]) == (None, None)
    row = await _runner_row(database, pair.runner_id)
    assert (row["server_id"], row["server_name"]) == (None, None)


async def test_attaching_a_runner_already_attached_elsewhere_is_a_conflict(database: Database) -> None:
    pair = await h.make_pair(database, "web-1")
    other = await h.make_server(database, "web-2")

    with pytest.raises(Conflict) as refused:
        await h.attach(database, other["id"], pair.runner_id)

    assert refused.value.reason == "conflict"
    assert refused.value.details == {"runnerId": pair.runner_id, "serverId": pair.server_id}
    assert (await servers.get_server(database, other["id"]))["runner_id"] is None
    assert (await _runner_row(database, pair.runner_id))["server_id"] == pair.server_id


async def test_creating_a_server_with_a_runner_attached_elsewhere_is_a_conflict(database: Database) -> None:
    pair = await h.make_pair(database, "web-1")

    with pytest.raises(Conflict):
        await h.make_server(database, "web-2", runner_id=pair.runner_id)

    assert [s["name"] for s in await servers.list_servers(database)] == ["web-1"]


async def test_reattaching_a_runner_to_its_own_server_is_allowed(database: Database) -> None:
    pair = await h.make_pair(database)

    again = await h.attach(database, pair.server_id, pair.runner_id)

    assert again["runner_id"] == pair.runner_id


async def test_attaching_an_unknown_runner_is_unknown_runner(database: Database) -> None:
    server = await h.make_server(database, "web-1")

    with pytest.raises(Invalid) as refused:
        await h.attach(database, server["id"], str(uuid.uuid4()))

    assert refused.value.reason == "unknown_runner"
    assert refused.value.status_code == 422


async def test_unknown_server_is_not_found(database: Database) -> None:
    with pytest.raises(NotFound):
        await servers.get_server(database, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await servers.update_server(database, str(uuid.uuid4()), {"port": 2200})
    with pytest.raises(NotFound):
        await servers.delete_server(database, str(uuid.uuid4()))


async def test_server_with_an_order_that_has_not_ended_cannot_be_deleted(database: Database) -> None:
    dispatcher = h.make_dispatcher(database)
    refused_for = []
    for status in (S.QUEUED, S.CLAIMED, S.RUNNING):
        pair = await h.make_pair(database, f"web-{status.value.lower()}")
        await h.make_order(database, pair.server_id)
        if status == S.CLAIMED:
            await dispatcher.claim_once(pair.identity)
        if status == S.RUNNING:
            await h.claim_and_start(dispatcher, pair.identity)

        with pytest.raises(Conflict) as refused:
            await servers.delete_server(database, pair.server_id)

        assert refused.value.details == {"serverId": pair.server_id}
        assert (await servers.get_server(database, pair.server_id))["runner_id"] == pair.runner_id
        refused_for.append(status)
    assert refused_for == [S.QUEUED, S.CLAIMED, S.RUNNING]


async def test_server_can_be_deleted_once_its_orders_ended_and_keeps_them_as_history(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    with pytest.raises(Conflict):
        await servers.delete_server(database, pair.server_id)
    await orders.cancel_order(database, order["id"], reason="server retired")

    await servers.delete_server(database, pair.server_id)

    with pytest.raises(NotFound):
        await servers.get_server(database, pair.server_id)
    assert await servers.list_servers(database) == []
    assert (await h.fetch_order(database, order["id"]))["server_id"] == pair.server_id
    row = await _runner_row(database, pair.runner_id)
    assert (row["server_id"], row["server_name"]) == (None, None)


async def test_name_of_a_deleted_server_can_be_reused(database: Database) -> None:
    old = await h.make_server(database, "web-1")
    await servers.delete_server(database, old["id"])

    new = await h.make_server(database, "web-1")

    assert new["id"] != old["id"]
    assert [s["id"] for s in await servers.list_servers(database)] == [new["id"]]


async def test_runner_freed_by_a_deleted_server_can_be_attached_again(database: Database) -> None:
    pair = await h.make_pair(database, "web-1")
    await servers.delete_server(database, pair.server_id)
    replacement = await h.make_server(database, "web-1b")

    attached = await h.attach(database, replacement["id"], pair.runner_id)

    assert attached["runner_id"] == pair.runner_id


async def test_order_for_a_deleted_server_is_unknown_server(database: Database) -> None:
    server = await h.make_server(database, "web-1")
    await servers.delete_server(database, server["id"])

    with pytest.raises(Invalid) as refused:
        await h.make_order(database, server["id"])

    assert refused.value.reason == "unknown_server"


# --- runners ------------------------------------------------------------------------------------------


async def test_runner_name_already_in_use_is_a_conflict(database: Database) -> None:
    await h.make_runner(database, "runner-web-1")

    with pytest.raises(Conflict) as refused:
        await h.make_runner(database, "runner-web-1")

    assert refused.value.details == {"field": "name"}


async def test_new_runner_token_is_shown_once_and_only_its_prefix_is_listed(database: Database) -> None:
    runner = await h.make_runner(database, "runner-web-1")

    assert runner["token"].startswith("ikr_")
    assert runner["token"].startswith(runner["token_prefix"])
    row = await _runner_row(database, runner["id"])
    assert runner["token"] not in {str(v) for v in row.values()}
    assert row["online"] is False


async def test_runner_that_heartbeats_is_listed_online(database: Database) -> None:
    pair = await h.make_pair(database)

    await h.make_dispatcher(database).record_heartbeat(
        pair.identity, version="1.4.0", hostname="web-1", capabilities=["shell", "apt"]
    )

    row = await _runner_row(database, pair.runner_id)
    assert row["online"] is True
    assert (row["version"], row["hostname"], row["capabilities"]) == ("1.4.0", "web-1", ["shell", "apt"])


# --- playbooks ---------------------------------------------------------------------------------------


def _playbook(key: str = "nginx.reload", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "key": key,
        "name": "Reload nginx",
        "description": "Test the configuration, then reload nginx.",
        "params_schema": {"type": "object", "properties": {"dryRun": {"type": "boolean"}}},
        "min_role": "operator",
        "destructive": False,
        "default_timeout_s": 120,
        "max_attempts": 1,
    }
    fields.update(overrides)
    return fields


async def test_created_playbook_is_listed_as_not_builtin(database: Database) -> None:
    created = await playbooks.create_playbook(database, _playbook())

    assert created["builtin"] is False
    assert created["params_schema"] == _playbook()["params_schema"]
    listed = {p["key"]: p for p in await playbooks.list_playbooks(database)}
    assert listed["nginx.reload"] == created
    assert listed["system.test_ping"]["builtin"] is True


async def test_playbook_key_already_in_use_is_a_conflict(database: Database) -> None:
    await playbooks.create_playbook(database, _playbook())

    with pytest.raises(Conflict) as refused:
        await playbooks.create_playbook(database, _playbook(name="Another reload"))

    assert refused.value.details == {"field": "key"}


async def test_builtin_playbook_key_cannot_be_taken(database: Database) -> None:
    with pytest.raises(Conflict):
        await playbooks.create_playbook(database, _playbook("system.test_ping"))


async def test_order_takes_its_timeout_and_attempts_from_its_playbook(database: Database) -> None:
    pair = await h.make_pair(database)
    await playbooks.create_playbook(database, _playbook(default_timeout_s=120, max_attempts=1))

    order = await h.make_order(database, pair.server_id, "nginx.reload", params={"dryRun": True})

    assert (order["timeout_s"], order["max_attempts"]) == (120, 1)


async def test_order_with_params_outside_the_playbook_schema_is_refused_with_the_path(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    await playbooks.create_playbook(database, _playbook())

    with pytest.raises(Invalid) as refused:
        await h.make_order(database, pair.server_id, "nginx.reload", params={"dryRun": "yes"})

    assert [e["path"] for e in refused.value.details["errors"]] == ["params.dryRun"]


async def test_order_for_an_unknown_playbook_is_unknown_playbook(database: Database) -> None:
    pair = await h.make_pair(database)

    with pytest.raises(Invalid) as refused:
        await h.make_order(database, pair.server_id, "nginx.restart")

    assert refused.value.reason == "unknown_playbook"


# --- order listing -------------------------------------------------------------------------------------


async def _spread_creation_times(database: Database, order_ids: list[str]) -> None:
    """Give the orders distinct creation times, one second apart, in the order given (oldest first)."""
    for n, order_id in enumerate(order_ids):
        await h.backdate(database, order_id, created_at=len(order_ids) - n)


async def _all_pages(database: Database, limit: int, **filters: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        items, cursor = await orders.list_orders(database, limit=limit, cursor=cursor, **filters)
        pages.append(items)
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


async def test_cursor_pages_cover_every_order_once_newest_first(database: Database) -> None:
    pair = await h.make_pair(database)
    created = [
        (await h.make_order(database, pair.server_id, params={"message": str(n)}))["id"] for n in range(25)
    ]
    await _spread_creation_times(database, created)

    pages = await _all_pages(database, limit=10)

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [o["id"] for page in pages for o in page] == list(reversed(created))


async def test_cursor_pages_have_no_gap_or_duplicate_when_orders_share_a_creation_time(
    database: Database,
) -> None:
    pair = await h.make_pair(database)
    created = [(await h.make_order(database, pair.server_id))["id"] for _ in range(25)]
    same_instant = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    async with database.write() as tx:
        await tx.execute(update(orders_table).values(created_at=same_instant))

    pages = await _all_pages(database, limit=10)

    listed = [o["id"] for page in pages for o in page]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert sorted(listed) == sorted(created)
    assert listed == sorted(created, reverse=True)  # ties fall back to the id, descending


async def test_last_full_page_has_no_next_cursor(database: Database) -> None:
    pair = await h.make_pair(database)
    for _ in range(10):
        await h.make_order(database, pair.server_id)

    items, cursor = await orders.list_orders(database, limit=10)

    assert len(items) == 10
    assert cursor is None


async def test_cursor_not_issued_by_the_api_is_refused(database: Database) -> None:
    with pytest.raises(Invalid) as refused:
        await orders.list_orders(database, cursor="not-a-cursor")
    assert refused.value.details == {"field": "cursor"}


async def test_order_list_filters_by_status_server_runner_and_playbook(database: Database) -> None:
    web = await h.make_pair(database, "web-1")
    db_pair = await h.make_pair(database, "db-1")
    ping = await h.make_order(database, web.server_id)
    facts = await h.make_order(database, web.server_id, "system.facts")
    db_ping = await h.make_order(database, db_pair.server_id)
    claimed = await h.make_dispatcher(database).claim_once(db_pair.identity)
    assert claimed is not None

    async def ids(**filters: Any) -> set[str]:
        items, _ = await orders.list_orders(database, **filters)
        return {o["id"] for o in items}

    assert await ids() == {ping["id"], facts["id"], db_ping["id"]}
    assert await ids(status=S.QUEUED) == {ping["id"], facts["id"]}
    assert await ids(status=S.CLAIMED) == {db_ping["id"]}
    assert await ids(server_id=web.server_id) == {ping["id"], facts["id"]}
    assert await ids(runner_id=db_pair.runner_id) == {db_ping["id"]}
    assert await ids(playbook_key="system.facts") == {facts["id"]}
    assert await ids(server_id=web.server_id, playbook_key="system.test_ping") == {ping["id"]}
    assert await ids(status=S.RUNNING) == set()


async def test_filtered_pages_continue_within_the_filter(database: Database) -> None:
    web = await h.make_pair(database, "web-1")
    db_pair = await h.make_pair(database, "db-1")
    mine = []
    for n in range(12):
        mine.append((await h.make_order(database, web.server_id))["id"])
        await h.make_order(database, db_pair.server_id, params={"message": str(n)})

    pages = await _all_pages(database, limit=5, server_id=web.server_id)

    assert sorted(o["id"] for page in pages for o in page) == sorted(mine)
    assert [len(p) for p in pages] == [5, 5, 2]


# --- events --------------------------------------------------------------------------------------------


async def test_events_are_listed_oldest_first_with_actor_and_attempt(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    dispatcher = h.make_dispatcher(database)
    running = await h.claim_and_start(dispatcher, pair.identity)
    await h.complete(dispatcher, pair.identity, order["id"], lease_token=running["lease_token"])

    events = await orders.list_events(database, order["id"])

    assert [(e["from_status"], e["to_status"], e["reason"], e["actor"], e["attempt"]) for e in events] == [
        (None, "QUEUED", "created", "admin", 0),
        ("QUEUED", "CLAIMED", "claimed", f"runner:{pair.runner_id}", 1),
        ("CLAIMED", "RUNNING", "started", f"runner:{pair.runner_id}", 1),
        ("RUNNING", "SUCCEEDED", "completed", f"runner:{pair.runner_id}", 1),
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["order_id"] == order["id"] for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


async def test_events_of_an_unknown_order_are_not_found(database: Database) -> None:
    with pytest.raises(NotFound):
        await orders.list_events(database, str(uuid.uuid4()))


async def test_events_of_one_order_exclude_the_others(database: Database) -> None:
    pair = await h.make_pair(database)
    first = await h.make_order(database, pair.server_id)
    second = await h.make_order(database, pair.server_id)
    await orders.cancel_order(database, second["id"], reason=None)

    assert await h.transitions(database, first["id"]) == [(None, "QUEUED", "created")]
    assert await h.transitions(database, second["id"]) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CANCELLED", "cancelled_by_user"),
    ]
