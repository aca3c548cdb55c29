"""The Mock cloud's named failure scenarios: what each does, and the rules that switch them on.

A rule names a scenario, optionally narrows it to a zone and/or an instance type, and optionally
limits it to the next N times it applies (`calls`); without `calls` it stays until it is cleared.
Rules are kept by the simulator's store, so a test (or the Scaleway fake) sets them and every
replica of IKOMA sees them.

    parse_rule("terminate_fails:3")                # the next 3 terminate calls fail
    parse_rule("latency:0.5", zone="mock-par-2")   # every call in mock-par-2 answers 0.5 s late
    parse_rule("capacity_shortage", instance_type="MOCK-GPU-L4", calls=1)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass


class Scenario(enum.StrEnum):
    # decided when a machine is created (each create it applies to counts as one call)
    CREATE_TIMEOUT_BUT_EXISTS = "create_timeout_but_exists"
    CAPACITY_SHORTAGE = "capacity_shortage"
    BOOT_NEVER_FINISHES = "boot_never_finishes"
    WORKER_NEVER_REGISTERS = "worker_never_registers"
    IP_REUSE = "ip_reuse"
    DELETED_BEHIND_BACK = "deleted_behind_back"
    # decided by a terminate call
    TERMINATE_FAILS = "terminate_fails"
    # every call (offers and list_owned only match rules without a zone or type)
    PROVIDER_5XX = "provider_5xx"
    LATENCY = "latency"


# what each scenario does; docs/providers.md says the same in prose
DESCRIPTIONS: dict[Scenario, str] = {
    Scenario.CREATE_TIMEOUT_BUT_EXISTS: "create raises provider_timeout, but the machine was created "
    "(and boots): the caller must find it by its tags instead of creating a second one",
    Scenario.CAPACITY_SHORTAGE: "create raises capacity_shortage (retryable) and creates nothing; offers "
    "list the matching zone x type as unavailable while the rule lasts",
    Scenario.BOOT_NEVER_FINISHES: "the machine stays `starting` for ever",
    Scenario.WORKER_NEVER_REGISTERS: "the machine reaches `running` but no runner process starts on it",
    Scenario.IP_REUSE: "the machine gets the public IP most recently released by a dead machine",
    Scenario.DELETED_BEHIND_BACK: "once `running`, the machine vanishes (get answers None, its IP is "
    "released) without any call from IKOMA",
    Scenario.TERMINATE_FAILS: "terminate raises provider_unavailable (503, retryable) and changes "
    "nothing; `terminate_fails:N` = the next N terminate calls",
    Scenario.PROVIDER_5XX: "the call raises provider_unavailable (503, retryable) and changes nothing",
    Scenario.LATENCY: "`latency:<seconds>`: the call answers that many seconds late (after it took effect)",
}

# scenarios that mark the machine being created (kept on it as flags)
MACHINE_FLAGS = frozenset(
    {Scenario.BOOT_NEVER_FINISHES, Scenario.WORKER_NEVER_REGISTERS, Scenario.DELETED_BEHIND_BACK}
)
MAX_LATENCY_SECONDS = 600.0


class ScenarioError(ValueError):
    """A rule that cannot be understood: the message says which part and why."""


@dataclass
class Rule:
    scenario: Scenario
    zone: str | None = None
    instance_type: str | None = None
    calls: int | None = None  # times it still applies; None: until cleared
    seconds: float | None = None  # latency only
    id: int | None = None  # the store's id, once stored

    def applies_to(self, zone: str | None, instance_type: str | None) -> bool:
        """A call with no zone (offers, list) only matches rules that name no zone nor type."""
        if zone is None and (self.zone is not None or self.instance_type is not None):
            return False
        return (self.zone is None or self.zone == zone) and (
            self.instance_type is None or instance_type is None or self.instance_type == instance_type
        )

    @property
    def text(self) -> str:
        """The rule as `parse_rule` reads it (without its zone/type/calls)."""
        if self.scenario is Scenario.LATENCY:
            return f"latency:{self.seconds:g}"
        if self.scenario is Scenario.TERMINATE_FAILS and self.calls is not None:
            return f"terminate_fails:{self.calls}"
        return self.scenario.value


def parse_rule(
    text: str, *, zone: str | None = None, instance_type: str | None = None, calls: int | None = None
) -> Rule:
    """`name` or `name:argument` (latency:<seconds>, terminate_fails:<N>) as a rule."""
    name, _, argument = text.strip().partition(":")
    try:
        scenario = Scenario(name)
    except ValueError:
        known = ", ".join(s.value for s in Scenario)
        raise ScenarioError(f"unknown scenario {name!r}; known: {known}") from None
    if calls is not None and calls < 1:
        raise ScenarioError(f"calls must be 1 or more, got {calls}")
    seconds: float | None = None
    if scenario is Scenario.LATENCY:
        try:
            seconds = float(argument)
        except ValueError:
            raise ScenarioError(f"latency needs seconds (latency:<seconds>), got {argument!r}") from None
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_LATENCY_SECONDS:
            raise ScenarioError(f"latency must be 0 to {MAX_LATENCY_SECONDS:g} seconds, got {argument!r}")
    elif scenario is Scenario.TERMINATE_FAILS and argument:
        if not argument.isdigit() or int(argument) < 1:
            raise ScenarioError(f"terminate_fails:N needs a count of 1 or more, got {argument!r}")
        if calls is not None and calls != int(argument):
            raise ScenarioError("terminate_fails:N and calls say different counts")
        calls = int(argument)
    elif argument:
        raise ScenarioError(f"{scenario.value} takes no argument, got {argument!r}")
    return Rule(scenario, zone=zone, instance_type=instance_type, calls=calls, seconds=seconds)


def take(rules: list[Rule], scenario: Scenario, zone: str | None, instance_type: str | None) -> Rule | None:
    """The first rule of `scenario` matching the call, counted as used (removed once used up)."""
    for rule in rules:
        if rule.scenario is scenario and rule.applies_to(zone, instance_type):
            if rule.calls is not None:
                rule.calls -= 1
                if rule.calls <= 0:
                    rules.remove(rule)
            return rule
    return None


def active(rules: Iterable[Rule], scenario: Scenario, zone: str | None, instance_type: str | None) -> bool:
    """Whether a rule of `scenario` matches, without using it up (offers' availability)."""
    return any(r.scenario is scenario and r.applies_to(zone, instance_type) for r in rules)
