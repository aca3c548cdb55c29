"""Collection schedules: per server, `system.metrics` every few minutes, `apt.analyze` daily, `system.facts`
weekly (and `docker.status`), run by the reconciler as ordinary orders.

A schedule never stacks: while an order of its playbook is pending on its server (QUEUED, CLAIMED or
RUNNING, whoever created it) it stays due and fires once that order has ended.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, exists, insert, select, update

from ikoma.domain.errors import Invalid
from ikoma.services import orders as order_service
from ikoma.services.state import PENDING, require_server
from ikoma.services.wakeups import Wakeups
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import orders, schedules, servers

COLLECTION_PLAYBOOKS = ("system.metrics", "apt.analyze", "system.facts", "docker.status")
MIN_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 90 * 86400
BATCH = 200
ACTION = "scheduled"


@dataclass
class Scheduler:
    """What the reconciler calls each tick: create missing default schedules, queue the due ones."""

    wakeups: Wakeups
    default_timeout: float
    # playbook key -> interval seconds, for servers that have no schedule of that playbook yet
    defaults: dict[str, int] = field(default_factory=dict)

    async def tick(self, tx: Tx) -> list[str]:
        if self.defaults:
            await ensure_defaults(tx, self.defaults)
        return await run_due(tx, self.wakeups, default_timeout=self.default_timeout)


async def ensure_defaults(tx: Tx, defaults: dict[str, int]) -> int:
    """Give every live server with a runner the default schedules it has no row for (even disabled)."""
    created = 0
    for key, interval in defaults.items():
        missing = await tx.execute(
            select(servers.c.id).where(
                servers.c.deleted_at.is_(None),
                servers.c.runner_id.is_not(None),
                ~exists(
                    select(schedules.c.id).where(
                        schedules.c.server_id == servers.c.id, schedules.c.playbook_key == key
                    )
                ),
            )
        )
        rows = [
            {
                "id": str(uuid.uuid4()),
                "server_id": sid,
                "playbook_key": key,
                "interval_s": interval,
                "enabled": True,
            }
            for sid in missing.scalars()
        ]
        if rows:
            await tx.execute(insert(schedules), rows)
            created += len(rows)
    return created


async def run_due(tx: Tx, wakeups: Wakeups, *, default_timeout: float) -> list[str]:
    """Queue one order per due schedule whose playbook has nothing pending on its server."""
    pending = exists(
        select(orders.c.id).where(
            orders.c.server_id == schedules.c.server_id,
            orders.c.playbook_key == schedules.c.playbook_key,
            orders.c.status.in_(PENDING),
        )
    )
    due = list(
        await tx.execute(
            select(schedules.c.id, schedules.c.server_id, schedules.c.playbook_key, schedules.c.interval_s)
            .select_from(
                schedules.join(
                    servers,
                    and_(
                        servers.c.id == schedules.c.server_id,
                        servers.c.deleted_at.is_(None),
                        servers.c.runner_id.is_not(None),
                    ),
                )
            )
            .where(
                schedules.c.enabled.is_(True),
                (schedules.c.next_run_at.is_(None)) | (schedules.c.next_run_at <= db_now()),
                ~pending,
            )
            .order_by(schedules.c.next_run_at, schedules.c.id)
            .limit(BATCH)
        )
    )
    created: list[str] = []
    for row in due:
        order = await order_service.insert_order(
            tx,
            wakeups,
            {
                "server_id": str(row.server_id),
                "playbook_key": row.playbook_key,
                "action": ACTION,
                "params": {},
                "runner_id": None,
                "timeout_seconds": None,
                "max_attempts": None,
            },
            default_timeout=default_timeout,
            actor=f"schedule:{row.id}",
        )
        await tx.execute(
            update(schedules)
            .where(schedules.c.id == row.id)
            .values(next_run_at=db_now(float(row.interval_s)), last_order_id=order["id"], updated_at=db_now())
        )
        created.append(str(order["id"]))
    return created


async def list_schedules(db: Database, server_id: str) -> list[dict[str, Any]]:
    async with db.read() as tx:
        await require_server(tx, server_id)
        return await _rows(tx, server_id)


async def _rows(tx: Tx, server_id: str) -> list[dict[str, Any]]:
    rows = await tx.execute(
        select(schedules).where(schedules.c.server_id == server_id).order_by(schedules.c.playbook_key)
    )
    return [dict(r) for r in rows.mappings()]


async def replace_schedules(
    db: Database, server_id: str, wanted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Set the server's schedules to `wanted` ({playbook_key, interval_s, enabled}); the others are
    disabled, not deleted, so default schedules do not come back behind the operator's back."""
    keys = [w["playbook_key"] for w in wanted]
    for index, key in enumerate(keys):
        if key not in COLLECTION_PLAYBOOKS:
            raise Invalid(
                f"{key!r} is not a collection playbook",
                field=f"schedules.{index}.playbookKey",
                allowed=list(COLLECTION_PLAYBOOKS),
            )
    if len(set(keys)) != len(keys):
        raise Invalid("a playbook is listed twice", field="schedules")
    async with db.write() as tx:
        await require_server(tx, server_id)
        current = {r["playbook_key"]: r for r in await _rows(tx, server_id)}
        for item in wanted:
            existing = current.get(item["playbook_key"])
            if existing is None:
                await tx.execute(
                    insert(schedules).values(
                        id=str(uuid.uuid4()),
                        server_id=server_id,
                        playbook_key=item["playbook_key"],
                        interval_s=item["interval_s"],
                        enabled=item["enabled"],
                    )
                )
                continue
            values: dict[str, Any] = {
                "interval_s": item["interval_s"],
                "enabled": item["enabled"],
                "updated_at": db_now(),
            }
            if item["enabled"] and not existing["enabled"]:
                values["next_run_at"] = None  # re-enabled: due at the next tick
            await tx.execute(update(schedules).where(schedules.c.id == existing["id"]).values(values))
        for key, existing in current.items():
            if key not in keys and existing["enabled"]:
                await tx.execute(
                    update(schedules)
                    .where(schedules.c.id == existing["id"])
                    .values(enabled=False, updated_at=db_now())
                )
        return await _rows(tx, server_id)
