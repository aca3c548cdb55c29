"""Ingestion: a completed order's report becomes derived data, in the completion's own transaction.

Per completion: a snapshot (every playbook), the machine state folded forward, hardware (system.facts),
a metrics point (system.metrics), important messages, timeline entries for state changes worth
noticing, a rendered report and the raw log as an artifact. All of it commits with the completion or
not at all; only the artifact's file is written before the commit (see services/artifacts.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select

from ikoma.domain.important import messages_from
from ikoma.domain.machine_state import SCHEMA_VERSION, apply, extract, notices
from ikoma.services import messages, reports, state, timeline
from ikoma.services.artifacts import Artifacts
from ikoma.storage.database import Tx
from ikoma.storage.tables import servers, snapshots

ACTOR = "ingest"
_INSERT_SNAPSHOT = insert(snapshots).returning(*snapshots.c)
_SERVER_NAME = select(servers.c.name).where(servers.c.id == bindparam("p_server_id"))


@dataclass(frozen=True)
class Ingestor:
    artifacts: Artifacts

    async def ingest(self, tx: Tx, order: dict[str, Any]) -> dict[str, Any]:
        """Derive everything from the completed `order` row (its status is the runner's outcome)."""
        server_id = str(order["server_id"])
        before = await state.lock(tx, server_id)  # serializes this server's completions (see state.lock)
        found = extract(order["playbook_key"], order["status"], order.get("report"))
        snap_row = (
            await tx.execute(
                _INSERT_SNAPSHOT,
                {
                    "server_id": server_id,
                    "order_id": order["id"],
                    "attempt": order["attempt"],
                    "kind": order["playbook_key"],
                    "schema_version": SCHEMA_VERSION,
                    "status": order["status"],
                    "payload": found.payload,
                    "important": found.important,
                },
            )
        ).one()
        snap = state.snapshot_of(snap_row)
        after = apply(before, snap)
        await state.save(tx, server_id, after)
        await state.save_hardware(tx, server_id, snap)
        await state.add_metrics_point(tx, server_id, snap)
        await messages.record(
            tx, server_id=server_id, order_id=str(order["id"]), messages=messages_from(found.important)
        )
        for notice in notices(before, after):
            await timeline.add_event(
                tx,
                server_id=server_id,
                type=notice.type,
                severity=notice.severity,
                message=notice.message,
                actor=ACTOR,
                order_id=str(order["id"]),
            )
        artifact = await self.artifacts.record_raw_log(tx, order)
        server_name = (await tx.execute(_SERVER_NAME, {"p_server_id": server_id})).scalar_one()
        report = await reports.record(
            tx, order, server_name=server_name, important=found.important, artifact=artifact
        )
        return {
            "snapshotId": snap.id,
            "reportId": report["id"],
            "artifactId": artifact["id"] if artifact else None,
        }
