"""Instances on SQLite and PostgreSQL against the Mock cloud: every simulator scenario ends in the
documented state (docs/providers.md "Instances") with the right events and action log entries.

Time is a manual clock shared by the simulator and the loops (it starts at the real now, so the rows'
database timestamps compare with it); the loop steps are called directly, nothing sleeps. A runner's
enrolment is done as the machine's cloud-init would: the one-time token read from its user data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from ikoma.domain.errors import Conflict, Invalid
from ikoma.providers import base
from ikoma.providers.mock.adapter import MockProvider
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.scenarios import parse_rule
from ikoma.providers.mock.simulator import ManualClock
from ikoma.providers.mock.store import DatabaseStore
from ikoma.providers.mock.user_data import read_enrolment
from ikoma.services import bootstrap, catalog_seed
from ikoma.services.instance_loops import InstanceLoops
from ikoma.services.instance_records import installation_id
from ikoma.services.instances import Instances
from ikoma.settings import Settings
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import audit_log, events, runners, servers
from ikoma.storage.tables_cloud import instance_types, models, zones
from ikoma.storage.tables_instances import instance_state_changes, instances

BOOTED = 10.0  # seconds after which every Mock type has booted
BOOT_TIMEOUT = 300.0
HEARTBEAT_TIMEOUT = 120.0


@dataclass
class World:
    db: Database
    cloud: MockCloud
    clock: ManualClock
    fleet: Instances
    loops: InstanceLoops
    ids: dict[str, str]

    async def deploy(self, **changes: Any) -> dict[str, Any]:
        return await self.fleet.deploy(
            instance_type_id=self.ids["type"], zone_id=self.ids["zone"], model_id=self.ids["model"], **changes
        )

    async def row(self, instance_id: str) -> dict[str, Any]:
        async with self.db.read() as tx:
            found = (
                (await tx.execute(select(instances).where(instances.c.id == instance_id))).mappings().one()
            )
            return dict(found)

    async def state(self, instance_id: str) -> str:
        return str((await self.row(instance_id))["state"])

    async def expire_leases(self) -> None:
        """As if the lease (or a retry's pause) ran out: the database clock is real, so move the row."""
        async with self.db.write() as tx:
            await tx.execute(update(instances).values(lease_until=db_now(-1)))

    async def enrol(self, instance_id: str) -> dict[str, Any]:
        """What the machine's cloud-init does: spend the token of its user data, then heartbeat."""
        row = await self.row(instance_id)
        machine = next(m for m in await self.cloud.tick() if m.id == row["provider_id"])
        enrolment = read_enrolment(machine.user_data or "")
        assert enrolment.instance_id == instance_id
        registered = await bootstrap.register_runner(
            self.db, bootstrap_token=enrolment.bootstrap_token, name=None, hostname="vm", stale_after=120
        )
        await self.heartbeat(registered["runnerId"])
        return registered

    async def heartbeat(self, runner_id: str) -> None:
        async with self.db.write() as tx:
            await tx.execute(
                update(runners).where(runners.c.id == runner_id).values(last_heartbeat_at=db_now())
            )

    async def history(self, instance_id: str) -> list[tuple[str | None, str, str | None]]:
        async with self.db.read() as tx:
            rows = await tx.execute(
                select(instance_state_changes)
                .where(instance_state_changes.c.instance_id == instance_id)
                .order_by(instance_state_changes.c.id)
            )
            return [(r.from_state, r.to_state, r.reason) for r in rows]

    async def event_kinds(self, instance_id: str) -> list[str]:
        async with self.db.read() as tx:
            rows = await tx.execute(select(events.c.kind, events.c.data).order_by(events.c.id))
            return [r.kind for r in rows if (r.data or {}).get("instanceId") == instance_id]

    async def actions(self, instance_id: str) -> list[tuple[str, str, str | None]]:
        """The provider actions in the action log (its state moves are there too: `moves`)."""
        entries = await self.action_log(instance_id)
        return [entry for entry in entries if entry[0].startswith("provider.")]

    async def moves(self, instance_id: str) -> list[str]:
        """The instance's state moves as the action log names them (`instance.<state>`)."""
        entries = await self.action_log(instance_id)
        return [action for action, _, _ in entries if action.startswith("instance.")]

    async def action_log(self, instance_id: str) -> list[tuple[str, str, str | None]]:
        async with self.db.read() as tx:
            rows = await tx.execute(
                select(audit_log.c.action, audit_log.c.outcome, audit_log.c.reason, audit_log.c.channel)
                .where(audit_log.c.target == f"/instances/{instance_id}")
                .order_by(audit_log.c.id)
            )
            entries = list(rows)
        assert {r.channel for r in entries} <= {"system"}
        return [(r.action, r.outcome, r.reason) for r in entries]

    async def machines_tagged(self, instance_id: str) -> list[Any]:
        return [
            m for m in await self.cloud.tick() if m.tags.get(base.INSTANCE_TAG) == instance_id and m.visible
        ]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "IKOMA_INSTANCE_BOOT_TIMEOUT": BOOT_TIMEOUT,
        "IKOMA_INSTANCE_HEARTBEAT_TIMEOUT": HEARTBEAT_TIMEOUT,
        "IKOMA_PUBLIC_URL": "http://127.0.0.1:3999",
        **overrides,
    }
    return Settings(**values)


