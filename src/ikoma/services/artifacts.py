"""Raw log artifacts: an order's log as a file under `<data dir>/artifacts/`, with sha256 and retention.

A file cannot join a database transaction, so the order is: write the file (to a temporary name, then
rename it to the artifact id), then insert the row in the completion's transaction. A crash or rollback
in between leaves a file without a row; the retention sweeper deletes such orphans after a grace period.
The reverse (a row without its file) never happens: a row is only inserted once its file is in place,
and the sweeper marks rows deleted before it removes their files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Float, bindparam, insert, select, update

from ikoma.domain.errors import Conflict, NotFound
from ikoma.domain.retention import Retention
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import artifacts, order_logs, orders

RAW_LOG = "raw_log"
TEMP_SUFFIX = ".tmp"
_LOG_DATA = (
    select(order_logs.c.data)
    .where(order_logs.c.order_id == bindparam("p_order_id"))
    .order_by(order_logs.c.seq)
)
_INSERT_KEPT = insert(artifacts).returning(*artifacts.c)
_INSERT_EXPIRING = (
    insert(artifacts)
    .values(expires_at=db_now(bindparam("p_lifetime", type_=Float())))
    .returning(*artifacts.c)
)


def directory(data_dir: Path) -> Path:
    return data_dir / "artifacts"


def path_of(data_dir: Path, artifact_id: str) -> Path:
    # ids are UUIDs we generated: never a path separator, so the file stays in the directory
    return directory(data_dir) / str(uuid.UUID(artifact_id))


def _write(target: Path, data: bytes) -> str:
    """temp + fsync + rename: the file under its final name is always complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + TEMP_SUFFIX)
    with temp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    temp.replace(target)
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Artifacts:
    data_dir: Path
    retention: Retention

    async def record_raw_log(self, tx: Tx, order: dict[str, Any]) -> dict[str, Any] | None:
        """Store the order's log (all chunks, in order) as an artifact; None when it logged nothing."""
        chunks = await tx.execute(_LOG_DATA, {"p_order_id": order["id"]})
        data = "".join(chunks.scalars()).encode()
        if not data:
            return None
        artifact_id = str(uuid.uuid4())
        digest = await asyncio.to_thread(_write, path_of(self.data_dir, artifact_id), data)
        policy = self.retention.policy_for(status=order["status"], playbook_key=order["playbook_key"])
        lifetime = self.retention.lifetime_seconds(policy)
        values = {
            "id": artifact_id,
            "server_id": order["server_id"],
            "order_id": order["id"],
            "kind": RAW_LOG,
            "bytes": len(data),
            "sha256": digest,
            "retention_policy": policy,
        }
        if lifetime is None:
            row = (await tx.execute(_INSERT_KEPT, values)).mappings().one()
        else:
            row = (await tx.execute(_INSERT_EXPIRING, {**values, "p_lifetime": lifetime})).mappings().one()
        return dict(row)

    async def get(self, db: Database, artifact_id: str) -> dict[str, Any]:
        async with db.read() as tx:
            row = (
                (await tx.execute(select(artifacts).where(artifacts.c.id == artifact_id))).mappings().first()
            )
        if row is None:
            raise NotFound("no artifact with this id", reason="artifact_not_found", artifactId=artifact_id)
        return dict(row)

    async def read(self, db: Database, artifact_id: str) -> tuple[dict[str, Any], bytes]:
        """The artifact's row and bytes; 410-like conflict when retention already deleted it."""
        row = await self.get(db, artifact_id)
        if row["deleted_at"] is not None:
            raise Conflict(
                f"artifact was deleted: {row['delete_reason']}",
                reason="artifact_deleted",
                artifactId=artifact_id,
            )
        data = await asyncio.to_thread(path_of(self.data_dir, artifact_id).read_bytes)
        return row, data

    async def pin(self, db: Database, artifact_id: str) -> dict[str, Any]:
        """Keep until unpinned."""
        return await self._set_policy(db, artifact_id, pin=True)

    async def unpin(self, db: Database, artifact_id: str) -> dict[str, Any]:
        """Back to the policy its order gives it, expiring that long after it was created."""
        return await self._set_policy(db, artifact_id, pin=False)

    async def _set_policy(self, db: Database, artifact_id: str, *, pin: bool) -> dict[str, Any]:
        async with db.write() as tx:
            row = (
                (
                    await tx.execute(
                        select(artifacts, orders.c.status.label("order_status"), orders.c.playbook_key)
                        .select_from(artifacts.join(orders, orders.c.id == artifacts.c.order_id))
                        .where(artifacts.c.id == artifact_id)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(
                    "no artifact with this id", reason="artifact_not_found", artifactId=artifact_id
                )
            if row["deleted_at"] is not None:
                raise Conflict(
                    f"artifact was deleted: {row['delete_reason']}",
                    reason="artifact_deleted",
                    artifactId=artifact_id,
                )
            if pin:
                values: dict[str, Any] = {"retention_policy": "pinned", "expires_at": None}
            else:
                policy = self.retention.policy_for(
                    status=row["order_status"], playbook_key=row["playbook_key"]
                )
                lifetime = self.retention.lifetime_seconds(policy) or 0.0
                values = {
                    "retention_policy": policy,
                    # from its creation, not from now: unpinning does not extend a log's life
                    "expires_at": _shifted(tx, artifacts.c.created_at, lifetime),
                }
            updated = (
                (
                    await tx.execute(
                        update(artifacts)
                        .where(artifacts.c.id == artifact_id)
                        .values(values)
                        .returning(*artifacts.c)
                    )
                )
                .mappings()
                .one()
            )
            return dict(updated)


def _shifted(tx: Tx, column: Any, seconds: float) -> Any:
    """`column + seconds` in SQL, on either backend (the database computes the time)."""
    from sqlalchemy import func, literal_column, text

    if tx.dialect == "postgresql":
        return column + func.make_interval(0, 0, 0, 0, 0, 0, literal_column(str(float(seconds))))
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff': strftime has milliseconds, three zeros keep the width
    return func.strftime("%Y-%m-%d %H:%M:%f", column, text(f"'+{float(seconds):.3f} seconds'")).op("||")(
        "000"
    )
