"""The Mock cloud's simulator (pure: a World, a manual clock), its scenario rules and its user data."""

from __future__ import annotations

import pytest

from ikoma.providers import base
from ikoma.providers.mock.adapter import MockProvider
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.scenarios import Rule, Scenario, ScenarioError, parse_rule, take
from ikoma.providers.mock.simulator import (
    ALLOWED_ACTIONS,
    VANISHED,
    MachineState,
    ManualClock,
    Simulator,
    Timings,
    World,
)
from ikoma.providers.mock.store import MemoryStore
from ikoma.providers.mock.user_data import UserDataError, read_enrolment, render_user_data
from ikoma.services.catalog_seed import MOCK_OFFERS

ZONE = "mock-par-1"
TYPE = "MOCK-CPU-S"  # boots in 2 s
TOKEN = "ikb_" + "a" * 40


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    return Simulator(clock, Timings(ip_pool_size=3))


def create(sim: Simulator, world: World, **overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "zone": ZONE,
        "instance_type": TYPE,
        "name": "m",
        "image": "ubuntu",
        "tags": {"ikoma": "install-1"},
    }
    args.update(overrides)
    return sim.create(world, **args)  # type: ignore[arg-type]


def state_after(sim: Simulator, world: World, clock: ManualClock, machine_id: str, seconds: float) -> str:
    clock.advance(seconds)
    sim.tick(world)
    return world.machines[machine_id].state.value


def test_a_machine_boots_by_the_clock_and_not_before(sim: Simulator, clock: ManualClock) -> None:
    world = World()
    machine = create(sim, world).value
    assert machine is not None
    assert machine.state is MachineState.CREATING
    assert state_after(sim, world, clock, machine.id, 0.9) == "creating"
    assert state_after(sim, world, clock, machine.id, 0.1) == "starting"  # allocate: 1 s
    assert state_after(sim, world, clock, machine.id, 1.9) == "starting"
    assert state_after(sim, world, clock, machine.id, 0.1) == "running"  # boot: 2 s for MOCK-CPU-S


def test_a_long_jump_of_the_clock_runs_every_move_with_its_own_time(
    sim: Simulator, clock: ManualClock
) -> None:
    world = World()
    machine = create(sim, world).value
    assert machine is not None
    clock.advance(100)
    moves = sim.tick(world)
    assert [old.value for _, old in moves] == ["creating", "starting"]
    # it entered `running` when its boot ended, not when the tick looked
    assert (machine.updated_at - machine.created_at).total_seconds() == 3.0


def test_a_boot_time_set_for_every_type_wins_over_the_types_own(clock: ManualClock) -> None:
    sim = Simulator(clock, Timings(boot_seconds=0, allocate_seconds=0))
    world = World()
    machine = create(sim, world, zone="mock-par-2", instance_type="MOCK-GPU-M").value
    assert machine is not None
    assert state_after(sim, world, clock, machine.id, 0) == "running"


def test_stop_then_start_then_terminate_walk_the_states(sim: Simulator, clock: ManualClock) -> None:
    world = World()
    machine = create(sim, world).value
    assert machine is not None
    state_after(sim, world, clock, machine.id, 10)
    assert sim.act(world, ZONE, machine.id, "poweroff").value.state is MachineState.STOPPING  # type: ignore[union-attr]
    assert state_after(sim, world, clock, machine.id, 1) == "stopped"
    assert sim.act(world, ZONE, machine.id, "poweron").error is None
    assert state_after(sim, world, clock, machine.id, 2) == "running"
    assert sim.act(world, ZONE, machine.id, "terminate").error is None
    assert state_after(sim, world, clock, machine.id, 1) == "terminated"
    assert sim.get(world, ZONE, machine.id).value is None
    assert sim.list_machines(world).value == []


def test_actions_answer_as_allowed_actions_say(sim: Simulator, clock: ManualClock) -> None:
    world = World()
    machine = create(sim, world).value
    assert machine is not None
    assert ALLOWED_ACTIONS[MachineState.CREATING] == {"terminate"}
    refused = sim.act(world, ZONE, machine.id, "reboot").error
    assert refused is not None
    assert refused.reason == base.ACTION_NOT_ALLOWED
    assert not refused.retryable
    assert sim.act(world, ZONE, machine.id, "poweroff").error is not None  # creating: not yet
    state_after(sim, world, clock, machine.id, 10)
    assert sim.act(world, ZONE, machine.id, "poweron").error is None  # running already: nothing to do
    unknown = sim.act(world, ZONE, machine.id, "explode").error
    assert unknown is not None
    assert unknown.reason == base.INVALID_REQUEST


