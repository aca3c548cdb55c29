"""An instance's life, as rules: its states, the allowed moves, and what each background loop decides
from what it sees (the database row, the provider's answer, the clock). No I/O: services/instances.py
and services/instance_loops.py read and write, this module decides.

    provisioning -> booting -> ready <-> unreachable
         |             |        |            |
         +-------------+--------+------------+--> terminating -> terminated
    failed (create refused for good, boot timeout) -> terminating
    orphaned (a machine carrying our tags that no live instance owns) -> terminating | terminated

Database-only (the provider says it does not know the machine) is `terminated` after two consecutive
not-founds, never after one: a single wrong answer (eventual consistency, a 404 during a zone
migration) must not drop a live machine from the fleet.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ikoma.domain.errors import Conflict
from ikoma.providers.base import PowerState


class State(enum.StrEnum):
    PROVISIONING = "provisioning"
    BOOTING = "booting"
    READY = "ready"
    UNREACHABLE = "unreachable"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"
    ORPHANED = "orphaned"


S = State
EDGES: Mapping[State, frozenset[State]] = {
    S.PROVISIONING: frozenset({S.BOOTING, S.FAILED, S.TERMINATING}),
    S.BOOTING: frozenset({S.READY, S.FAILED, S.TERMINATING, S.TERMINATED}),
    S.READY: frozenset({S.UNREACHABLE, S.TERMINATING, S.TERMINATED}),
    S.UNREACHABLE: frozenset({S.READY, S.TERMINATING, S.TERMINATED}),
    S.FAILED: frozenset({S.TERMINATING, S.TERMINATED}),
    S.ORPHANED: frozenset({S.TERMINATING, S.TERMINATED}),
    S.TERMINATING: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset({S.ORPHANED}),  # the machine turned up alive after all
}
# states whose machine is (or may be) alive at the provider, and is watched by the health loop
WATCHED = frozenset({S.BOOTING, S.READY, S.UNREACHABLE, S.ORPHANED})
# states a DELETE moves to `terminating` (terminating itself answers as it is: idempotent)
DELETABLE = frozenset({S.PROVISIONING, S.BOOTING, S.READY, S.UNREACHABLE, S.FAILED, S.ORPHANED})
ENDED = frozenset({S.TERMINATED})
GONE_CONFIRMATIONS = 2  # the terminator asks until the provider says "gone" this many times in a row
MISSING_CONFIRMATIONS = 2  # a database-only instance is terminated after this many not-founds in a row
PROVIDER_GONE = frozenset({PowerState.TERMINATED})


def can_move(current: State, to: State) -> bool:
    return to in EDGES[current]


def check_move(current: State, to: State) -> None:
    """409 `invalid_instance_transition` when the move is not an edge of the state machine."""
    if not can_move(current, to):
        raise Conflict(
            f"an instance cannot go from {current.value} to {to.value}",
            reason="invalid_instance_transition",
            state=current.value,
            to=to.value,
        )


def can_archive(state: State) -> bool:
    """Only an ended instance leaves the default list: a live one must stay in sight."""
    return state in ENDED


@dataclass(frozen=True)
class Move:
    """What a loop decided for one instance: a new state (or none), why, and the counters to keep."""

    to: State | None
    reason: str | None = None
    missing_checks: int = 0
    terminate: bool = False  # after the move, the terminator takes it (failed: the machine must go)


STAY = Move(None)


@dataclass(frozen=True)
class Seen:
    """What the health loop knows of one watched instance at `now`."""

    state: State
    since: datetime  # when it entered its state
    provider_state: PowerState | None  # None: the provider does not know the machine
    missing_checks: int  # not-founds in a row before this look
    runner_registered: bool  # the runner that spent this instance's own bootstrap token exists
    answers_own_id: bool  # its readiness answer names this instance (never true for another machine)
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class Timeouts:
    boot: float  # seconds `booting` before `failed` (IKOMA_INSTANCE_BOOT_TIMEOUT)
    heartbeat: float  # seconds without a runner heartbeat before `unreachable`


def health(seen: Seen, now: datetime, timeouts: Timeouts) -> Move:
    """The health loop's decision for a booting, ready, unreachable or orphaned instance."""
    if seen.provider_state is None or seen.provider_state in PROVIDER_GONE:
        missing = seen.missing_checks + 1
        if missing >= MISSING_CONFIRMATIONS:
            return Move(S.TERMINATED, "provider_lost", missing_checks=missing)
        return Move(None, missing_checks=missing)
    if seen.state is S.ORPHANED:
        return STAY
    fresh = (
        seen.last_heartbeat is not None and (now - seen.last_heartbeat).total_seconds() <= timeouts.heartbeat
    )
    if seen.state is S.BOOTING:
        if seen.runner_registered and seen.answers_own_id and fresh:
            return Move(S.READY, "runner_registered")
        if seen.provider_state is PowerState.ERROR:
            return Move(S.FAILED, "provider_error", terminate=True)
        if (now - seen.since).total_seconds() > timeouts.boot:
            return Move(S.FAILED, "boot_timeout", terminate=True)
        return STAY
    if seen.state is S.READY and not fresh:
        return Move(S.UNREACHABLE, "heartbeat_missed")
    if seen.state is S.UNREACHABLE and fresh and seen.answers_own_id:
        return Move(S.READY, "heartbeat_back")
    return STAY


