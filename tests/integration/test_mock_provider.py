"""The Mock provider through the Provider interface, on each store: in memory, SQLite and PostgreSQL.

Every named failure scenario ends in the state the interface promises; time is a manual clock and
latency a recorded sleep, so nothing here waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ikoma.providers import base
from ikoma.providers.base import InstanceRequest, PowerState, ProviderError
from ikoma.providers.mock.adapter import MockProvider
from ikoma.providers.mock.boot import RunnerBoot
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.scenarios import parse_rule
from ikoma.providers.mock.simulator import Machine, MachineState, ManualClock, Timings
from ikoma.providers.mock.store import DatabaseStore, MemoryStore, SimulatorStore
from ikoma.storage.database import Database
from tests import support

ZONE = "mock-par-1"
OWNER = "install-a"
BOOTED = 10.0  # seconds after which any Mock type has booted


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None for the memory store, else a migrated database of that backend, fresh for this test."""
    if request.param == "memory":
        yield None
    elif request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "ikoma.db"
        target.write_bytes(template.read_bytes())
        yield f"sqlite:///{target}"
    else:
        name = support.create_pg_database(template=request.getfixturevalue("pg_template"))
        try:
            yield support.pg_url(name)
        finally:
            support.drop_pg_database(name)


@dataclass
class Harness:
    provider: MockProvider
    cloud: MockCloud
    clock: ManualClock
    slept: list[float] = field(default_factory=list)
    databases: list[Database] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def create(self, name: str = "m", zone: str = ZONE, instance_type: str = "MOCK-CPU-S") -> str:
        created = await self.provider.create(request(name, zone, instance_type))
        return created.provider_id

    async def state(self, provider_id: str, zone: str = ZONE) -> PowerState | None:
        found = await self.provider.get(zone, provider_id)
        return found.state if found is not None else None


def request(name: str, zone: str = ZONE, instance_type: str = "MOCK-CPU-S") -> InstanceRequest:
    return InstanceRequest(
        zone=zone,
        instance_type=instance_type,
        name=name,
        image="ubuntu_jammy",
        tags={base.OWNER_TAG: OWNER, base.INSTANCE_TAG: f"instance-{name}"},
    )


def store_for(url: str | None, databases: list[Database], memory: MemoryStore) -> SimulatorStore:
    if url is None:
        return memory
    db = Database(url)
    databases.append(db)
    return DatabaseStore(db)


@pytest.fixture
async def mock(store_url: str | None) -> AsyncIterator[Harness]:
    clock = ManualClock()
    databases: list[Database] = []
    cloud = MockCloud(store_for(store_url, databases, MemoryStore()), clock=clock)
    harness = Harness(MockProvider(cloud), cloud, clock, databases=databases)

    async def record(seconds: float) -> None:
        harness.slept.append(seconds)

    cloud._sleep = record
    yield harness
    for db in databases:
        await db.dispose()


async def test_a_machine_boots_is_listed_by_owner_and_terminate_makes_it_gone(mock: Harness) -> None:
    created = await mock.provider.create(request("web"))
    assert created.state is PowerState.CREATING
    assert created.public_ip is not None
    assert created.allowed_actions == {"terminate"}
    mock.advance(BOOTED)
    running = await mock.provider.get(ZONE, created.provider_id)
    assert running is not None
    assert running.state is PowerState.RUNNING
    assert "poweroff" in running.allowed_actions
    owned = await mock.provider.list_owned(OWNER)
    assert [(o.provider_id, o.tags[base.INSTANCE_TAG]) for o in owned] == [
        (created.provider_id, "instance-web")
    ]
    assert await mock.provider.list_owned("another-install") == []
    await mock.provider.terminate(ZONE, created.provider_id)
    assert await mock.state(created.provider_id) is PowerState.TERMINATING
    mock.advance(BOOTED)
    assert await mock.state(created.provider_id) is None
    assert await mock.provider.list_owned(OWNER) == []
    await mock.provider.terminate(ZONE, created.provider_id)  # gone already: success


