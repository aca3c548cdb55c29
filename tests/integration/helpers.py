"""Helpers for integration tests: servers with runners, orders, a dispatcher, a reconciler, and time travel.

Tests never sleep to let a lease expire: `backdate` moves an order's timestamps relative to the
*database* clock (`db_now`), which is the only clock the control plane compares leases with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from ikoma.domain.lifecycle import OrderStatus, RetryPolicy
from ikoma.metrics import Metrics
from ikoma.services import orders, runners, servers
from ikoma.services.dispatch import Dispatcher, RunnerIdentity
from ikoma.services.reconciler import Reconciler
from ikoma.services.wakeups import Wakeups
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import order_attempts, order_events
from ikoma.storage.tables import orders as orders_table

CLAIM_LEASE = 60.0
STALE_AFTER = 120.0
DEFAULT_TIMEOUT = 3600.0
PLAYBOOK = "system.test_ping"  # built-in: maxAttempts 3, timeout 60 s, params {"message"?: str}


@dataclass(frozen=True)
class Pair:
    """A server with its attached runner, as the runner sees itself after authenticating."""

    server: dict[str, Any]
    runner: dict[str, Any]

    @property
    def server_id(self) -> str:
        return str(self.server["id"])

    @property
    def runner_id(self) -> str:
        return str(self.runner["id"])

    @property
    def token(self) -> str:
        return str(self.runner["token"])

    @property
    def identity(self) -> RunnerIdentity:
        return RunnerIdentity(runner_id=self.runner_id, server_id=self.server_id)


def server_fields(name: str, **overrides: Any) -> dict[str, Any]:
    """What the admin route passes to `servers.create_server` for a typical Debian VM."""
    fields: dict[str, Any] = {
        "name": name,
        "hostname": f"{name}.example.net",
        "port": 22,
        "labels": {"env": "prod"},
        "os_family": "debian",
        "os_version": "12",
        "os_codename": "bookworm",
        "arch": "x86_64",
    }
    fields.update(overrides)
    return fields


async def make_runner(db: Database, name: str) -> dict[str, Any]:
    return await runners.create_runner(db, name=name, stale_after=STALE_AFTER)


async def make_server(db: Database, name: str, *, runner_id: str | None = None) -> dict[str, Any]:
    return await servers.create_server(
        db, server_fields(name, **({"runner_id": runner_id} if runner_id else {}))
    )


async def make_pair(db: Database, name: str = "web-1") -> Pair:
    """A runner `runner-<name>` attached to a server `<name>`."""
    runner = await make_runner(db, f"runner-{name}")
    server = await make_server(db, name)
    server = await servers.update_server(db, str(server["id"]), {"runner_id": str(runner["id"])})
    return Pair(server=server, runner=runner)


async def attach(db: Database, server_id: str, runner_id: str | None) -> dict[str, Any]:
    return await servers.update_server(db, server_id, {"runner_id": runner_id})


def order_body(server_id: str, playbook_key: str = PLAYBOOK, **overrides: Any) -> dict[str, Any]:
    """A create-order body as the admin route hands it to the service (every field present)."""
    body: dict[str, Any] = {
        "server_id": server_id,
        "playbook_key": playbook_key,
        "action": "run",
        "params": {},
        "runner_id": None,
        "timeout_seconds": None,
        "max_attempts": None,
    }
    body.update(overrides)
    return body


async def make_order(
    db: Database,
    server_id: str,
    playbook_key: str = PLAYBOOK,
    *,
    idempotency_key: str | None = None,
    wakeups: Wakeups | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    order, _ = await orders.create_order(
        db,
        wakeups or Wakeups(),
        order_body(server_id, playbook_key, **overrides),
        idempotency_key=idempotency_key,
        default_timeout=DEFAULT_TIMEOUT,
    )
    return order


def make_dispatcher(
    db: Database, *, claim_lease: float = CLAIM_LEASE, retry: RetryPolicy | None = None
) -> Dispatcher:
    return Dispatcher(db, claim_lease=claim_lease, wakeups=Wakeups(), metrics=Metrics(), retry=retry)


def make_reconciler(
    db: Database, *, stale_after: float = STALE_AFTER, retry: RetryPolicy | None = None
) -> Reconciler:
    return Reconciler(
        db, stale_after=stale_after, interval=1.0, wakeups=Wakeups(), metrics=Metrics(), retry=retry
    )


def v2_report(summary: str = "pong from web-1", **overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": "v2",
        "summary": summary,
        "durationMs": 42,
        "steps": [{"name": "echo", "status": "SUCCEEDED", "durationMs": 3}],
        "errors": [],
    }
    report.update(overrides)
    return report


async def complete(
    dispatcher: Dispatcher,
    identity: RunnerIdentity,
    order_id: str,
    outcome: OrderStatus = OrderStatus.SUCCEEDED,
    *,
    lease_token: str | None,
    summary: str = "pong from web-1",
) -> dict[str, Any]:
    return await dispatcher.complete(
        identity,
        order_id,
        outcome=outcome,
        report=v2_report(summary),
        report_version="v2",
        report_summary=summary,
        lease_token=lease_token,
    )


async def claim_and_start(dispatcher: Dispatcher, identity: RunnerIdentity) -> dict[str, Any]:
    """Claim the next order and start it; returns the RUNNING order (with its lease token)."""
    claimed = await dispatcher.claim_once(identity)
    assert claimed is not None, "nothing to claim"
    return await dispatcher.start(identity, str(claimed["id"]), claimed["lease_token"])


async def backdate(db: Database, order_id: str, **columns_seconds_ago: float) -> None:
    """Set timestamp columns of an order to `db_now() - seconds` (a negative number is in the future)."""
    values = {column: db_now(-float(seconds)) for column, seconds in columns_seconds_ago.items()}
    async with db.write() as tx:
        result = await tx.execute(update(orders_table).where(orders_table.c.id == order_id).values(values))
    assert result.rowcount == 1, f"no order {order_id}"


async def fetch_order(db: Database, order_id: str) -> dict[str, Any]:
    """The order with its attempts, as GET /v1/orders/:id reads it."""
    return await orders.get_order(db, order_id)


async def attempt_rows(db: Database, order_id: str) -> list[dict[str, Any]]:
    async with db.read() as tx:
        rows = await tx.execute(
            select(order_attempts)
            .where(order_attempts.c.order_id == order_id)
            .order_by(order_attempts.c.attempt)
        )
        return [dict(r) for r in rows.mappings()]


async def transitions(db: Database, order_id: str) -> list[tuple[str | None, str, str]]:
    """The order's events as (from_status, to_status, reason), oldest first."""
    return [(e["from_status"], e["to_status"], e["reason"]) for e in await orders.list_events(db, order_id)]


async def count_rows(db: Database, table: Any, *where: Any) -> int:
    async with db.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(table).where(*where))).scalar_one())


async def count_events(db: Database, order_id: str) -> int:
    return await count_rows(db, order_events, order_events.c.order_id == order_id)


async def database_now(db: Database, offset_seconds: float = 0.0) -> Any:
    """The database clock, read as a value (naive UTC on SQLite, aware on PostgreSQL)."""
    async with db.read() as tx:
        return (await tx.execute(select(db_now(offset_seconds)))).scalar_one()


async def seconds_until(db: Database, order_id: str, column: str) -> float:
    """How far a timestamp column of an order lies ahead of the database clock (negative: past)."""
    col = orders_table.c[column]
    async with db.read() as tx:
        row = (await tx.execute(select(col, db_now()).where(orders_table.c.id == order_id))).one()
    value, now = row
    assert value is not None, f"{column} is not set"
    return _as_datetime(value).timestamp() - _as_datetime(now).timestamp()


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite renders db_now() in a bare SELECT as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