async def make_world(database: Database, **overrides: Any) -> World:
    await catalog_seed.apply(database, configured=["mock"])
    clock = ManualClock(datetime.now(UTC))
    cloud = MockCloud(DatabaseStore(database), clock=clock)

    async def no_sleep(_: float) -> None:
        return None

    cloud._sleep = no_sleep
    fleet = Instances(database, {"mock": MockProvider(cloud)}, settings(**overrides))
    async with database.read() as tx:
        zone = (await tx.execute(select(zones.c.id).where(zones.c.code == "mock-par-1"))).scalar_one()
        kind = (
            await tx.execute(select(instance_types.c.id).where(instance_types.c.code == "MOCK-GPU-S"))
        ).scalar_one()
        model = (
            await tx.execute(select(models.c.id).where(models.c.name == "Qwen/Qwen2.5-0.5B-Instruct"))
        ).scalar_one()
    ids = {"zone": str(zone), "type": str(kind), "model": str(model)}
    return World(database, cloud, clock, fleet, InstanceLoops(fleet, clock=clock), ids)


@pytest.fixture
async def world(database: Database) -> World:
    return await make_world(database)


async def ready_instance(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    instance = await world.deploy()
    world.clock.advance(BOOTED)
    registered = await world.enrol(instance["id"])
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "ready"
    return instance, registered


async def test_a_deployment_boots_becomes_ready_with_its_runner_and_is_terminated_on_delete(
    world: World,
) -> None:
    instance = await world.deploy(name="gpu-1", actor="user:alice")
    assert instance["state"] == "booting"
    assert instance["hourly_price_eur"] == instance["hourly_price_eur"].__class__("0.25")
    row = await world.row(instance["id"])
    owner = await _owner(world)
    assert row["tags"] == {base.OWNER_TAG: owner, base.INSTANCE_TAG: instance["id"]}
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "booting"  # no runner yet
    world.clock.advance(BOOTED)
    registered = await world.enrol(instance["id"])
    assert registered["serverId"] == str(row["server_id"])  # the token was bound to the instance's server
    assert (await world.loops.check_health())["health_ready"] == 1
    ready = await world.row(instance["id"])
    assert (ready["state"], ready["runner_id"]) == ("ready", registered["runnerId"])

    await world.fleet.request_termination(instance["id"], actor="user:alice")
    assert await world.state(instance["id"]) == "terminating"
    await world.loops.terminate_pending()  # terminate asked; the machine is terminating
    world.clock.advance(BOOTED)
    await world.loops.terminate_pending()  # gone once
    assert await world.state(instance["id"]) == "terminating"
    await world.loops.terminate_pending()  # gone twice
    assert await world.state(instance["id"]) == "terminated"

    assert [h[1] for h in await world.history(instance["id"])] == [
        "provisioning",
        "booting",
        "ready",
        "terminating",
        "terminated",
    ]
    assert await world.event_kinds(instance["id"]) == [
        "instance.provisioning",
        "instance.booting",
        "instance.ready",
        "instance.terminating",
        "instance.terminated",
    ]
    # every transition is in the action log as well as on the stream
    assert await world.moves(instance["id"]) == await world.event_kinds(instance["id"])
    assert await world.actions(instance["id"]) == [
        ("provider.create", "allowed", None),
        ("provider.terminate", "allowed", None),
    ]
    async with world.db.read() as tx:
        server = (await tx.execute(select(servers).where(servers.c.id == row["server_id"]))).one()
        runner = (await tx.execute(select(runners).where(runners.c.id == registered["runnerId"]))).one()
    assert server.deleted_at is not None
    assert server.labels["ikoma.instance"] == instance["id"]
    assert runner.revoked_at is not None  # its machine is gone: its token is refused from now on


async def _owner(world: World) -> str:
    async with world.db.read() as tx:
        return await installation_id(tx)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("instance_type_id", "instance_type_not_found"),
        ("zone_id", "zone_not_found"),
        ("model_id", "model_not_found"),
    ],
)
async def test_a_deployment_naming_an_unknown_type_zone_or_model_is_refused(
    world: World, field: str, reason: str
) -> None:
    ids = {
        "instance_type_id": world.ids["type"],
        "zone_id": world.ids["zone"],
        "model_id": world.ids["model"],
    }
    ids[field] = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(Invalid) as refused:
        await world.fleet.deploy(**ids)
    assert refused.value.reason == reason
    assert await world.fleet.list_instances(archived=None) == []


