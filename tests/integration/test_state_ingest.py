"""Ingestion of real playbook reports at completion: state, hardware, metrics, messages, timeline,
reports, artifacts, all in the completion's transaction; rebuild gives the same state."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from ikoma.domain.errors import NotFound
from ikoma.services import ingest as ingest_module
from ikoma.services import messages, reports, servers, state, timeline
from ikoma.services.artifacts import path_of
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import artifacts, machine_metrics, machine_state, orders, snapshots
from tests.integration.helpers import (
    STALE_AFTER,
    claim_and_start,
    count_rows,
    make_order,
    make_pair,
    make_runner,
)
from tests.integration.state_helpers import ingesting_dispatcher, run_order, state_row
from tests.state_reports import ReportMaker


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    return ReportMaker(tmp_path / "fakes", monkeypatch)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def test_real_reports_build_state_hardware_metrics_messages_and_timeline(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    await run_order(database, dispatcher, pair, await maker.facts())
    await run_order(database, dispatcher, pair, await maker.metrics(df="system/df_full_disks_composed.txt"))
    await run_order(database, dispatcher, pair, await maker.docker(state="down"))

    view = await state.get_state(database, pair.server_id, stale_after=STALE_AFTER)
    assert view["apt_updates"] == 124
    assert view["apt_security"] > 0
    assert view["apt_reboot_required"] is True
    assert view["docker_status"] == "down"
    assert view["disk_warnings"] == 3
    assert view["root_used_percent"] == 92.0
    assert view["health"] == "error"
    assert set(view["outcomes"]) == {"apt.analyze", "system.facts", "system.metrics", "docker.status"}
    assert view["running_order_ids"] == []

    hardware = await state.get_hardware(database, pair.server_id)
    assert len(hardware["gpus"]) == 2
    assert hardware["virtualization"] == "kvm"
    server = await servers.get_server(database, pair.server_id)  # the inventory learns what facts found
    assert (server["os_family"], server["virtualization"]) == (hardware["os"]["family"], "kvm")
    assert server["arch"] == hardware["arch"]
    assert await count_rows(database, machine_metrics, machine_metrics.c.server_id == pair.server_id) == 1

    found = await messages.list_messages(database, pair.server_id)
    categories = {m["category"] for m in found}
    assert {"reboot_required", "error"} <= categories  # reboot, and "docker engine not running"
    assert all(m["acknowledged"] is False and m["count"] == 1 for m in found)

    items, _ = await timeline.list_timeline(database, pair.server_id, limit=200)
    types = [i["type"] for i in items]
    for expected in (
        "state.reboot_required",
        "state.security_updates",
        "state.disk_warning",
        "state.docker_down",
        "order.succeeded",
        "order.running",
        "order.claimed",
        "order.queued",
        "runner.attached",
    ):
        assert expected in types, (expected, types)
    assert items == sorted(items, key=lambda i: i["at"], reverse=True)

    listed, _ = await reports.list_reports(database, pair.server_id)
    assert len(listed) == 4
    assert {r["playbook_key"] for r in listed} == set(view["outcomes"])


async def test_failed_order_records_last_error_report_and_raw_log_kept_longer(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    lines = ["Reading package lists...\n", "E: Unable to locate package ikoma-nonexistent-pkg\n"]
    failing = await maker.apt_failing()
    done = await run_order(database, dispatcher, pair, failing, log_lines=lines)
    assert done["status"] == "QUEUED"  # apt.analyze retries; the failure was still ingested

    row = await state_row(database, pair.server_id)
    assert row is not None
    assert row["apt_status"] == "error"
    assert row["last_error_playbook"] == "apt.analyze"
    assert "E: Unable to locate package" in row["last_error_message"]

    listed, _ = await reports.list_reports(database, pair.server_id)
    report = await reports.get_report(database, listed[0]["id"])
    assert report["status"] == "FAILED"
    assert "## Errors" in report["markdown"]
    assert report["artifact_id"] is not None

    async with database.read() as tx:
        artifact = (
            (await tx.execute(select(artifacts).where(artifacts.c.id == report["artifact_id"])))
            .mappings()
            .one()
        )
        lifetime_days = (
            await tx.execute(
                select(
                    (func.julianday(artifacts.c.expires_at) - func.julianday(artifacts.c.created_at))
                    if database.is_sqlite
                    else func.extract("epoch", artifacts.c.expires_at - artifacts.c.created_at) / 86400.0
                ).where(artifacts.c.id == report["artifact_id"])
            )
        ).scalar_one()
    data = path_of(data_dir, str(artifact["id"])).read_bytes()
    assert data == "".join(lines).encode()
    assert artifact["sha256"] == hashlib.sha256(data).hexdigest()
    assert artifact["bytes"] == len(data)
    assert artifact["retention_policy"] == "failed"
    assert float(lifetime_days) == pytest.approx(90, abs=0.01)

    # a later successful analysis clears the error; the snapshot history keeps both
    await run_order(database, dispatcher, pair, await maker.apt_up_to_date())
    row = await state_row(database, pair.server_id)
    assert row is not None
    assert row["last_error_order_id"] is None
    assert row["apt_status"] == "up_to_date"


async def test_rebuild_from_snapshots_gives_the_same_row(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    for produced in (
        await maker.apt_analyze(),
        await maker.metrics(),
        await maker.facts(),
        await maker.apt_failing(),
        await maker.docker(),
        await maker.metrics(df="system/df_full_disks_composed.txt"),
    ):
        await run_order(database, dispatcher, pair, produced)
    before = await state_row(database, pair.server_id)
    hardware_before = await state.get_hardware(database, pair.server_id)
    async with database.write() as tx:
        await tx.execute(delete(machine_state).where(machine_state.c.server_id == pair.server_id))
    assert await state.rebuild_states(database) == 1
    assert await state_row(database, pair.server_id) == before
    assert await state.get_hardware(database, pair.server_id) == hardware_before
    assert await state.rebuild_states(database, pair.server_id) == 1
    assert await state_row(database, pair.server_id) == before


async def test_ingestion_failure_rolls_back_the_completion(
    database: Database, maker: ReportMaker, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: when ingestion fails, the order is not completed and nothing derived remains."""
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    produced = await maker.metrics()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("report store broken")

    monkeypatch.setattr(ingest_module.reports, "record", broken)
    with pytest.raises(RuntimeError):
        await run_order(database, dispatcher, pair, produced, log_lines=["load 0.1\n"])
    async with database.read() as tx:
        status = (await tx.execute(select(orders.c.status))).scalar_one()
    assert status == "RUNNING"
    assert await count_rows(database, snapshots) == 0
    assert await count_rows(database, machine_metrics) == 0
    assert await count_rows(database, artifacts) == 0
    assert await state_row(database, pair.server_id) is None


