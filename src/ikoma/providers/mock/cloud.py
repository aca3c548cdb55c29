"""The Mock cloud as a service: the simulator's calls, each in one store session, answered late and
failed as its scenarios say. The Mock provider (adapter.py) and the Scaleway fake (tests) speak to it.

    cloud = MockCloud(DatabaseStore(db))                    # production: the real clock
    cloud = MockCloud(MemoryStore(), clock=ManualClock())    # tests: time moves when told
    machine = await cloud.create(zone="mock-par-1", instance_type="MOCK-CPU-S", name="a", ...)
    await cloud.add_rule(parse_rule("terminate_fails:2"))

Errors are `ProviderError`s raised once the session committed (a failed call still uses up its rule,
and `create_timeout_but_exists` still leaves its machine); latency is slept after the commit too, so
no transaction is held while the caller waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from ikoma.providers.mock.scenarios import Rule
from ikoma.providers.mock.simulator import (
    Answer,
    Clock,
    Machine,
    Offered,
    Simulator,
    SystemClock,
    Timings,
    World,
)
from ikoma.providers.mock.store import SimulatorStore

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class MockCloud:
    def __init__(
        self,
        store: SimulatorStore,
        *,
        clock: Clock | None = None,
        timings: Timings | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.simulator = Simulator(clock or SystemClock(), timings)
        self._sleep = sleep

    async def _call(self, call: Callable[[World], Answer[T]]) -> T | None:
        async with self.store.session() as world:
            self.simulator.tick(world)
            answer = call(world)
            # copies: the world's objects belong to the session that just ended
            value = _copied(answer.value)
        if answer.delay:
            await self._sleep(answer.delay)
        if answer.error is not None:
            raise answer.error
        return value

    async def offers(self) -> list[Offered]:
        return await self._call(self.simulator.offers) or []

    async def create(
        self,
        *,
        zone: str,
        instance_type: str,
        name: str,
        image: str,
        tags: Mapping[str, str],
        user_data: str | None = None,
        power_on: bool = True,
    ) -> Machine:
        machine = await self._call(
            lambda world: self.simulator.create(
                world,
                zone=zone,
                instance_type=instance_type,
                name=name,
                image=image,
                tags=tags,
                user_data=user_data,
                power_on=power_on,
            )
        )
        return _machine(machine)

    async def get(self, zone: str, machine_id: str) -> Machine | None:
        return await self._call(lambda world: self.simulator.get(world, zone, machine_id))

    async def list_machines(
        self, *, zone: str | None = None, tags: Mapping[str, str] | None = None
    ) -> list[Machine]:
        return await self._call(lambda world: self.simulator.list_machines(world, zone=zone, tags=tags)) or []

    async def act(self, zone: str, machine_id: str, action: str) -> Machine:
        """`poweron`, `poweroff`, `reboot` or `terminate`; the machine as the action left it."""
        machine = await self._call(lambda world: self.simulator.act(world, zone, machine_id, action))
        return _machine(machine)

    # --- for tests and the driver (no scenario applies) ----------------------------------------------

    async def tick(self) -> list[Machine]:
        """Move the world to now; every machine the simulator still keeps (terminated ones too)."""
        if not await self.store.has_machines():
            return []  # nothing to move: no write transaction every second on an idle installation
        async with self.store.session() as world:
            self.simulator.tick(world)
            return [m.copy() for m in world.machines.values()]

    async def vanish(self, zone: str, machine_id: str) -> bool:
        """Delete a machine behind IKOMA's back (scenario deleted_behind_back, on one machine now)."""
        async with self.store.session() as world:
            self.simulator.tick(world)
            return self.simulator.vanish(world, zone, machine_id)

    async def forget_user_data(self, machine_ids: list[str]) -> None:
        """Clear the user data (and the spent token in it) of these machines."""
        async with self.store.session() as world:
            for machine_id in machine_ids:
                if machine_id in world.machines:
                    world.machines[machine_id].user_data = None

    async def add_rule(self, rule: Rule) -> None:
        async with self.store.session() as world:
            world.rules.append(Rule(rule.scenario, rule.zone, rule.instance_type, rule.calls, rule.seconds))

    async def clear_rules(self) -> None:
        async with self.store.session() as world:
            world.rules.clear()

    async def rules(self) -> list[Rule]:
        async with self.store.session() as world:
            return [Rule(r.scenario, r.zone, r.instance_type, r.calls, r.seconds, r.id) for r in world.rules]


def _machine(value: Machine | None) -> Machine:
    # create and act answer a machine whenever they answer without an error
    if value is None:
        raise RuntimeError("the simulator answered neither a machine nor an error")
    return value


def _copied(value: T | None) -> T | None:
    if isinstance(value, Machine):
        return value.copy()  # type: ignore[return-value]  # T is Machine here
    if isinstance(value, list):
        return [v.copy() if isinstance(v, Machine) else v for v in value]  # type: ignore[return-value]
    return value