async def test_create_timeout_but_exists_is_adopted_by_tag_never_created_twice(world: World) -> None:
    await world.cloud.add_rule(parse_rule("create_timeout_but_exists", calls=1))
    instance = await world.deploy()
    row = await world.row(instance["id"])
    assert (row["state"], row["attempts"], row["last_error"]) == ("provisioning", 1, base.PROVIDER_TIMEOUT)
    assert (await world.loops.drive_provisioning()) == {}  # the retry's pause is not over
    await world.expire_leases()
    assert (await world.loops.drive_provisioning())["provision_adopted"] == 1
    row = await world.row(instance["id"])
    assert row["state"] == "booting"
    assert row["attempts"] == 1
    assert [m.id for m in await world.machines_tagged(instance["id"])] == [row["provider_id"]]
    assert await world.actions(instance["id"]) == [
        ("provider.create", "error", base.PROVIDER_TIMEOUT),
        ("provider.adopt", "allowed", None),
    ]
    assert await world.loops.watch_orphans() == {}  # the adopted machine is no orphan


async def test_a_crash_after_the_provider_call_ends_with_one_machine(world: World) -> None:
    """The process died between create and the commit: the row is provisioning, leased to a dead
    worker, and a machine carries its tag. Once the lease runs out the driver adopts it."""
    instance = await world.deploy(provision_now=False)
    owner = await _owner(world)
    await world.fleet._take_lease(instance["id"])
    token = await world.fleet._prepare_create(await world.row(instance["id"]))
    assert token.startswith("ikb_")
    await world.cloud.create(
        zone="mock-par-1",
        instance_type="MOCK-GPU-S",
        name=instance["name"],
        image="ubuntu_jammy",
        tags={base.OWNER_TAG: owner, base.INSTANCE_TAG: instance["id"]},
    )
    other = InstanceLoops(Instances(world.db, world.fleet.providers, world.fleet.settings), clock=world.clock)
    assert await other.drive_provisioning() == {}  # the dead worker's lease still runs
    await world.expire_leases()
    assert (await other.drive_provisioning())["provision_adopted"] == 1
    assert len(await world.machines_tagged(instance["id"])) == 1
    assert await world.state(instance["id"]) == "booting"


async def test_capacity_shortage_is_retried_then_fails_when_attempts_are_used_up(world: World) -> None:
    await world.cloud.add_rule(parse_rule("capacity_shortage", calls=1))
    passing = await world.deploy()
    assert passing["state"] == "provisioning"
    await world.expire_leases()
    assert (await world.loops.drive_provisioning())["provision_created"] == 1
    assert await world.state(passing["id"]) == "booting"

    await world.cloud.add_rule(parse_rule("capacity_shortage"))
    stuck = await world.deploy()
    for _ in range(2):
        await world.expire_leases()
        await world.loops.drive_provisioning()
    row = await world.row(stuck["id"])
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 3, base.CAPACITY_SHORTAGE)
    assert await world.machines_tagged(stuck["id"]) == []
    assert [h[1] for h in await world.history(stuck["id"])] == ["provisioning", "failed"]