class CreatePlan(enum.StrEnum):
    ADOPT = "adopt"  # a machine with this instance's tag exists: it is ours, never create a second
    CREATE = "create"
    GIVE_UP = "give_up"  # attempts used up: failed


def provisioning(*, tagged_machine_found: bool, attempts: int, max_attempts: int) -> CreatePlan:
    """What the provisioning driver does with an instance no one holds the lease of. It always lists
    by tag first (`tagged_machine_found`): a create that timed out or a crash after the provider
    call left a machine that must be adopted, not doubled."""
    if tagged_machine_found:
        return CreatePlan.ADOPT
    if attempts >= max_attempts:
        return CreatePlan.GIVE_UP
    return CreatePlan.CREATE


def after_create_error(*, retryable: bool, attempts: int, max_attempts: int) -> Move:
    """A refused create: retried later (the lease runs out, the driver lists by tag, then creates)
    while attempts remain and the error may pass; `failed` otherwise."""
    if retryable and attempts < max_attempts:
        return STAY
    return Move(S.FAILED, "create_failed")


def terminator(*, gone: bool, gone_checks: int) -> tuple[int, bool]:
    """(gone answers in a row, done): terminated once the provider said gone GONE_CONFIRMATIONS times."""
    checks = gone_checks + 1 if gone else 0
    return checks, checks >= GONE_CONFIRMATIONS


@dataclass(frozen=True)
class Owned:
    """One machine the provider lists with our owner tag."""

    provider_id: str
    instance_tag: str | None  # the INSTANCE_TAG value: which instance it was created for
    state: PowerState


@dataclass(frozen=True)
class Known:
    """An instance row, as the orphan watchdog compares it."""

    id: str
    state: State
    provider_id: str | None


def orphans(machines: Iterable[Owned], known: Iterable[Known]) -> list[Owned]:
    """Machines alive at the provider that no live instance owns (provider-only): an unknown provider
    id, or a known one whose instance is already terminated. A machine tagged for an instance still
    `provisioning` without a provider id is not an orphan: the driver adopts it."""
    by_provider_id = {k.provider_id: k for k in known if k.provider_id is not None}
    adopting = {k.id for k in known if k.state is S.PROVISIONING and k.provider_id is None}
    found = []
    for machine in machines:
        if machine.state in PROVIDER_GONE or machine.state is PowerState.TERMINATING:
            continue
        owner = by_provider_id.get(machine.provider_id)
        if owner is not None:
            if owner.state is S.TERMINATED:
                found.append(machine)
            continue
        if machine.instance_tag is not None and machine.instance_tag in adopting:
            continue
        found.append(machine)
    return found
