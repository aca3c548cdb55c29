"""Machine-state integration test helpers: a dispatcher that ingests, orders run to completion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.retention import Retention
from ikoma.metrics import Metrics
from ikoma.services import logs
from ikoma.services.artifacts import Artifacts
from ikoma.services.dispatch import Dispatcher
from ikoma.services.ingest import Ingestor
from ikoma.services.retention import Sweeper
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database
from ikoma.storage.tables import machine_state
from tests.integration.helpers import CLAIM_LEASE, Pair, claim_and_start, make_order
from tests.state_reports import Produced

RETENTION = Retention(default_days=30, failed_days=90, short_days=7)


def ingesting_dispatcher(db: Database, data_dir: Path) -> Dispatcher:
    return Dispatcher(
        db,
        claim_lease=CLAIM_LEASE,
        wakeups=Wakeups(),
        metrics=Metrics(),
        ingestor=Ingestor(Artifacts(data_dir, RETENTION)),
    )


def sweeper(db: Database, data_dir: Path, **overrides: Any) -> Sweeper:
    return Sweeper(db, data_dir, **overrides)


async def run_order(
    db: Database,
    dispatcher: Dispatcher,
    pair: Pair,
    produced: Produced,
    *,
    log_lines: list[str] | None = None,
) -> dict[str, Any]:
    """Create, claim, start, log and complete an order of `produced`'s playbook with its report."""
    await make_order(db, pair.server_id, produced.playbook_key)
    running = await claim_and_start(dispatcher, pair.identity)
    if log_lines:
        chunks = [logs.Chunk(seq=i, stream="stdout", data=line) for i, line in enumerate(log_lines)]
        async with db.write() as tx:
            await logs.append_chunks(
                tx, Wakeups(), order_id=running["id"], chunks=chunks, limit_bytes=1024 * 1024
            )
    return await dispatcher.complete(
        pair.identity,
        str(running["id"]),
        outcome=OrderStatus(produced.status),
        report=produced.report,
        report_version="v2",
        report_summary=produced.report["summary"],
        lease_token=running["lease_token"],
    )


async def state_row(db: Database, server_id: str) -> dict[str, Any] | None:
    async with db.read() as tx:
        row = (
            (await tx.execute(select(machine_state).where(machine_state.c.server_id == server_id)))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)