@pytest.mark.parametrize("scenario", ["boot_never_finishes", "worker_never_registers"])
async def test_a_machine_that_does_not_become_ready_in_time_fails_and_is_terminated(
    world: World, scenario: str
) -> None:
    await world.cloud.add_rule(parse_rule(scenario, calls=1))
    instance = await world.deploy()
    world.clock.advance(BOOT_TIMEOUT / 2)
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "booting"
    world.clock.advance(BOOT_TIMEOUT)
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "terminating"
    for _ in range(3):
        await world.loops.terminate_pending()
        world.clock.advance(BOOTED)
    assert await world.state(instance["id"]) == "terminated"
    assert [(h[1], h[2]) for h in await world.history(instance["id"])][1:] == [
        ("booting", "created"),
        ("failed", "boot_timeout"),
        ("terminating", "boot_timeout: terminate"),
        ("terminated", "provider_confirmed_gone"),
    ]
    assert "instance.failed" in await world.event_kinds(instance["id"])
    assert await world.machines_tagged(instance["id"]) == []


async def test_a_machine_reusing_a_dead_machines_ip_does_not_pass_as_that_machine(world: World) -> None:
    first, registered = await ready_instance(world)
    old_ip = (await world.row(first["id"]))["public_ip"]
    await world.fleet.request_termination(first["id"], actor="admin")
    for _ in range(3):
        await world.loops.terminate_pending()
        world.clock.advance(BOOTED)
    assert await world.state(first["id"]) == "terminated"
    await world.cloud.add_rule(parse_rule("ip_reuse", calls=1))
    second = await world.deploy()
    world.clock.advance(BOOTED)
    await world.heartbeat(registered["runnerId"])  # the old machine's runner still talks
    await world.loops.check_health()
    row = await world.row(second["id"])
    assert row["public_ip"] == old_ip
    assert row["state"] == "booting"  # only the runner that spent ITS token makes it ready
    await world.enrol(second["id"])
    await world.loops.check_health()
    assert await world.state(second["id"]) == "ready"


async def test_ready_without_heartbeat_is_unreachable_then_ready_again(world: World) -> None:
    instance, registered = await ready_instance(world)
    world.clock.advance(HEARTBEAT_TIMEOUT + 1)
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "unreachable"
    assert await world.machines_tagged(instance["id"]) != []  # not terminated
    world.clock = world.loops.clock = ManualClock(datetime.now(UTC))
    await world.heartbeat(registered["runnerId"])
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "ready"
    assert (await world.history(instance["id"]))[-2:] == [
        ("ready", "unreachable", "heartbeat_missed"),
        ("unreachable", "ready", "heartbeat_back"),
    ]


async def test_terminate_failures_are_logged_and_retried_until_the_machine_is_gone(world: World) -> None:
    instance, _ = await ready_instance(world)
    await world.cloud.add_rule(parse_rule("terminate_fails:2"))
    await world.fleet.request_termination(instance["id"], actor="admin")
    for _ in range(5):
        await world.loops.terminate_pending()
        world.clock.advance(BOOTED)
    assert await world.state(instance["id"]) == "terminated"
    assert (await world.actions(instance["id"]))[1:] == [
        ("provider.terminate", "error", base.PROVIDER_UNAVAILABLE),
        ("provider.terminate", "error", base.PROVIDER_UNAVAILABLE),
        ("provider.terminate", "allowed", None),
    ]


async def test_a_machine_deleted_behind_iKOMAs_back_is_terminated_after_two_not_founds(world: World) -> None:
    instance, _ = await ready_instance(world)
    row = await world.row(instance["id"])
    assert await world.cloud.vanish("mock-par-1", row["provider_id"])
    await world.heartbeat(str(row["runner_id"]))
    await world.loops.check_health()
    assert (await world.row(instance["id"]))["missing_checks"] == 1
    assert await world.state(instance["id"]) == "ready"
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "terminated"
    assert (await world.history(instance["id"]))[-1] == ("ready", "terminated", "provider_lost")


