"""The Mock cloud's machines and how they move: pure logic over a `World` a store loaded.

No I/O, no thread, no sleep: time is a `Clock` (the real one in production, a `ManualClock` in tests),
and every call first brings the world up to the clock's now (`tick`), so a machine created at t0 with
a 2 s boot is `running` for any call made at t0 + 3 s, whoever makes it. Calls never raise: they
answer an `Answer` (value, error, delay) because a failed call must still keep what it changed (a
rule used up, the machine `create_timeout_but_exists` made) — the store commits, then the caller
sleeps the delay and raises the error.

States: creating -> starting -> running; stopping -> stopped; terminating -> terminated. A
terminated (or vanished) machine is kept, invisible to get/list, until `forget_after_seconds`, so
its public IP's release time is known (the pool hands out never-used IPs first, then the longest
released; `ip_reuse` picks the most recently released).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from ikoma.providers import base
from ikoma.providers.base import ProviderError
from ikoma.providers.mock.machines import (
    ALLOWED_ACTIONS,
    REGION,
    TYPES,
    VANISHED,
    ZONES,
    Clock,
    Machine,
    MachineState,
    MachineType,
    ManualClock,
    SystemClock,
    Timings,
)
from ikoma.providers.mock.scenarios import MACHINE_FLAGS, Rule, Scenario, active, take

# the vocabulary lives in machines.py; importing it from here is fine too (the Scaleway fake does)
__all__ = [
    "ALLOWED_ACTIONS",
    "REGION",
    "TYPES",
    "VANISHED",
    "ZONES",
    "Answer",
    "Clock",
    "Machine",
    "MachineState",
    "MachineType",
    "ManualClock",
    "Offered",
    "Simulator",
    "SystemClock",
    "Timings",
    "World",
]

T = TypeVar("T")


@dataclass
class World:
    """Everything the simulator knows, as one store transaction loaded it."""

    machines: dict[str, Machine] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Answer(Generic[T]):
    value: T | None = None
    error: ProviderError | None = None
    delay: float = 0.0  # seconds the answer comes late (latency)


@dataclass(frozen=True)
class Offered:
    zone: str
    machine_type: MachineType
    available: bool


def _unavailable(message: str) -> ProviderError:
    return ProviderError(message, reason=base.PROVIDER_UNAVAILABLE, retryable=True, status=503)


def _not_found(zone: str, machine_id: str) -> ProviderError:
    return ProviderError(
        f"no machine {machine_id} in zone {zone}", reason=base.NOT_FOUND, retryable=False, status=404
    )


def _not_allowed(machine: Machine, action: str) -> ProviderError:
    return ProviderError(
        f"{action} is not allowed while machine {machine.id} is {machine.state.value}",
        reason=base.ACTION_NOT_ALLOWED,
        retryable=False,
        status=409,
    )


class Simulator:
    def __init__(
        self, clock: Clock, timings: Timings | None = None, *, types: tuple[MachineType, ...] = TYPES
    ) -> None:
        self.clock = clock
        self.timings = timings or Timings()
        self.types = {t.code: t for t in types}
        self.zones = ZONES
        first = ipaddress.IPv4Address("203.0.113.10")
        self.ip_pool = [str(first + i) for i in range(self.timings.ip_pool_size)]

    # --- time --------------------------------------------------------------------------------------

    def tick(self, world: World) -> list[tuple[Machine, MachineState]]:
        """Move every machine as far as the clock allows; the moves made, as (machine, old state)."""
        now = self.clock.now()
        moves: list[tuple[Machine, MachineState]] = []
        for machine in list(world.machines.values()):
            while (step := self._next(machine)) is not None:
                state, at = step
                if at > now:
                    break
                moves.append((machine, machine.state))
                self._enter(machine, state, at)
            if (
                machine.state is MachineState.TERMINATED
                and machine.updated_at + timedelta(seconds=self.timings.forget_after_seconds) <= now
            ):
                del world.machines[machine.id]
        return moves

    def _next(self, machine: Machine) -> tuple[MachineState, datetime] | None:
        """The state the machine moves to next on its own, and when (None: it stays)."""
        t = self.timings
        since = machine.updated_at
        match machine.state:
            case MachineState.CREATING:
                return MachineState.STARTING, since + timedelta(seconds=t.allocate_seconds)
            case MachineState.STARTING if Scenario.BOOT_NEVER_FINISHES not in machine.flags:
                return MachineState.RUNNING, since + timedelta(seconds=self.boot_seconds(machine))
            case MachineState.RUNNING if Scenario.DELETED_BEHIND_BACK in machine.flags:
                return MachineState.TERMINATED, since
            case MachineState.STOPPING:
                return MachineState.STOPPED, since + timedelta(seconds=t.stop_seconds)
            case MachineState.TERMINATING:
                return MachineState.TERMINATED, since + timedelta(seconds=t.terminate_seconds)
        return None

    def boot_seconds(self, machine: Machine) -> float:
        if self.timings.boot_seconds is not None:
            return self.timings.boot_seconds
        known = self.types.get(machine.instance_type)
        return known.boot_seconds if known else 1.0

    def _enter(self, machine: Machine, state: MachineState, at: datetime) -> None:
        if state is MachineState.TERMINATED and machine.state is MachineState.RUNNING:
            machine.flags = machine.flags | {VANISHED}  # only deleted_behind_back skips terminating
        machine.state = state
        machine.updated_at = at
        if state is MachineState.TERMINATED:
            machine.user_data = None  # the bootstrap token goes with the machine

    # --- calls -------------------------------------------------------------------------------------

    def _prelude(self, world: World, zone: str | None, instance_type: str | None) -> Answer[None]:
        """What every call meets first: latency (its delay) and provider_5xx (its error)."""
        answer: Answer[None] = Answer()
        latency = take(world.rules, Scenario.LATENCY, zone, instance_type)
        if latency is not None and latency.seconds:
            answer.delay = latency.seconds
        if take(world.rules, Scenario.PROVIDER_5XX, zone, instance_type) is not None:
            answer.error = _unavailable("the mock provider answered 503 (scenario provider_5xx)")
        return answer

    def offers(self, world: World) -> Answer[list[Offered]]:
        answer: Answer[list[Offered]] = Answer(delay=(prelude := self._prelude(world, None, None)).delay)
        if prelude.error:
            answer.error = prelude.error
            return answer
        answer.value = [
            Offered(
                zone,
                t,
                zone not in t.sold_out_in
                and not active(world.rules, Scenario.CAPACITY_SHORTAGE, zone, t.code),
            )
            for zone in self.zones
            for t in self.types.values()
        ]
        return answer

    def create(
        self,
        world: World,
        *,
        zone: str,
        instance_type: str,
        name: str,
        image: str,
        tags: Mapping[str, str],
        user_data: str | None = None,
        power_on: bool = True,
    ) -> Answer[Machine]:
        """A new machine, creating (power_on) or stopped (as Scaleway creates them)."""
        answer: Answer[Machine] = Answer(delay=(prelude := self._prelude(world, zone, instance_type)).delay)
        if prelude.error:
            answer.error = prelude.error
            return answer
        if zone not in self.zones or instance_type not in self.types:
            what = f"zone {zone!r}" if zone not in self.zones else f"instance type {instance_type!r}"
            answer.error = ProviderError(
                f"the mock provider has no {what}", reason=base.INVALID_REQUEST, retryable=False, status=400
            )
            return answer
        sold_out = zone in self.types[instance_type].sold_out_in
        if sold_out or take(world.rules, Scenario.CAPACITY_SHORTAGE, zone, instance_type) is not None:
            answer.error = ProviderError(
                f"no {instance_type} left in {zone}" + ("" if sold_out else " (scenario capacity_shortage)"),
                reason=base.CAPACITY_SHORTAGE,
                retryable=True,
                status=503,
            )
            return answer
        reuse = take(world.rules, Scenario.IP_REUSE, zone, instance_type) is not None
        public_ip = self._free_ip(world, reuse=reuse)
        if public_ip is None:
            answer.error = ProviderError(
                "no public IP left in the mock pool",
                reason=base.CAPACITY_SHORTAGE,
                retryable=True,
                status=503,
            )
            return answer
        flags = frozenset(
            s.value for s in sorted(MACHINE_FLAGS) if take(world.rules, s, zone, instance_type) is not None
        )
        now = self.clock.now()
        machine = Machine(
            id=str(uuid.uuid4()),
            zone=zone,
            instance_type=instance_type,
            name=name,
            image=image,
            tags=dict(tags),
            state=MachineState.CREATING if power_on else MachineState.STOPPED,
            public_ip=public_ip,
            private_ip=self._free_private_ip(world),
            created_at=now,
            updated_at=now,
            user_data=user_data,
            flags=flags,
        )
        world.machines[machine.id] = machine
        answer.value = machine
        if take(world.rules, Scenario.CREATE_TIMEOUT_BUT_EXISTS, zone, instance_type) is not None:
            answer.error = ProviderError(
                "the mock provider did not answer in time (scenario create_timeout_but_exists)",
                reason=base.PROVIDER_TIMEOUT,
                retryable=True,
            )
        return answer

    def get(self, world: World, zone: str, machine_id: str) -> Answer[Machine]:
        """The machine (value None when the provider does not know it in that zone)."""
        machine = self._find(world, zone, machine_id)
        answer: Answer[Machine] = Answer(
            delay=(prelude := self._prelude(world, zone, machine.instance_type if machine else None)).delay
        )
        answer.error = prelude.error
        if not prelude.error:
            answer.value = machine
        return answer

    def list_machines(
        self, world: World, *, zone: str | None = None, tags: Mapping[str, str] | None = None
    ) -> Answer[list[Machine]]:
        """Visible machines (of one zone, or all), carrying every tag of `tags`, oldest first."""
        answer: Answer[list[Machine]] = Answer(delay=(prelude := self._prelude(world, zone, None)).delay)
        if prelude.error:
            answer.error = prelude.error
            return answer
        wanted = dict(tags or {})
        answer.value = sorted(
            (
                m
                for m in world.machines.values()
                if m.visible
                and (zone is None or m.zone == zone)
                and all(m.tags.get(k) == v for k, v in wanted.items())
            ),
            key=lambda m: (m.created_at, m.id),
        )
        return answer

    def act(self, world: World, zone: str, machine_id: str, action: str) -> Answer[Machine]:
        """`poweron`, `poweroff`, `reboot` or `terminate` (each idempotent where its end is reached)."""
        machine = self._find(world, zone, machine_id)
        answer: Answer[Machine] = Answer(
            delay=(prelude := self._prelude(world, zone, machine.instance_type if machine else None)).delay
        )
        if prelude.error:
            answer.error = prelude.error
            return answer
        if machine is None:
            answer.error = _not_found(zone, machine_id)
            return answer
        answer.value = machine
        now = self.clock.now()
        state = machine.state
        match action:
            case "poweron":
                if state is MachineState.STOPPED:
                    self._enter(machine, MachineState.STARTING, now)
                elif state not in (MachineState.STARTING, MachineState.RUNNING):
                    answer.error = _not_allowed(machine, action)
            case "poweroff":
                if state in (MachineState.STARTING, MachineState.RUNNING):
                    self._enter(machine, MachineState.STOPPING, now)
                elif state not in (MachineState.STOPPING, MachineState.STOPPED):
                    answer.error = _not_allowed(machine, action)
            case "reboot":
                if state is MachineState.RUNNING:
                    self._enter(machine, MachineState.STARTING, now)
                else:
                    answer.error = _not_allowed(machine, action)
            case "terminate":
                if take(world.rules, Scenario.TERMINATE_FAILS, zone, machine.instance_type) is not None:
                    answer.error = _unavailable("terminate failed (scenario terminate_fails)")
                elif state is not MachineState.TERMINATING:
                    self._enter(machine, MachineState.TERMINATING, now)
            case _:
                answer.error = ProviderError(
                    f"unknown action {action!r}", reason=base.INVALID_REQUEST, retryable=False, status=400
                )
        return answer

    def vanish(self, world: World, zone: str, machine_id: str) -> bool:
        """Delete a machine behind IKOMA's back, now (tests); False when there is no such machine."""
        machine = self._find(world, zone, machine_id)
        if machine is None:
            return False
        machine.flags = machine.flags | {VANISHED}
        self._enter(machine, MachineState.TERMINATED, self.clock.now())
        return True

    # --- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _find(world: World, zone: str, machine_id: str) -> Machine | None:
        machine = world.machines.get(machine_id)
        return machine if machine is not None and machine.visible and machine.zone == zone else None

    def _free_ip(self, world: World, *, reuse: bool) -> str | None:
        held = {m.public_ip for m in world.machines.values() if m.visible}
        released: dict[str, datetime] = {}
        for m in world.machines.values():
            if not m.visible and m.public_ip and m.public_ip not in held:
                released[m.public_ip] = max(m.updated_at, released.get(m.public_ip, m.updated_at))
        free = [ip for ip in self.ip_pool if ip not in held]
        if not free:
            return None
        if reuse and released:
            return max(released, key=lambda ip: released[ip])
        never_used = [ip for ip in free if ip not in released]
        if never_used:
            return never_used[0]
        return min(free, key=lambda ip: released[ip])

    @staticmethod
    def _free_private_ip(world: World) -> str:
        held = {m.private_ip for m in world.machines.values() if m.visible}
        base_ip = ipaddress.IPv4Address("10.42.0.2")
        n = 0
        while str(base_ip + n) in held:
            n += 1
        return str(base_ip + n)
