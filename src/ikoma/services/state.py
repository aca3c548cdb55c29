"""Machine state: the per-server cache derived from snapshots, its hardware and metrics, and rebuild.

The row is only ever written from `domain.machine_state.apply` (one snapshot at a time, at completion)
or from `domain.machine_state.rebuild` (all of a server's snapshots, in order): both give the same row.
What changes without a snapshot (is the runner alive, what is running now) is read live, never stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ikoma.domain.errors import NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.machine_state import MachineState, Snapshot, hardware, metrics_point, rebuild, unmeasured
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import (
    machine_hardware,
    machine_metrics,
    machine_state,
    orders,
    runners,
    servers,
    snapshots,
)

ACTIVE = [OrderStatus.CLAIMED.value, OrderStatus.RUNNING.value]
PENDING = [OrderStatus.QUEUED.value, *ACTIVE]


async def insert_ignore(tx: Tx, table: Any, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on either backend (a concurrent insert is not an error)."""
    dialect = postgresql if tx.dialect == "postgresql" else sqlite
    await tx.execute(dialect.insert(table).values(values).on_conflict_do_nothing(index_elements=keys))


# Built once, values passed as parameters: building statements with literal values per completion
# cost more than running them (the same lesson as dispatch.py's hot-path statements).
_EMPTY = MachineState().to_row()
_CREATE_STATE = {
    name: Prepared(dialect.insert(machine_state).on_conflict_do_nothing(index_elements=["server_id"]))
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_READ_STATE = select(machine_state).where(machine_state.c.server_id == bindparam("p_server_id"))
_LOCK_STATE = _READ_STATE.with_for_update()
# ingestion's read: the state row (locked on PostgreSQL) and the server's name, in one statement
_READ_NAMED = (
    select(machine_state, servers.c.name.label("server_name"))
    .join(servers, servers.c.id == machine_state.c.server_id)
    .where(machine_state.c.server_id == bindparam("p_server_id"))
)
_NAMED = {
    "sqlite": Prepared(_READ_NAMED),
    "postgresql": Prepared(_READ_NAMED.with_for_update(of=machine_state)),
}
# the columns given are the columns set: ingestion passes only those a snapshot changed
_SAVE_STATE = Prepared(update(machine_state).where(machine_state.c.server_id == bindparam("p_server_id")))
_INSERT_METRICS = Prepared(insert(machine_metrics))


def _upsert_hardware(dialect: Any) -> Prepared:
    """The server's one hardware row, inserted or replaced in one statement (was a DELETE and an INSERT)."""
    statement = dialect.insert(machine_hardware)
    columns = {c.name: statement.excluded[c.name] for c in machine_hardware.c if c.name != "server_id"}
    return Prepared(statement.on_conflict_do_update(index_elements=["server_id"], set_=columns))


_SAVE_HARDWARE = {"postgresql": _upsert_hardware(postgresql), "sqlite": _upsert_hardware(sqlite)}
# the columns given are the inventory columns the facts found (see inventory_fields)
_SAVE_INVENTORY = Prepared(
    update(servers).where(servers.c.id == bindparam("p_server_id")).values(updated_at=db_now())
)


def snapshot_of(row: Any) -> Snapshot:
    return Snapshot(
        id=int(row.id),
        kind=row.kind,
        status=row.status,
        order_id=str(row.order_id),
        at=row.created_at,
        payload=dict(row.payload or {}),
    )


async def lock(tx: Tx, server_id: str) -> MachineState:
    """The server's state row, created empty if missing, locked until the transaction ends.

    Completions of one server are serialized here (PostgreSQL row lock; SQLite writes are serialized
    anyway), so snapshots are numbered in the order they are folded in: a rebuild folds them alike.
    """
    await tx.execute(_CREATE_STATE[tx.dialect], {**_EMPTY, "server_id": server_id})
    query = _LOCK_STATE if tx.dialect == "postgresql" else _READ_STATE
    row = (await tx.execute(query, {"p_server_id": server_id})).mappings().one()
    return MachineState.from_row(dict(row))


async def lock_named(tx: Tx, server_id: str) -> tuple[MachineState, str]:
    """`lock`, and the server's name; the state row is created only when it is missing (the first
    completion of a server), so the usual completion reads once instead of inserting then reading."""
    query, params = _NAMED[tx.dialect], {"p_server_id": server_id}
    row = (await tx.execute(query, params)).mappings().first()
    if row is None:
        await tx.execute(_CREATE_STATE[tx.dialect], {**_EMPTY, "server_id": server_id})
        row = (await tx.execute(query, params)).mappings().one()
    return MachineState.from_row(dict(row)), str(row["server_name"])


async def save(tx: Tx, server_id: str, state: MachineState, *, before: MachineState | None = None) -> None:
    """Write the state row; with `before` (the row as read), only the columns that changed."""
    values = state.to_row()
    if before is not None:
        stored = before.to_row()
        values = {name: value for name, value in values.items() if stored[name] != value}
        if not values:
            return
    await tx.execute(_SAVE_STATE, {**values, "p_server_id": server_id})


async def save_hardware(tx: Tx, server_id: str, snap: Snapshot) -> None:
    row = hardware(snap)
    if row is None:
        return
    await tx.execute(_SAVE_HARDWARE[tx.dialect], {**row, "server_id": server_id})
    discovered = inventory_fields(row)
    if discovered:
        await tx.execute(_SAVE_INVENTORY, {**discovered, "p_server_id": server_id})


def inventory_fields(hardware_row: dict[str, Any]) -> dict[str, str]:
    """The server's OS/arch/kind columns as facts found them (seed 003 `machines`): what the machine
    says about itself replaces what was typed in; a fact it did not report leaves the column alone."""
    os_info = hardware_row.get("os") or {}
    found = {
        "os_family": (os_info.get("family"), 50),
        "os_version": (os_info.get("version") or os_info.get("versionId"), 100),
        "os_codename": (os_info.get("codename"), 100),
        "arch": (hardware_row.get("arch"), 50),
        "machine_kind": (hardware_row.get("machine_kind"), 50),
        "virtualization": (hardware_row.get("virtualization"), 50),
    }
    return {column: str(value)[:limit] for column, (value, limit) in found.items() if value}


async def add_metrics_point(tx: Tx, server_id: str, snap: Snapshot) -> None:
    point = metrics_point(snap)
    if point is not None:
        await tx.execute(_INSERT_METRICS, {**point, "server_id": server_id})


# --- reading -------------------------------------------------------------------------------------------


async def require_server(tx: Tx, server_id: str) -> Any:
    row = (
        await tx.execute(
            select(servers.c.id, servers.c.name, servers.c.runner_id).where(
                servers.c.id == server_id, servers.c.deleted_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise NotFound("no server with this id", reason="server_not_found", serverId=server_id)
    return row


async def _liveness(tx: Tx, server_ids: list[str], stale_after: float) -> dict[str, dict[str, Any]]:
    """Per server: runner attached, online (heartbeat within stale_after), last heartbeat, active orders."""
    rows = await tx.execute(
        select(
            servers.c.id,
            runners.c.id.label("runner_id"),
            runners.c.name.label("runner_name"),
            runners.c.last_heartbeat_at,
            and_(
                runners.c.revoked_at.is_(None),
                runners.c.last_heartbeat_at.is_not(None),
                runners.c.last_heartbeat_at >= db_now(-stale_after),
            ).label("online"),
        )
        .select_from(servers.outerjoin(runners, runners.c.id == servers.c.runner_id))
        .where(servers.c.id.in_(server_ids))
    )
    found = {
        str(r.id): {
            "runner_id": r.runner_id,
            "runner_name": r.runner_name,
            "last_heartbeat_at": r.last_heartbeat_at,
            "online": bool(r.online) if r.runner_id else False,
            "running_order_ids": [],
        }
        for r in rows
    }
    active = await tx.execute(
        select(orders.c.server_id, orders.c.id)
        .where(orders.c.server_id.in_(server_ids), orders.c.status.in_(ACTIVE))
        .order_by(orders.c.created_at)
    )
    for row in active:
        found[str(row.server_id)]["running_order_ids"].append(str(row.id))
    return found


def _view(server: Any, state: MachineState, live: dict[str, Any]) -> dict[str, Any]:
    """The state as callers see it: what was never measured is None (unknown), not a made-up 0."""
    shown = state.to_row()
    shown.update(dict.fromkeys(unmeasured(state)))
    return {"server_id": str(server.id), "server_name": server.name, **live, **shown}


async def get_state(db: Database, server_id: str, *, stale_after: float) -> dict[str, Any]:
    """The stored state plus what is live: runner online, running orders."""
    async with db.read() as tx:
        server = await require_server(tx, server_id)
        row = (
            (await tx.execute(select(machine_state).where(machine_state.c.server_id == server_id)))
            .mappings()
            .first()
        )
        state = MachineState.from_row(dict(row)) if row is not None else MachineState()
        live = (await _liveness(tx, [server_id], stale_after))[server_id]
        return _view(server, state, live)


async def list_states(
    db: Database, *, server_ids: frozenset[str] | None, stale_after: float
) -> list[dict[str, Any]]:
    """Every live server's state view (restricted to `server_ids` when given)."""
    async with db.read() as tx:
        query = select(servers.c.id, servers.c.name, servers.c.runner_id).where(
            servers.c.deleted_at.is_(None)
        )
        if server_ids is not None:
            query = query.where(servers.c.id.in_(sorted(server_ids)))
        server_rows = list(await tx.execute(query.order_by(servers.c.name)))
        if not server_rows:
            return []
        ids = [str(s.id) for s in server_rows]
        states = {
            str(r["server_id"]): MachineState.from_row(dict(r))
            for r in (
                await tx.execute(select(machine_state).where(machine_state.c.server_id.in_(ids)))
            ).mappings()
        }
        live = await _liveness(tx, ids, stale_after)
        return [_view(s, states.get(str(s.id), MachineState()), live[str(s.id)]) for s in server_rows]


async def get_hardware(db: Database, server_id: str) -> dict[str, Any]:
    async with db.read() as tx:
        await require_server(tx, server_id)
        row = (
            (await tx.execute(select(machine_hardware).where(machine_hardware.c.server_id == server_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(
            "no hardware known yet: run system.facts on this server",
            reason="hardware_unknown",
            serverId=server_id,
        )
    return dict(row)


# --- rebuild -------------------------------------------------------------------------------------------


async def rebuild_server(tx: Tx, server_id: str) -> MachineState:
    """Recompute the server's state and hardware from its snapshots, in order."""
    await lock(tx, server_id)
    rows = await tx.execute(
        select(snapshots).where(snapshots.c.server_id == server_id).order_by(snapshots.c.id)
    )
    folded = [snapshot_of(r) for r in rows]
    state = rebuild(folded)
    await save(tx, server_id, state)
    facts = [s for s in folded if s.kind == "system.facts" and s.succeeded and s.payload.get("found")]
    if facts:
        await save_hardware(tx, server_id, facts[-1])
    else:
        await tx.execute(delete(machine_hardware).where(machine_hardware.c.server_id == server_id))
    return state


async def rebuild_states(db: Database, server_id: str | None = None) -> int:
    """Rebuild one server's state, or every live server's (one transaction per server); returns how many."""
    async with db.read() as tx:
        if server_id is not None:
            ids = [str((await require_server(tx, server_id)).id)]
        else:
            ids = [
                str(r)
                for r in (
                    await tx.execute(select(servers.c.id).where(servers.c.deleted_at.is_(None)))
                ).scalars()
            ]
    for one in ids:
        async with db.write() as tx:
            await rebuild_server(tx, one)
    return len(ids)
