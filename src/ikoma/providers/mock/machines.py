"""The Mock cloud's vocabulary: its clock, machine states and types (the catalog it sells), the
timings of its moves, and the machine record the simulator moves (simulator.py) and stores keep.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from ikoma.providers import base


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now


class MachineState(enum.StrEnum):
    CREATING = "creating"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


# the provider's action words (Scaleway's), listed per state as `allowed_actions`
ALLOWED_ACTIONS: dict[MachineState, frozenset[str]] = {
    MachineState.CREATING: frozenset({"terminate"}),
    MachineState.STARTING: frozenset({"poweroff", "terminate"}),
    MachineState.RUNNING: frozenset({"poweroff", "reboot", "terminate"}),
    MachineState.STOPPING: frozenset({"terminate"}),
    MachineState.STOPPED: frozenset({"poweron", "terminate"}),
    MachineState.TERMINATING: frozenset(),
    MachineState.TERMINATED: frozenset(),
}
VANISHED = "vanished"  # flag of a machine deleted behind IKOMA's back


@dataclass(frozen=True)
class MachineType:
    code: str
    vcpus: int
    ram_mb: int
    gpu_count: int
    gpu_model: str | None
    gpu_memory_mb: int | None
    hourly_price_eur: Decimal
    boot_seconds: float  # starting -> running, unless Timings overrides it
    sold_out_in: frozenset[str] = frozenset()  # zones where it is listed but never available


REGION = "mock-par"
ZONES = ("mock-par-1", "mock-par-2")
# exactly the catalog seed's `MOCK_OFFERS` (services/catalog_seed.py; a test holds them equal), so a
# catalog sync of `mock` finds the seed unchanged; GPU memory is per GPU
TYPES = (
    MachineType("MOCK-CPU-S", 2, 4096, 0, None, None, Decimal("0.01"), 2.0),
    MachineType("MOCK-GPU-S", 8, 32768, 1, "Mock L4", 24576, Decimal("0.25"), 4.0),
    MachineType(
        "MOCK-GPU-M", 16, 65536, 2, "Mock L40S", 49152, Decimal("1.20"), 6.0, frozenset({"mock-par-1"})
    ),
)


@dataclass
class Timings:
    """How long each move takes, in seconds of the simulator's clock."""

    allocate_seconds: float = 1.0  # creating -> starting
    boot_seconds: float | None = None  # starting -> running for every type (None: each type's own)
    stop_seconds: float = 1.0  # stopping -> stopped
    terminate_seconds: float = 1.0  # terminating -> terminated
    forget_after_seconds: float = 86400.0  # a terminated machine is dropped (its IP history with it)
    ip_pool_size: int = 32  # public IPs 203.0.113.10 onwards (TEST-NET-3: never routed)


@dataclass
class Machine:
    id: str
    zone: str
    instance_type: str
    name: str
    image: str
    tags: dict[str, str]
    state: MachineState
    public_ip: str | None
    private_ip: str | None
    created_at: datetime
    updated_at: datetime  # when it entered its state
    user_data: str | None = None
    flags: frozenset[str] = frozenset()  # scenarios decided at creation, VANISHED

    def copy(self) -> Machine:
        return replace(self, tags=dict(self.tags))

    @property
    def visible(self) -> bool:
        """Whether the provider still answers for it (get, list)."""
        return self.state is not MachineState.TERMINATED

    def to_instance(self) -> base.ProviderInstance:
        """As the Provider interface speaks of it (never with its user data)."""
        return base.ProviderInstance(
            provider_id=self.id,
            zone=self.zone,
            instance_type=self.instance_type,
            name=self.name,
            state=base.PowerState(self.state.value),
            public_ip=self.public_ip,
            private_ip=self.private_ip,
            tags=dict(self.tags),
            created_at=self.created_at,
            raw_state=self.state.value,
            allowed_actions=ALLOWED_ACTIONS[self.state],
        )