async def test_provider_errors_change_nothing_and_are_events(world: World) -> None:
    instance, _ = await ready_instance(world)
    await world.cloud.add_rule(parse_rule("provider_5xx", calls=1))
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "ready"
    async with world.db.read() as tx:
        kinds = [
            r.data for r in await tx.execute(select(events.c.data).where(events.c.kind == "provider.error"))
        ]
    assert kinds[-1]["reason"] == base.PROVIDER_UNAVAILABLE


@pytest.mark.parametrize("policy", ["flag", "terminate"])
async def test_a_machine_with_our_tag_unknown_to_ikoma_is_orphaned(database: Database, policy: str) -> None:
    world = await make_world(database, IKOMA_ORPHAN_POLICY=policy)
    owner = await _owner(world)
    stray = await world.cloud.create(
        zone="mock-par-2", instance_type="MOCK-CPU-S", name="stray", image="x", tags={base.OWNER_TAG: owner}
    )
    foreign = await world.cloud.create(
        zone="mock-par-2",
        instance_type="MOCK-CPU-S",
        name="theirs",
        image="x",
        tags={base.OWNER_TAG: "other"},
    )
    assert (await world.loops.watch_orphans())["orphaned"] == 1
    assert await world.loops.watch_orphans() == {}  # found once
    async with world.db.read() as tx:
        rows = [dict(r) for r in (await tx.execute(select(instances))).mappings()]
    assert [(r["provider_id"], r["name"]) for r in rows] == [(stray.id, "stray")]
    orphan = rows[0]
    assert orphan["hourly_price_eur"] is not None  # the catalog's price for that type
    assert ("provider.orphan_found", "allowed", None) in await world.actions(str(orphan["id"]))
    if policy == "flag":
        assert orphan["state"] == "orphaned"
        assert await world.event_kinds(str(orphan["id"])) == ["instance.orphaned"]
        assert await world.moves(str(orphan["id"])) == ["instance.orphaned"]
        return
    assert orphan["state"] == "terminating"
    for _ in range(3):
        await world.loops.terminate_pending()
        world.clock.advance(BOOTED)
    assert await world.state(str(orphan["id"])) == "terminated"
    alive = {m.id for m in await world.cloud.tick() if m.visible}
    assert stray.id not in alive
    assert foreign.id in alive  # another installation's machine is never touched


async def test_archive_takes_only_terminated_instances_out_of_the_default_list(world: World) -> None:
    instance = await world.deploy()
    with pytest.raises(Conflict) as refused:
        await world.fleet.archive(instance["id"], actor="admin")
    assert refused.value.reason == "instance_not_terminated"
    await world.fleet.request_termination(instance["id"], actor="admin")
    for _ in range(3):
        await world.loops.terminate_pending()
        world.clock.advance(BOOTED)
    await world.fleet.archive(instance["id"], actor="admin")
    assert [i["id"] for i in await world.fleet.list_instances()] == []
    assert [i["id"] for i in await world.fleet.list_instances(archived=True)] == [instance["id"]]


async def test_deleted_behind_back_while_booting_ends_terminated_not_failed(world: World) -> None:
    await world.cloud.add_rule(parse_rule("deleted_behind_back", calls=1))
    instance = await world.deploy()
    world.clock.advance(BOOTED)  # it ran, then vanished: no runner ever enrolled
    await world.loops.check_health()
    assert await world.state(instance["id"]) == "booting"
    await world.loops.check_health()
    assert (await world.history(instance["id"]))[-1] == ("booting", "terminated", "provider_lost")
    assert await world.machines_tagged(instance["id"]) == []


async def test_a_provider_5xx_on_create_is_retried_and_creates_one_machine(world: World) -> None:
    await world.cloud.add_rule(parse_rule("provider_5xx", calls=1))
    instance = await world.deploy()
    row = await world.row(instance["id"])
    assert (row["state"], row["last_error"]) == ("provisioning", base.PROVIDER_UNAVAILABLE)
    await world.expire_leases()
    await world.loops.drive_provisioning()
    assert await world.state(instance["id"]) == "booting"
    assert len(await world.machines_tagged(instance["id"])) == 1
