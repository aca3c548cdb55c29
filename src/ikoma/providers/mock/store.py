"""Where the Mock cloud keeps its `World`: in IKOMA's database (the Mock provider) or in memory (the
Scaleway fake in tests).

    async with store.session() as world:   # loaded; saved when the block ends without an exception
        answer = simulator.create(world, ...)

A session is one serialized transaction: on PostgreSQL an advisory lock held to the commit keeps two
replicas (or the API and the test driving it) from interleaving their changes; SQLite has one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, insert, select, text, update

from ikoma.providers.mock.scenarios import Rule, Scenario
from ikoma.providers.mock.simulator import Machine, MachineState, World
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables_mock import mock_machines, mock_scenarios

# arbitrary and fixed; distinct from the leader's and the reconciler's keys (same key space)
MOCK_LOCK_KEY = 0x1C0A_0017


class SimulatorStore(Protocol):
    def session(self) -> contextlib.AbstractAsyncContextManager[World]: ...

    async def has_machines(self) -> bool:
        """Whether any machine is kept at all (a cheap read: the idle driver skips its session)."""
        ...


class MemoryStore:
    """The world in this process (one asyncio lock); copies go in and out so a failed session
    leaves nothing half-changed."""

    def __init__(self) -> None:
        self._world = World()
        self._lock = asyncio.Lock()

    async def has_machines(self) -> bool:
        return bool(self._world.machines)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[World]:
        async with self._lock:
            working = _copy(self._world)
            yield working
            self._world = working


class DatabaseStore:
    """The world in `mock_machines` and `mock_scenarios` (migration 0017)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def has_machines(self) -> bool:
        async with self.db.read() as tx:
            return (await tx.execute(select(mock_machines.c.id).limit(1))).first() is not None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[World]:
        async with self.db.write() as tx:
            if not self.db.is_sqlite:
                await tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MOCK_LOCK_KEY})
            machine_rows = (await tx.execute(select(mock_machines))).mappings().all()
            rule_rows = (await tx.execute(select(mock_scenarios).order_by(mock_scenarios.c.id))).mappings()
            world = World(
                machines={row["id"]: _machine(row) for row in machine_rows},
                rules=[_rule(row) for row in rule_rows.all()],
            )
            loaded = _copy(world)
            yield world
            await _save(tx, loaded, world)


def _copy(world: World) -> World:
    return World(
        machines={key: machine.copy() for key, machine in world.machines.items()},
        rules=[Rule(r.scenario, r.zone, r.instance_type, r.calls, r.seconds, r.id) for r in world.rules],
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored in UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _machine(row: Any) -> Machine:
    return Machine(
        id=row["id"],
        zone=row["zone"],
        instance_type=row["instance_type"],
        name=row["name"],
        image=row["image"],
        tags=dict(row["tags"] or {}),
        state=MachineState(row["state"]),
        public_ip=row["public_ip"],
        private_ip=row["private_ip"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        user_data=row["user_data"],
        flags=frozenset(row["flags"] or ()),
    )


def _rule(row: Any) -> Rule:
    return Rule(
        Scenario(row["scenario"]),
        zone=row["zone"],
        instance_type=row["instance_type"],
        calls=row["calls"],
        seconds=row["seconds"],
        id=row["id"],
    )


def _machine_values(machine: Machine) -> dict[str, Any]:
    return {
        "zone": machine.zone,
        "instance_type": machine.instance_type,
        "name": machine.name,
        "image": machine.image,
        "tags": dict(machine.tags),
        "state": machine.state.value,
        "public_ip": machine.public_ip,
        "private_ip": machine.private_ip,
        "user_data": machine.user_data,
        "flags": sorted(machine.flags),
        "created_at": machine.created_at,
        "updated_at": machine.updated_at,
    }


async def _save(tx: Tx, before: World, after: World) -> None:
    """Write what the session changed: machines added, changed or forgotten; rules added, used or gone."""
    gone = [key for key in before.machines if key not in after.machines]
    if gone:
        await tx.execute(delete(mock_machines).where(mock_machines.c.id.in_(gone)))
    for key, machine in after.machines.items():
        old = before.machines.get(key)
        if old is None:
            await tx.execute(insert(mock_machines).values(id=key, **_machine_values(machine)))
        elif old != machine:
            await tx.execute(
                update(mock_machines).where(mock_machines.c.id == key).values(**_machine_values(machine))
            )
    kept = {r.id: r for r in after.rules if r.id is not None}
    dropped = [r.id for r in before.rules if r.id is not None and r.id not in kept]
    if dropped:
        await tx.execute(delete(mock_scenarios).where(mock_scenarios.c.id.in_(dropped)))
    for old_rule in before.rules:
        new_rule = kept.get(old_rule.id) if old_rule.id is not None else None
        if new_rule is not None and new_rule.calls != old_rule.calls:
            await tx.execute(
                update(mock_scenarios).where(mock_scenarios.c.id == old_rule.id).values(calls=new_rule.calls)
            )
    for rule in after.rules:
        if rule.id is None:
            await tx.execute(
                insert(mock_scenarios).values(
                    scenario=rule.scenario.value,
                    zone=rule.zone,
                    instance_type=rule.instance_type,
                    calls=rule.calls,
                    seconds=rule.seconds,
                )
            )