async def test_stop_and_start_move_a_running_machine(mock: Harness) -> None:
    machine = await mock.create()
    mock.advance(BOOTED)
    await mock.provider.stop(ZONE, machine)
    mock.advance(BOOTED)
    assert await mock.state(machine) is PowerState.STOPPED
    await mock.provider.start(ZONE, machine)
    assert await mock.state(machine) is PowerState.STARTING
    mock.advance(BOOTED)
    assert await mock.state(machine) is PowerState.RUNNING


async def test_create_timeout_but_exists_leaves_one_machine_to_adopt_by_tag(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("create_timeout_but_exists", calls=1))
    with pytest.raises(ProviderError) as raised:
        await mock.provider.create(request("lost"))
    assert raised.value.reason == base.PROVIDER_TIMEOUT
    assert raised.value.retryable
    owned = await mock.provider.list_owned(OWNER)
    assert [o.tags[base.INSTANCE_TAG] for o in owned] == ["instance-lost"]
    mock.advance(BOOTED)
    assert await mock.state(owned[0].provider_id) is PowerState.RUNNING
    await mock.create("next")  # the rule was for one call
    assert len(await mock.provider.list_owned(OWNER)) == 2


async def test_capacity_shortage_creates_nothing_and_shows_in_offers(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("capacity_shortage", zone="mock-par-2", instance_type="MOCK-GPU-S"))
    with pytest.raises(ProviderError) as raised:
        await mock.create(zone="mock-par-2", instance_type="MOCK-GPU-S")
    assert raised.value.reason == base.CAPACITY_SHORTAGE
    assert raised.value.retryable
    assert await mock.provider.list_owned(OWNER) == []
    offers = {(o.zone, o.instance_type): o for o in await mock.provider.offers()}
    assert not offers["mock-par-2", "MOCK-GPU-S"].available
    assert offers["mock-par-1", "MOCK-GPU-S"].available
    assert offers["mock-par-1", "MOCK-GPU-S"].region == "mock-par"
    assert str(offers["mock-par-1", "MOCK-GPU-S"].hourly_price_eur) == "0.25"
    await mock.create(zone="mock-par-1", instance_type="MOCK-GPU-S")  # another zone is fine
    await mock.cloud.clear_rules()
    await mock.create(zone="mock-par-2", instance_type="MOCK-GPU-S")


async def test_boot_never_finishes_stays_starting(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("boot_never_finishes", calls=1))
    stuck, fine = await mock.create("stuck"), await mock.create("fine")
    mock.advance(3600)
    assert await mock.state(stuck) is PowerState.STARTING
    assert await mock.state(fine) is PowerState.RUNNING


async def test_worker_never_registers_runs_without_a_runner(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("worker_never_registers", calls=1))
    silent = await mock.create("silent")
    mock.advance(BOOTED)
    assert await mock.state(silent) is PowerState.RUNNING
    machines = {m.id: m for m in await mock.cloud.tick()}
    assert "worker_never_registers" in machines[silent].flags


async def test_ip_reuse_gives_a_dead_machines_ip_to_a_new_one(mock: Harness) -> None:
    dead = await mock.provider.create(request("dead"))
    mock.advance(BOOTED)
    assert await mock.cloud.vanish(ZONE, dead.provider_id)
    await mock.create("between")  # takes a never-used IP: reuse is not the default
    await mock.cloud.add_rule(parse_rule("ip_reuse", calls=1))
    reused = await mock.provider.create(request("reused"))
    assert reused.public_ip == dead.public_ip
    assert reused.provider_id != dead.provider_id


async def test_terminate_fails_n_times_then_terminates(mock: Harness) -> None:
    machine = await mock.create()
    mock.advance(BOOTED)
    await mock.cloud.add_rule(parse_rule("terminate_fails:2"))
    for _ in range(2):
        with pytest.raises(ProviderError) as raised:
            await mock.provider.terminate(ZONE, machine)
        assert raised.value.reason == base.PROVIDER_UNAVAILABLE
        assert raised.value.retryable
        assert await mock.state(machine) is PowerState.RUNNING
    await mock.provider.terminate(ZONE, machine)
    mock.advance(BOOTED)
    assert await mock.state(machine) is None