def test_a_machine_is_unknown_in_another_zone_and_after_it_is_gone(sim: Simulator) -> None:
    world = World()
    machine = create(sim, world).value
    assert machine is not None
    assert sim.get(world, "mock-par-2", machine.id).value is None
    missing = sim.act(world, "mock-par-2", machine.id, "poweroff").error
    assert missing is not None
    assert missing.reason == base.NOT_FOUND
    assert missing.status == 404


def test_unknown_zone_or_type_is_an_invalid_request(sim: Simulator) -> None:
    world = World()
    for overrides in ({"zone": "fr-par-2"}, {"instance_type": "GPU-3070-S"}):
        error = create(sim, world, **overrides).error
        assert error is not None
        assert error.reason == base.INVALID_REQUEST
        assert error.status == 400
    assert world.machines == {}


def test_ips_never_used_come_first_then_the_longest_released(sim: Simulator, clock: ManualClock) -> None:
    world = World()
    first = create(sim, world).value
    assert first is not None
    assert first.public_ip == "203.0.113.10"
    sim.act(world, ZONE, first.id, "terminate")
    state_after(sim, world, clock, first.id, 5)
    second, third = create(sim, world).value, create(sim, world).value
    assert second is not None
    assert third is not None
    assert (second.public_ip, third.public_ip) == ("203.0.113.11", "203.0.113.12")
    fourth = create(sim, world).value  # the pool holds 3: only the released one is left
    assert fourth is not None
    assert fourth.public_ip == first.public_ip


def test_an_exhausted_ip_pool_is_a_capacity_shortage(sim: Simulator) -> None:
    world = World()
    for _ in range(3):
        assert create(sim, world).error is None
    error = create(sim, world).error
    assert error is not None
    assert error.reason == base.CAPACITY_SHORTAGE
    assert error.retryable


def test_ip_reuse_hands_out_the_ip_a_dead_machine_just_released(sim: Simulator, clock: ManualClock) -> None:
    world = World()
    old = create(sim, world).value
    assert old is not None
    state_after(sim, world, clock, old.id, 10)
    assert sim.vanish(world, ZONE, old.id)
    world.rules.append(parse_rule("ip_reuse", calls=1))
    new = create(sim, world).value
    assert new is not None
    assert new.public_ip == old.public_ip
    assert new.id != old.id
    assert world.rules == []  # used up


def test_deleted_behind_back_vanishes_once_running(sim: Simulator, clock: ManualClock) -> None:
    world = World(rules=[parse_rule("deleted_behind_back")])
    machine = create(sim, world).value
    assert machine is not None
    assert state_after(sim, world, clock, machine.id, 2) == "starting"
    assert state_after(sim, world, clock, machine.id, 1) == "terminated"
    assert VANISHED in world.machines[machine.id].flags
    assert sim.get(world, ZONE, machine.id).value is None


def test_terminated_machines_are_forgotten_after_a_while(clock: ManualClock) -> None:
    sim = Simulator(clock, Timings(forget_after_seconds=60))
    world = World()
    machine = create(sim, world, user_data="#cloud-config\n").value
    assert machine is not None
    sim.act(world, ZONE, machine.id, "terminate")
    state_after(sim, world, clock, machine.id, 1)
    assert world.machines[machine.id].user_data is None  # the token does not outlive the machine
    clock.advance(60)
    sim.tick(world)
    assert machine.id not in world.machines


def test_offers_cover_every_zone_and_type_and_follow_capacity_rules(sim: Simulator) -> None:
    world = World(rules=[parse_rule("capacity_shortage", zone="mock-par-2", instance_type="MOCK-GPU-S")])
    offers = sim.offers(world).value
    assert offers is not None
    assert len(offers) == 2 * len(sim.types)
    unavailable = [(o.zone, o.machine_type.code) for o in offers if not o.available]
    # the rule's, and the type the catalog lists as sold out in mock-par-1
    assert sorted(unavailable) == [("mock-par-1", "MOCK-GPU-M"), ("mock-par-2", "MOCK-GPU-S")]
    assert len(world.rules) == 1  # looking does not use the rule up


