"""Every listed change writes its event, in the transaction that makes it (both backends).

Runners, servers, state ingestion (messages, reboot, updates, report, artifact), tool calls from the
audit, API clients. Order transitions are in test_event_log.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.roles import Role
from ikoma.services import api_clients, audit, events, messages, runners, servers, timeline
from ikoma.services.events import Event
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runners as runners_table
from tests.integration import helpers as h
from tests.integration.state_helpers import ingesting_dispatcher, run_order
from tests.state_reports import ReportMaker

ADMIN = "admin"


async def head(db: Database) -> int:
    async with db.read() as tx:
        return await events.last_id(tx)


async def logged(db: Database, after: int, *kinds: str) -> list[Event]:
    async with db.read() as tx:
        return await events.read(tx, after=after, limit=1000, kinds=list(kinds))


def kinds(found: list[Event]) -> list[str]:
    return [e.kind for e in found]


def no_secret(found: list[Event], *secrets: str) -> None:
    for event in found:
        text = str(event.to_json())
        for secret in secrets:
            assert secret not in text, f"{event.kind} carries a secret"


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    (tmp_path / "fakes").mkdir()
    return ReportMaker(tmp_path / "fakes", monkeypatch)


async def test_runner_registered_revoked_rotated_deleted_are_logged_without_tokens(
    database: Database,
) -> None:
    start = await head(database)
    pair = await h.make_pair(database)
    spare = await h.make_runner(database, "spare")
    rotated = await runners.rotate_token(database, pair.runner_id, actor=ADMIN, stale_after=h.STALE_AFTER)
    await runners.revoke_runner(
        database, h.make_reconciler(database), pair.runner_id, actor=ADMIN, stale_after=h.STALE_AFTER
    )
    await runners.delete_runner(database, str(spare["id"]), actor=ADMIN, stale_after=h.STALE_AFTER)

    found = await logged(database, start, "runner")
    assert kinds(found) == [
        "runner.registered",
        "runner.registered",
        "runner.token_rotated",
        "runner.revoked",
        "runner.deleted",
    ]
    assert found[0].runner_id == pair.runner_id
    assert found[2].server_id == pair.server_id  # the runner serves this server
    assert found[3].actor == ADMIN
    assert found[3].data["requeuedOrderIds"] == []
    assert found[4].server_id is None  # the spare served no server
    no_secret(found, pair.token, str(spare["token"]), str(rotated["token"]))


async def test_revoking_twice_logs_one_revocation(database: Database) -> None:
    pair = await h.make_pair(database)
    start = await head(database)
    for _ in range(2):
        await runners.revoke_runner(
            database, h.make_reconciler(database), pair.runner_id, actor=ADMIN, stale_after=h.STALE_AFTER
        )
    assert kinds(await logged(database, start, "runner")) == ["runner.revoked"]


async def test_runner_online_then_offline_is_logged_once_per_change(database: Database) -> None:
    pair = await h.make_pair(database)
    dispatcher = h.make_dispatcher(database)
    start = await head(database)
    await dispatcher.record_heartbeat(pair.identity, version="t", hostname="h", capabilities=[])
    for _ in range(2):
        async with database.write() as tx:
            await timeline.track_presence(tx, stale_after=h.STALE_AFTER)
    async with database.write() as tx:
        await tx.execute(
            runners_table.update()
            .where(runners_table.c.id == pair.runner_id)
            .values(last_heartbeat_at=db_now(-h.STALE_AFTER - 5))
        )
        await timeline.track_presence(tx, stale_after=h.STALE_AFTER)
    found = await logged(database, start, "runner")
    assert kinds(found) == ["runner.online", "runner.offline"]
    assert {e.runner_id for e in found} == {pair.runner_id}
    assert {e.server_id for e in found} == {pair.server_id}


async def test_server_created_attached_changed_deleted_are_logged(database: Database) -> None:
    runner = await h.make_runner(database, "r1")
    start = await head(database)
    server = await h.make_server(database, "db-1", runner_id=str(runner["id"]))
    server_id = str(server["id"])
    await servers.update_server(database, server_id, {"labels": {"env": "dev"}, "os_version": "13"})
    await servers.update_server(database, server_id, {"runner_id": None})
    await servers.delete_server(database, server_id)

    found = await logged(database, start, "server")
    assert kinds(found) == [
        "server.created",
        "server.attached",
        "server.changed",
        "server.attached",
        "server.deleted",
    ]
    assert {e.server_id for e in found} == {server_id}
    assert found[0].data == {"name": "db-1", "hostname": "db-1.example.net"}
    assert found[1].data == {"runnerId": str(runner["id"]), "previousRunnerId": None}
    assert found[2].data == {"fields": ["labels", "osVersion"]}
    assert found[3].data == {"runnerId": None, "previousRunnerId": str(runner["id"])}


async def test_a_refused_change_logs_nothing(database: Database) -> None:
    await h.make_server(database, "web-1")
    start = await head(database)
    with pytest.raises(Conflict):
        await h.make_server(database, "web-1")  # the name is taken: the transaction rolls back
    assert await logged(database, start) == []


async def test_ingestion_logs_state_changes_messages_report_and_artifact_only_when_they_change(
    database: Database, maker: ReportMaker, tmp_path: Path
) -> None:
    pair = await h.make_pair(database)
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    start = await head(database)
    done = await run_order(database, dispatcher, pair, await maker.apt_analyze(), log_lines=["apt says hi"])
    order_id = str(done["id"])

    found = [e for e in await logged(database, start) if e.topic != "order"]
    assert {"state.reboot_required", "state.updates_found", "message.created"} <= set(kinds(found))
    assert kinds(found)[-2:] == ["artifact.stored", "report.stored"]
    assert all(e.server_id == pair.server_id and e.order_id == order_id for e in found)
    updates = next(e for e in found if e.kind == "state.updates_found")
    assert updates.data["updates"] == 124
    assert updates.data["previousUpdates"] == 0
    report = found[-1]
    assert report.data["playbookKey"] == "apt.analyze"
    assert report.data["status"] == "SUCCEEDED"
    assert found[-2].data["bytes"] > 0

    again = await head(database)
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    repeated = {e.kind for e in await logged(database, again) if e.topic != "order"}
    assert repeated == {"report.stored"}  # same state, messages already new: no news


async def test_acknowledging_a_message_is_logged_and_its_return_is_created_again(
    database: Database, maker: ReportMaker, tmp_path: Path
) -> None:
    pair = await h.make_pair(database)
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    message = (await messages.list_messages(database, pair.server_id))[0]
    start = await head(database)
    await messages.acknowledge(database, pair.server_id, str(message["id"]), actor="api_client:abc")
    await messages.acknowledge(database, pair.server_id, str(message["id"]), actor="api_client:abc")
    [acked] = await logged(database, start, "message")
    assert acked.kind == "message.acknowledged"
    assert acked.actor == "api_client:abc"
    assert acked.data["messageId"] == str(message["id"])

    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    back = await logged(database, acked.id, "message.created")
    assert [e.data["messageId"] for e in back] == [str(message["id"])]
    assert back[0].data["again"] is True


def tool_entry(outcome: Any, **overrides: Any) -> audit.AuditEntry:
    fields: dict[str, Any] = {
        "channel": "execute",
        "actor_kind": "api_client",
        "actor_id": "c1",
        "token_prefix": "ikc_abcd",
        "role": "operator",
        "action": "execute:system.test_ping",
        "target": "web-1",
        "params": {"password": "hunter2-secret"},
        "outcome": outcome,
    }
    fields.update(overrides)
    return audit.AuditEntry(**fields)


async def test_tool_calls_and_refusals_are_logged_where_the_audit_records_them(database: Database) -> None:
    pair = await h.make_pair(database)
    order = await h.make_order(database, pair.server_id)
    start = await head(database)
    async with database.write() as tx:
        await audit.append(tx, tool_entry("allowed", order_id=str(order["id"])))
    await audit.record(database, tool_entry("denied", status_code=403, reason="forbidden", channel="mcp"))
    await audit.record(database, tool_entry("error", order_id=str(order["id"]), status_code=500))
    await audit.record(database, tool_entry("allowed", channel="rest", action="POST /v1/servers"))

    found = await logged(database, start)
    assert kinds(found) == ["tool.called", "tool.refused"]
    called, refused = found
    assert called.server_id == pair.server_id  # the order's server
    assert called.actor == "api_client:c1"
    assert called.data["tool"] == "system.test_ping"
    assert refused.data == {
        "tool": "system.test_ping",
        "channel": "mcp",
        "target": "web-1",
        "statusCode": 403,
        "reason": "forbidden",
    }
    no_secret(found, "hunter2-secret")


async def test_api_client_created_and_revoked_once_without_its_token(database: Database) -> None:
    server = await h.make_server(database, "web-1")
    start = await head(database)
    client = await api_clients.create_api_client(
        database, name="ci", role=Role.OPERATOR, created_by=ADMIN, server_ids=[str(server["id"])]
    )
    for _ in range(2):
        await api_clients.revoke_api_client(database, str(client["id"]), actor=ADMIN)
    found = await logged(database, start, "api_client")
    assert kinds(found) == ["api_client.created", "api_client.revoked"]
    assert found[0].data == {
        "clientId": str(client["id"]),
        "name": "ci",
        "role": "operator",
        "serverIds": [str(server["id"])],
    }
    assert all(e.server_id is None for e in found)  # about no server: only unscoped callers see them
    no_secret(found, str(client["token"]))
