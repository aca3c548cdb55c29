"""Retention: expired artifacts go (files and rows, with the reason), pinned and failed ones stay longer,
orphan files are swept, metrics are downsampled and bounded, old snapshots pruned without changing state."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from ikoma.domain.errors import Conflict
from ikoma.services import state
from ikoma.services.artifacts import Artifacts, path_of
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import artifacts, machine_metrics, snapshots
from tests.integration.helpers import count_rows, make_pair
from tests.integration.state_helpers import RETENTION, ingesting_dispatcher, run_order, state_row, sweeper
from tests.state_reports import ReportMaker


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    (tmp_path / "fakes").mkdir()
    return ReportMaker(tmp_path / "fakes", monkeypatch)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


async def _artifact_rows(db: Database) -> dict[str, dict[str, object]]:
    async with db.read() as tx:
        return {str(r["id"]): dict(r) for r in (await tx.execute(select(artifacts))).mappings()}


async def _age(db: Database, artifact_id: str, *, expired: bool) -> None:
    async with db.write() as tx:
        await tx.execute(
            update(artifacts)
            .where(artifacts.c.id == artifact_id)
            .values(expires_at=db_now(-60 if expired else 3600))
        )


async def test_expired_artifacts_lose_file_and_row_keeps_why_pinned_and_failed_stay(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    await run_order(database, dispatcher, pair, await maker.apt_up_to_date(), log_lines=["ok\n"])
    await run_order(database, dispatcher, pair, await maker.facts(), log_lines=["facts\n"])
    await run_order(database, dispatcher, pair, await maker.apt_failing(), log_lines=["E: no\n"])
    rows = await _artifact_rows(database)
    by_policy = {str(r["retention_policy"]): key for key, r in rows.items()}
    assert set(by_policy) == {"default", "failed"}
    assert len(rows) == 3
    failed = by_policy["failed"]
    defaults = [key for key, r in rows.items() if r["retention_policy"] == "default"]
    # the failed log expires later than the successful ones created before it
    assert all(rows[failed]["expires_at"] > rows[d]["expires_at"] for d in defaults)  # type: ignore[operator]

    artifact_service = Artifacts(data_dir, RETENTION)
    pinned = await artifact_service.pin(database, defaults[1])
    assert pinned["retention_policy"] == "pinned"
    assert pinned["expires_at"] is None
    # everything past its time: only the unpinned default goes; pinned has no expiry
    await _age(database, defaults[0], expired=True)
    await _age(database, failed, expired=False)
    swept = await sweeper(database, data_dir).sweep()
    assert swept.expired == [defaults[0]]
    after = await _artifact_rows(database)
    assert after[defaults[0]]["deleted_at"] is not None
    assert after[defaults[0]]["delete_reason"] == "expired: default retention"
    assert not path_of(data_dir, defaults[0]).exists()
    assert path_of(data_dir, defaults[1]).exists()
    assert path_of(data_dir, failed).exists()
    with pytest.raises(Conflict) as gone:
        await artifact_service.read(database, defaults[0])
    assert getattr(gone.value, "reason", None) == "artifact_deleted"

    unpinned = await artifact_service.unpin(database, defaults[1])
    assert unpinned["retention_policy"] == "default"
    assert unpinned["expires_at"] is not None
    row, data = await artifact_service.read(database, defaults[1])
    assert data == b"facts\n"
    assert row["sha256"]


async def test_orphan_files_are_swept_after_the_grace_and_live_ones_kept(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    pair = await make_pair(database)
    await run_order(
        database, ingesting_dispatcher(database, data_dir), pair, await maker.metrics(), log_lines=["m\n"]
    )
    (live_id,) = list(await _artifact_rows(database))
    folder = data_dir / "artifacts"
    orphan = folder / str(uuid.uuid4())  # a completion that rolled back after writing its file
    orphan.write_bytes(b"lost")
    temp = folder / f"{uuid.uuid4()}.tmp"  # a write interrupted before its rename
    temp.write_bytes(b"half")
    young = folder / str(uuid.uuid4())  # may belong to a completion committing right now
    young.write_bytes(b"young")
    old = time.time() - 7200
    for path in (orphan, temp, path_of(data_dir, live_id)):
        os.utime(path, (old, old))
    swept = await sweeper(database, data_dir, orphan_grace=3600).sweep()
    assert sorted(swept.orphans) == sorted([orphan.name, temp.name])
    assert not orphan.exists()
    assert not temp.exists()
    assert young.exists()
    assert path_of(data_dir, live_id).exists()


async def test_metrics_older_than_the_raw_window_become_hourly_averages_and_are_bounded(
    database: Database, data_dir: Path
) -> None:
    pair = await make_pair(database)
    async with database.write() as tx:
        # two hours of 20-minute points, 2 days ago, and 3 recent points
        for minutes in (0, 20, 40, 60, 80, 100):
            await tx.execute(
                insert(machine_metrics).values(
                    server_id=pair.server_id,
                    at=db_now(-(48 * 3600) + minutes * 60),
                    period_s=0,
                    samples=1,
                    load1=float(minutes),
                    load5=None,
                    memory_used_percent=50.0,
                    root_used_percent=None,
                )
            )
        for minutes in (1, 2, 3):
            await tx.execute(
                insert(machine_metrics).values(
                    server_id=pair.server_id, at=db_now(-minutes * 60), period_s=0, samples=1, load1=1.0
                )
            )
    swept = await sweeper(database, data_dir, metrics_raw_hours=24, metrics_max_points=1000).sweep()
    assert swept.downsampled == 6
    async with database.read() as tx:
        hourly = list(
            (
                await tx.execute(
                    select(machine_metrics)
                    .where(machine_metrics.c.period_s == 3600)
                    .order_by(machine_metrics.c.at)
                )
            ).mappings()
        )
    assert sum(h["samples"] for h in hourly) == 6
    assert 2 <= len(hourly) <= 3  # six points 20 minutes apart span two or three clock hours
    assert all(h["memory_used_percent"] == 50.0 and h["root_used_percent"] is None for h in hourly)
    weighted = sum(h["load1"] * h["samples"] for h in hourly) / 6
    assert weighted == pytest.approx(sum((0, 20, 40, 60, 80, 100)) / 6)
    assert await count_rows(database, machine_metrics, machine_metrics.c.period_s == 0) == 3

    total = await count_rows(database, machine_metrics)
    swept = await sweeper(database, data_dir, metrics_max_points=total - 2).sweep()
    assert swept.trimmed == 2
    assert await count_rows(database, machine_metrics) == total - 2


async def test_old_snapshots_are_pruned_but_state_rebuilds_the_same(
    database: Database, maker: ReportMaker, data_dir: Path
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, data_dir)
    for produced in (
        await maker.apt_analyze(),
        await maker.metrics(),
        await maker.apt_failing(),
        await maker.metrics(df="system/df_full_disks_composed.txt"),
        await maker.apt_failing(),
        await maker.metrics(),
    ):
        await run_order(database, dispatcher, pair, produced)
    async with database.write() as tx:
        await tx.execute(update(snapshots).values(created_at=db_now(-40 * 86400)))
    # the state of every snapshot, aged (rebuild equals the completions' state: test_state_ingest)
    await state.rebuild_states(database, pair.server_id)
    before = await state_row(database, pair.server_id)
    swept = await sweeper(database, data_dir, snapshot_days=30).sweep()
    # kept: newest metrics; apt: newest (failed) and newest successful
    assert swept.snapshots_pruned == 3
    async with database.read() as tx:
        kept = [(r.kind, r.status) for r in await tx.execute(select(snapshots).order_by(snapshots.c.id))]
    assert kept == [("apt.analyze", "SUCCEEDED"), ("apt.analyze", "FAILED"), ("system.metrics", "SUCCEEDED")]
    await state.rebuild_states(database, pair.server_id)
    assert await state_row(database, pair.server_id) == before