async def test_deleted_behind_back_vanishes_from_get_and_list(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("deleted_behind_back", calls=1))
    vanishing, kept = await mock.create("vanishing"), await mock.create("kept")
    mock.advance(BOOTED)
    assert await mock.state(vanishing) is None
    assert [o.provider_id for o in await mock.provider.list_owned(OWNER)] == [kept]
    await mock.provider.terminate(ZONE, vanishing)  # already gone: success


async def test_provider_5xx_fails_the_call_and_changes_nothing(mock: Harness) -> None:
    machine = await mock.create()
    await mock.cloud.add_rule(parse_rule("provider_5xx", calls=2))
    with pytest.raises(ProviderError) as raised:
        await mock.provider.stop(ZONE, machine)
    assert (raised.value.reason, raised.value.status, raised.value.retryable) == (
        base.PROVIDER_UNAVAILABLE,
        503,
        True,
    )
    with pytest.raises(ProviderError):
        await mock.provider.list_owned(OWNER)
    mock.advance(BOOTED)
    assert await mock.state(machine) is PowerState.RUNNING  # the stop never happened


async def test_latency_delays_every_answer(mock: Harness) -> None:
    await mock.cloud.add_rule(parse_rule("latency:0.5", calls=3))
    machine = await mock.create()
    await mock.state(machine)
    await mock.provider.offers()
    await mock.provider.offers()
    assert mock.slept == [0.5, 0.5, 0.5]


async def test_errors_of_the_interface_have_stable_reasons(mock: Harness) -> None:
    with pytest.raises(ProviderError) as raised:
        await mock.create(zone="fr-par-2")
    assert (raised.value.reason, raised.value.retryable) == (base.INVALID_REQUEST, False)
    with pytest.raises(ProviderError) as raised:
        await mock.provider.start(ZONE, "no-such-machine")
    assert raised.value.reason == base.NOT_FOUND
    assert await mock.provider.get(ZONE, "no-such-machine") is None


async def test_replicas_share_one_world_and_never_hand_out_an_ip_twice(store_url: str | None) -> None:
    """Two Mock providers on one database (two replicas) creating at once; rules set by one apply to both."""
    if store_url is None:
        pytest.skip("replicas share a database; the memory store lives in one process")
    databases: list[Database] = []
    clock = ManualClock()
    memory = MemoryStore()
    first, second = (
        MockProvider(MockCloud(store_for(store_url, databases, memory), clock=clock, timings=Timings()))
        for _ in range(2)
    )
    try:
        created = await asyncio.gather(
            *(provider.create(request(f"m{i}")) for i in range(6) for provider in (first, second))
        )
        ips = [c.public_ip for c in created]
        assert len(set(ips)) == len(ips) == 12
        assert len(await second.list_owned(OWNER)) == 12
        await first.cloud.add_rule(parse_rule("capacity_shortage", calls=1))
        with pytest.raises(ProviderError):
            await second.create(request("refused"))
        await first.create(request("accepted"))  # the one call was used up by the other replica
    finally:
        for db in databases:
            await db.dispose()


async def test_boot_starts_nothing_for_unreadable_user_data_and_clears_dirs_of_gone_machines(
    tmp_path: Path,
) -> None:
    root = tmp_path / "mock-machines"
    (root / "gone-machine").mkdir(parents=True)  # left by an earlier server process
    now = ManualClock().now()
    broken = Machine(
        id="broken",
        zone=ZONE,
        instance_type="MOCK-CPU-S",
        name="broken",
        image="ubuntu_jammy",
        tags={},
        state=MachineState.RUNNING,
        public_ip=None,
        private_ip=None,
        created_at=now,
        updated_at=now,
        user_data="#!/bin/sh\necho not cloud-config\n",
    )
    boot = RunnerBoot(root)
    try:
        await boot.sync([broken])
        assert boot.running() == {}
        assert not (root / "broken").exists()
        assert not (root / "gone-machine").exists()
    finally:
        await boot.close()
