"""The retention sweeper (run by the reconciler): expired artifacts, orphan files, metrics, snapshots.

- Artifacts past `expires_at` are marked deleted with the reason, then their files removed (after the
  commit: a crash in between leaves files without a live row, which the orphan pass removes).
- Files under `<data dir>/artifacts/` with no live row (a completion that rolled back after writing its
  file, or a deletion interrupted) are removed once older than a grace period.
- Metrics points older than the raw window are folded into hourly averages; each server keeps at most
  `metrics_max_points` rows (oldest go first).
- Snapshots older than the snapshot retention are deleted unless they are the newest, or the newest
  successful one, of their server and playbook: the derived state depends only on those (see
  domain/machine_state.py), so a rebuild after pruning still gives the same row.
- Events older than the event retention are deleted, oldest first, `EVENT_BATCH` per transaction until
  none is left: a busy fleet writes many per sweep, and short transactions keep writers flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, func, insert, literal, select, update
from sqlalchemy.orm import aliased

from ikoma.services import artifacts as artifact_files
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import artifacts, events, machine_metrics, snapshots

BATCH = 1000
EVENT_BATCH = 5000
HOUR = 3600
METRIC_COLUMNS = ("load1", "load5", "memory_used_percent", "root_used_percent")
ADVISORY_LOCK_KEY = 0x1C0A_0002  # "the IKOMA retention sweeper"


@dataclass
class SweepSummary:
    expired: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    downsampled: int = 0
    trimmed: int = 0
    snapshots_pruned: int = 0
    events_pruned: int = 0

    @property
    def changed(self) -> int:
        return (
            len(self.expired)
            + len(self.orphans)
            + self.downsampled
            + self.trimmed
            + self.snapshots_pruned
            + self.events_pruned
        )


@dataclass
class Sweeper:
    db: Database
    data_dir: Path
    interval: float = 300.0
    orphan_grace: float = 3600.0
    metrics_raw_hours: float = 24.0
    metrics_max_points: int = 2000
    snapshot_days: float = 30.0
    event_days: float = 30.0
    _last: float | None = None

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

    async def sweep(self) -> SweepSummary:
        summary = SweepSummary()
        summary.expired = await self.expire_artifacts()
        summary.orphans = await self.remove_orphans()
        summary.downsampled = await self.downsample_metrics()
        summary.trimmed = await self.bound_metrics()
        summary.snapshots_pruned = await self.prune_snapshots()
        summary.events_pruned = await self.prune_events()
        return summary

    # --- artifacts -------------------------------------------------------------------------------------

    async def expire_artifacts(self) -> list[str]:
        async with self.db.write() as tx:
            candidates = (
                select(artifacts.c.id)
                .where(artifacts.c.deleted_at.is_(None), artifacts.c.expires_at < db_now())
                .limit(BATCH)
            )
            rows = list(
                await tx.execute(
                    update(artifacts)
                    .where(
                        artifacts.c.id.in_(candidates.scalar_subquery()),
                        artifacts.c.deleted_at.is_(None),
                        artifacts.c.expires_at < db_now(),
                    )
                    .values(
                        deleted_at=db_now(),
                        delete_reason=literal("expired: ")
                        + artifacts.c.retention_policy
                        + literal(" retention"),
                    )
                    .returning(artifacts.c.id)
                )
            )
        ids = [str(r.id) for r in rows]
        await asyncio.to_thread(self._unlink, ids)
        return ids

    def _unlink(self, ids: list[str]) -> None:
        for artifact_id in ids:
            with contextlib.suppress(FileNotFoundError):
                artifact_files.path_of(self.data_dir, artifact_id).unlink()

    async def remove_orphans(self) -> list[str]:
        """Files with no live artifact row, older than the grace (a completion may be committing now)."""
        folder = artifact_files.directory(self.data_dir)
        old = await asyncio.to_thread(self._old_files, folder)
        if not old:
            return []
        ids = {name: _artifact_id(name) for name in old}
        known: set[str] = set()
        valid = sorted({i for i in ids.values() if i is not None})
        async with self.db.read() as tx:
            for start in range(0, len(valid), BATCH):
                chunk = valid[start : start + BATCH]
                known |= {
                    str(r)
                    for r in (
                        await tx.execute(
                            select(artifacts.c.id).where(
                                artifacts.c.id.in_(chunk), artifacts.c.deleted_at.is_(None)
                            )
                        )
                    ).scalars()
                }
        # a temporary file is never a live artifact: its rename did not happen
        orphans = [
            name
            for name, i in ids.items()
            if i is None or i not in known or name.endswith(artifact_files.TEMP_SUFFIX)
        ]
        await asyncio.to_thread(self._remove, folder, orphans)
        return orphans

    def _old_files(self, folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        cutoff = time.time() - self.orphan_grace
        names = []
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    names.append(entry.name)
        return names

    @staticmethod
    def _remove(folder: Path, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (folder / name).unlink()

    # --- metrics history -------------------------------------------------------------------------------

    async def downsample_metrics(self) -> int:
        """Fold raw points older than the raw window into one average per server and hour."""
        async with self.db.write() as tx:
            if tx.dialect == "postgresql":
                got = (
                    await tx.execute(select(func.pg_try_advisory_xact_lock(ADVISORY_LOCK_KEY)))
                ).scalar_one()
                if not got:
                    return 0
            rows = list(
                await tx.execute(
                    select(machine_metrics)
                    .where(
                        machine_metrics.c.period_s == 0,
                        machine_metrics.c.at < db_now(-self.metrics_raw_hours * HOUR),
                    )
                    .order_by(machine_metrics.c.server_id, machine_metrics.c.at)
                    .limit(BATCH * 5)
                )
            )
            if not rows:
                return 0
            groups: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
            for row in rows:
                groups[(str(row.server_id), _hour(row.at))].append(row)
            for (server_id, hour), points in groups.items():
                existing = (
                    await tx.execute(
                        select(machine_metrics).where(
                            machine_metrics.c.server_id == server_id,
                            machine_metrics.c.period_s == HOUR,
                            machine_metrics.c.at == hour,
                        )
                    )
                ).first()
                merged = _average([*points, *([existing] if existing is not None else [])])
                if existing is not None:
                    await tx.execute(
                        update(machine_metrics).where(machine_metrics.c.id == existing.id).values(merged)
                    )
                else:
                    await tx.execute(
                        insert(machine_metrics).values(server_id=server_id, at=hour, period_s=HOUR, **merged)
                    )
            await tx.execute(delete(machine_metrics).where(machine_metrics.c.id.in_([r.id for r in rows])))
            return len(rows)

    async def bound_metrics(self) -> int:
        """At most `metrics_max_points` rows per server: the oldest go first."""
        trimmed = 0
        async with self.db.write() as tx:
            over = list(
                await tx.execute(
                    select(machine_metrics.c.server_id, func.count().label("n"))
                    .group_by(machine_metrics.c.server_id)
                    .having(func.count() > self.metrics_max_points)
                )
            )
            for row in over:
                excess = int(row.n) - self.metrics_max_points
                oldest = (
                    select(machine_metrics.c.id)
                    .where(machine_metrics.c.server_id == row.server_id)
                    .order_by(machine_metrics.c.at, machine_metrics.c.id)
                    .limit(excess)
                )
                result = await tx.execute(
                    delete(machine_metrics).where(machine_metrics.c.id.in_(oldest.scalar_subquery()))
                )
                trimmed += int(getattr(result, "rowcount", 0) or 0)
        return trimmed

    # --- snapshots -------------------------------------------------------------------------------------

    async def prune_snapshots(self) -> int:
        newer = aliased(snapshots)
        newer_ok = aliased(snapshots)
        same = [
            newer.c.server_id == snapshots.c.server_id,
            newer.c.kind == snapshots.c.kind,
            newer.c.id > snapshots.c.id,
        ]
        same_ok = [
            newer_ok.c.server_id == snapshots.c.server_id,
            newer_ok.c.kind == snapshots.c.kind,
            newer_ok.c.id > snapshots.c.id,
            newer_ok.c.status == "SUCCEEDED",
        ]
        prunable = (
            select(snapshots.c.id)
            .where(
                snapshots.c.created_at < db_now(-self.snapshot_days * 86400),
                exists(select(newer.c.id).where(*same)),
                # a successful snapshot goes only once a newer successful one of its playbook exists
                (snapshots.c.status != "SUCCEEDED") | exists(select(newer_ok.c.id).where(*same_ok)),
            )
            .limit(BATCH)
        )
        async with self.db.write() as tx:
            ids = [r for r in (await tx.execute(prunable)).scalars()]
            if ids:
                await tx.execute(delete(snapshots).where(snapshots.c.id.in_(ids)))
        return len(ids)

    # --- the event log -----------------------------------------------------------------------------------

    async def prune_events(self) -> int:
        """Delete events older than `event_days`, a batch per transaction; returns how many went."""
        pruned = 0
        while True:
            oldest = (
                select(events.c.id)
                .where(events.c.ts < db_now(-self.event_days * 86400))
                .order_by(events.c.id)
                .limit(EVENT_BATCH)
            )
            async with self.db.write() as tx:
                result = await tx.execute(delete(events).where(events.c.id.in_(oldest.scalar_subquery())))
            done = int(getattr(result, "rowcount", 0) or 0)
            pruned += done
            if done < EVENT_BATCH:
                return pruned


def _artifact_id(name: str) -> str | None:
    base = name.removesuffix(artifact_files.TEMP_SUFFIX)
    try:
        return str(uuid.UUID(base))
    except ValueError:
        return None


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _average(points: list[Any]) -> dict[str, Any]:
    """The sample-weighted mean of each metric over the points (a missing value does not count)."""
    samples = sum(int(p.samples) for p in points)
    merged: dict[str, Any] = {"samples": samples}
    for column in METRIC_COLUMNS:
        weighted = [(getattr(p, column), int(p.samples)) for p in points if getattr(p, column) is not None]
        total = sum(w for _, w in weighted)
        merged[column] = round(sum(v * w for v, w in weighted) / total, 3) if total else None
    return merged