def test_provider_5xx_and_latency_apply_before_the_call_changes_anything(sim: Simulator) -> None:
    world = World(rules=[parse_rule("latency:1.5"), parse_rule("provider_5xx", calls=1)])
    answer = create(sim, world)
    assert answer.error is not None
    assert answer.error.status == 503
    assert answer.error.retryable
    assert answer.delay == 1.5
    assert world.machines == {}
    answer = create(sim, world)
    assert answer.error is None
    assert answer.delay == 1.5


def test_zone_scoped_rules_skip_calls_without_a_zone(sim: Simulator) -> None:
    world = World(rules=[parse_rule("provider_5xx", zone=ZONE)])
    assert sim.list_machines(world).error is None
    assert sim.offers(world).error is None
    assert create(sim, world, zone="mock-par-2").error is None
    assert create(sim, world).error is not None


def test_a_type_sold_out_in_a_zone_is_a_capacity_shortage_there(sim: Simulator) -> None:
    world = World()
    error = create(sim, world, zone="mock-par-1", instance_type="MOCK-GPU-M").error
    assert error is not None
    assert error.reason == base.CAPACITY_SHORTAGE
    assert create(sim, world, zone="mock-par-2", instance_type="MOCK-GPU-M").error is None


async def test_the_mock_provider_sells_exactly_the_catalog_seeds_mock_offers() -> None:
    """A catalog sync of `mock` must find the seed unchanged (services/catalog_seed.MOCK_OFFERS)."""
    provider = MockProvider(MockCloud(MemoryStore(), clock=ManualClock()))
    offers = await provider.offers()
    assert len(offers) == len(MOCK_OFFERS)
    assert set(offers) == set(MOCK_OFFERS)


def test_parse_rule_reads_arguments_and_refuses_what_it_cannot_read() -> None:
    assert parse_rule("terminate_fails:3").calls == 3
    assert parse_rule("terminate_fails").calls is None
    assert parse_rule("latency:0.25").seconds == 0.25
    assert parse_rule("latency:2").text == "latency:2"
    for bad in ("nope", "latency", "latency:-1", "latency:nan", "terminate_fails:0", "ip_reuse:1"):
        with pytest.raises(ScenarioError):
            parse_rule(bad)
    with pytest.raises(ScenarioError):
        parse_rule("capacity_shortage", calls=0)


def test_take_uses_a_counted_rule_up_and_keeps_an_open_one() -> None:
    rules = [Rule(Scenario.TERMINATE_FAILS, calls=2), Rule(Scenario.PROVIDER_5XX)]
    assert take(rules, Scenario.TERMINATE_FAILS, ZONE, TYPE) is not None
    assert rules[0].calls == 1
    assert take(rules, Scenario.TERMINATE_FAILS, ZONE, TYPE) is not None
    assert take(rules, Scenario.TERMINATE_FAILS, ZONE, TYPE) is None
    for _ in range(3):
        assert take(rules, Scenario.PROVIDER_5XX, ZONE, TYPE) is not None
    assert rules == [Rule(Scenario.PROVIDER_5XX)]


def test_user_data_carries_the_enrolment_and_reads_back() -> None:
    document = render_user_data("http://127.0.0.1:3000/", TOKEN, "0b5e-42")
    assert document.startswith("#cloud-config\n")
    enrolment = read_enrolment(document)
    assert (enrolment.api_url, enrolment.bootstrap_token, enrolment.instance_id) == (
        "http://127.0.0.1:3000",
        TOKEN,
        "0b5e-42",
    )
    assert TOKEN not in repr(enrolment)


@pytest.mark.parametrize(
    ("api_url", "token", "instance_id"),
    [
        ("http://x:1\nIKOMA_EVIL=1", TOKEN, "i"),
        ("http://host/$(reboot)", TOKEN, "i"),
        ("ftp://host", TOKEN, "i"),
        ("http://host", "ikb_short", "i"),
        ("http://host", TOKEN + "'", "i"),
        ("http://host", TOKEN, "a b"),
    ],
)
def test_user_data_refuses_values_a_shell_could_read_otherwise(
    api_url: str, token: str, instance_id: str
) -> None:
    with pytest.raises(UserDataError) as raised:
        render_user_data(api_url, token, instance_id)
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "document",
    [
        "#!/bin/sh\necho hi\n",
        "#cloud-config\n: [\n",
        "#cloud-config\nwrite_files: []\n",
        "#cloud-config\nwrite_files:\n- path: /etc/ikoma/runner.env\n  content: IKOMA_API_URL=http://h\n",
    ],
)
def test_reading_user_data_without_an_enrolment_fails_clearly(document: str) -> None:
    with pytest.raises(UserDataError):
        read_enrolment(document)