async def test_important_messages_dedup_ack_and_reappear_as_new(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    reboot = [
        m
        for m in await messages.list_messages(database, pair.server_id)
        if m["category"] == "reboot_required"
    ]
    assert len(reboot) == 1
    assert reboot[0]["count"] == 2
    assert reboot[0]["first_seen_at"] <= reboot[0]["last_seen_at"]

    acked = await messages.acknowledge(database, pair.server_id, reboot[0]["id"], actor="api_client:ops")
    assert acked["acknowledged"] is True
    assert acked["acknowledged_by"] == "api_client:ops"
    assert acked["acknowledged_at"] is not None
    assert [m["id"] for m in await messages.list_messages(database, pair.server_id, only_new=True)].count(
        reboot[0]["id"]
    ) == 0
    items, _ = await timeline.list_timeline(database, pair.server_id, types=["message"])
    assert [i["type"] for i in items] == ["message.acknowledged"]
    assert items[0]["actor"] == "api_client:ops"

    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    again = next(
        m for m in await messages.list_messages(database, pair.server_id) if m["id"] == reboot[0]["id"]
    )
    assert again["acknowledged"] is False  # seen after the ack: new again
    assert again["count"] == 3
    assert [a["by"] for a in again["acks"]] == ["api_client:ops"]  # the history of who acked stays


async def test_acknowledging_a_message_of_another_server_is_not_found(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    (data_dir.parent / "fakes").mkdir()
    pair = await make_pair(database)
    other = await make_pair(database, "web-2")
    await run_order(database, ingesting_dispatcher(database, data_dir), pair, await maker.apt_analyze())
    message = (await messages.list_messages(database, pair.server_id))[0]
    with pytest.raises(NotFound) as refused:
        await messages.acknowledge(database, other.server_id, message["id"], actor="admin:x")
    assert getattr(refused.value, "reason", None) == "message_not_found"


async def test_timeline_pages_with_a_cursor_and_filters_by_type_and_severity(
    database: Database, data_dir: Path
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    for _ in range(3):
        await make_order(database, pair.server_id)
        running = await claim_and_start(dispatcher, pair.identity)
        from tests.integration.helpers import complete

        await complete(dispatcher, pair.identity, str(running["id"]), lease_token=running["lease_token"])
    everything, _ = await timeline.list_timeline(database, pair.server_id, limit=500)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await timeline.list_timeline(database, pair.server_id, limit=4, cursor=cursor)
        seen += [i["id"] for i in page]
        if cursor is None:
            break
    assert seen == [i["id"] for i in everything]
    assert len(set(seen)) == len(seen) == 3 * 4 + 1  # 4 transitions per order, and the attach
    orders_only, _ = await timeline.list_timeline(database, pair.server_id, types=["order"], limit=500)
    assert {i["type"] for i in orders_only} == {
        "order.queued",
        "order.claimed",
        "order.running",
        "order.succeeded",
    }
    succeeded, _ = await timeline.list_timeline(database, pair.server_id, types=["order.succeeded"])
    assert len(succeeded) == 3
    assert await timeline.list_timeline(database, pair.server_id, severities=["error"]) == ([], None)


async def test_runner_online_offline_attach_and_detach_are_on_the_timeline(database: Database) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, Path("/nonexistent"))
    await dispatcher.record_heartbeat(pair.identity, version="t", hostname="h", capabilities=[])
    async with database.write() as tx:
        assert await timeline.track_presence(tx, stale_after=STALE_AFTER) == 1
    async with database.write() as tx:
        assert await timeline.track_presence(tx, stale_after=STALE_AFTER) == 0  # once per change
    from ikoma.storage.tables import runners

    async with database.write() as tx:
        await tx.execute(
            runners.update()
            .where(runners.c.id == pair.runner_id)
            .values(last_heartbeat_at=db_now(-STALE_AFTER - 5))
        )
        assert await timeline.track_presence(tx, stale_after=STALE_AFTER) == 1
    spare = await make_runner(database, "spare")
    await servers.update_server(database, pair.server_id, {"runner_id": str(spare["id"])})
    items, _ = await timeline.list_timeline(database, pair.server_id, types=["runner"])
    assert [i["type"] for i in items] == [
        "runner.attached",
        "runner.detached",
        "runner.offline",
        "runner.online",
        "runner.attached",
    ]
    assert items[2]["severity"] == "warning"
