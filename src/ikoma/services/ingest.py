"""Ingestion: a completed order's report becomes derived data, in the completion's own transaction.

Per completion: a snapshot (every playbook), the machine state folded forward, hardware (system.facts),
a metrics point (system.metrics), important messages, timeline entries for state changes worth
noticing, a rendered report and the raw log as an artifact. All of it commits with the completion or
not at all; only the artifact's file is written before the commit (see services/artifacts.py).

An order that failed because its request was wrong (`domain.tool_errors`: a mistyped app, a backup name
taken) says nothing about the machine: it gets its report and raw log, and no snapshot, state change or
important message, so a caller's typo never turns a server red.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select

from ikoma.domain.event_kinds import state_changes
from ikoma.domain.important import messages_from
from ikoma.domain.machine_state import SCHEMA_VERSION, apply, extract, notices
from ikoma.domain.tool_errors import caller_error
from ikoma.services import events, messages, reports, state, timeline
from ikoma.services.artifacts import Artifacts
from ikoma.storage.database import Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import servers, snapshots

ACTOR = "ingest"
_INSERT_SNAPSHOT = Prepared(insert(snapshots).returning(*snapshots.c))
_SERVER_NAME = Prepared(select(servers.c.name).where(servers.c.id == bindparam("p_server_id")))


def _stored(
    tx: Tx, order: dict[str, Any], server_id: str, report: dict[str, Any], artifact: dict[str, Any] | None
) -> None:
    """`artifact.stored` (the raw log) and `report.stored` in the event log."""
    order_id = str(order["id"])
    if artifact is not None:
        events.publish(
            tx,
            "artifact.stored",
            server_id=server_id,
            order_id=order_id,
            actor=ACTOR,
            data={"artifactId": str(artifact["id"]), "kind": artifact["kind"], "bytes": artifact["bytes"]},
        )
    events.publish(
        tx,
        "report.stored",
        server_id=server_id,
        order_id=order_id,
        actor=ACTOR,
        data={
            "reportId": str(report["id"]),
            "playbookKey": report["playbook_key"],
            "status": report["status"],
            "title": report["title"],
        },
    )


@dataclass(frozen=True)
class Ingestor:
    artifacts: Artifacts

    async def ingest(self, tx: Tx, order: dict[str, Any]) -> dict[str, Any]:
        """Derive everything from the completed `order` row (its status is the runner's outcome)."""
        server_id = str(order["server_id"])
        if caller_error(order["status"], order.get("report")) is not None:
            # the request was wrong, not the machine: no snapshot, state or message (see domain.tool_errors)
            return await self._report(tx, order, server_id, important=[], snapshot_id=None)
        # serializes this server's completions (see state.lock); the server's name comes with it
        before, server_name = await state.lock_named(tx, server_id)
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
        await state.save(tx, server_id, after, before=before)
        await state.save_hardware(tx, server_id, snap)
        await state.add_metrics_point(tx, server_id, snap)
        await messages.record(
            tx, server_id=server_id, order_id=str(order["id"]), messages=messages_from(found.important)
        )
        for kind, data in state_changes(before, after):
            events.publish(tx, kind, server_id=server_id, order_id=str(order["id"]), actor=ACTOR, data=data)
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
        return await self._report(
            tx, order, server_id, important=found.important, snapshot_id=snap.id, server_name=server_name
        )

    async def _report(
        self,
        tx: Tx,
        order: dict[str, Any],
        server_id: str,
        *,
        important: list[dict[str, Any]],
        snapshot_id: int | None,
        server_name: str | None = None,
    ) -> dict[str, Any]:
        """The rendered report and the raw log, which every completion gets."""
        # an order that logged nothing has no chunk to read (its row counts the bytes appended)
        logged = bool(order.get("log_bytes", 1)) or bool(order.get("log_truncated"))
        artifact = await self.artifacts.record_raw_log(tx, order) if logged else None
        if server_name is None:
            server_name = (await tx.execute(_SERVER_NAME, {"p_server_id": server_id})).scalar_one()
        report = await reports.record(
            tx, order, server_name=server_name, important=important, artifact=artifact
        )
        _stored(tx, order, server_id, report, artifact)
        return {
            "snapshotId": snapshot_id,
            "reportId": report["id"],
            "artifactId": artifact["id"] if artifact else None,
        }
