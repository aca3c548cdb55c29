"""domain/instances.py: the instance state machine and what each loop decides from (row, provider, clock)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.instances import (
    EDGES,
    CreatePlan,
    Known,
    Owned,
    Seen,
    State,
    Timeouts,
    after_create_error,
    can_archive,
    can_move,
    check_move,
    health,
    orphans,
    provisioning,
    terminator,
)
from ikoma.providers.base import PowerState

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TIMEOUTS = Timeouts(boot=900, heartbeat=180)
S = State

# the documented edges (docs/providers.md "Instances"), written out: the table must not drift from them
DOCUMENTED = {
    (S.PROVISIONING, S.BOOTING),
    (S.PROVISIONING, S.FAILED),
    (S.PROVISIONING, S.TERMINATING),
    (S.BOOTING, S.READY),
    (S.BOOTING, S.FAILED),
    (S.BOOTING, S.TERMINATING),
    (S.BOOTING, S.TERMINATED),
    (S.READY, S.UNREACHABLE),
    (S.READY, S.TERMINATING),
    (S.READY, S.TERMINATED),
    (S.UNREACHABLE, S.READY),
    (S.UNREACHABLE, S.TERMINATING),
    (S.UNREACHABLE, S.TERMINATED),
    (S.FAILED, S.TERMINATING),
    (S.FAILED, S.TERMINATED),
    (S.ORPHANED, S.TERMINATING),
    (S.ORPHANED, S.TERMINATED),
    (S.TERMINATING, S.TERMINATED),
    (S.TERMINATED, S.ORPHANED),
}


@pytest.mark.parametrize(("current", "to"), list(itertools.product(State, State)))
def test_every_pair_of_states_is_allowed_exactly_when_documented(current: State, to: State) -> None:
    assert can_move(current, to) is ((current, to) in DOCUMENTED)
    if (current, to) in DOCUMENTED:
        check_move(current, to)
    else:
        with pytest.raises(Conflict) as refused:
            check_move(current, to)
        assert refused.value.reason == "invalid_instance_transition"


def test_every_state_has_an_entry_and_terminated_is_left_only_for_orphaned() -> None:
    assert set(EDGES) == set(State)
    assert EDGES[S.TERMINATED] == {S.ORPHANED}
    assert all(S.PROVISIONING not in targets for targets in EDGES.values())


def test_only_terminated_instances_can_be_archived() -> None:
    assert [s for s in State if can_archive(s)] == [S.TERMINATED]


def seen(state: State = S.BOOTING, **changes: object) -> Seen:
    values: dict[str, object] = {
        "state": state,
        "since": NOW - timedelta(seconds=60),
        "provider_state": PowerState.RUNNING,
        "missing_checks": 0,
        "runner_registered": False,
        "answers_own_id": False,
        "last_heartbeat": None,
    }
    values.update(changes)
    return Seen(**values)  # type: ignore[arg-type]


def test_booting_becomes_ready_only_with_its_own_runner_heartbeating() -> None:
    fresh = NOW - timedelta(seconds=5)
    ready = health(seen(runner_registered=True, answers_own_id=True, last_heartbeat=fresh), NOW, TIMEOUTS)
    assert (ready.to, ready.reason) == (S.READY, "runner_registered")
    for partial in (
        seen(runner_registered=True, answers_own_id=False, last_heartbeat=fresh),  # another machine's runner
        seen(runner_registered=False, answers_own_id=False, last_heartbeat=fresh),
        seen(runner_registered=True, answers_own_id=True, last_heartbeat=None),
        seen(runner_registered=True, answers_own_id=True, last_heartbeat=NOW - timedelta(seconds=181)),
    ):
        assert health(partial, NOW, TIMEOUTS).to is None


def test_booting_past_the_boot_timeout_fails_and_asks_for_termination() -> None:
    just_in_time = health(seen(since=NOW - timedelta(seconds=900)), NOW, TIMEOUTS)
    assert just_in_time.to is None
    late = health(seen(since=NOW - timedelta(seconds=901)), NOW, TIMEOUTS)
    assert (late.to, late.reason, late.terminate) == (S.FAILED, "boot_timeout", True)


def test_a_provider_error_while_booting_fails_and_terminates() -> None:
    move = health(seen(provider_state=PowerState.ERROR), NOW, TIMEOUTS)
    assert (move.to, move.reason, move.terminate) == (S.FAILED, "provider_error", True)


def test_ready_without_heartbeat_becomes_unreachable_not_terminated() -> None:
    stale = seen(
        S.READY, runner_registered=True, answers_own_id=True, last_heartbeat=NOW - timedelta(minutes=4)
    )
    move = health(stale, NOW, TIMEOUTS)
    assert (move.to, move.reason, move.terminate) == (S.UNREACHABLE, "heartbeat_missed", False)
    fresh = seen(S.READY, runner_registered=True, answers_own_id=True, last_heartbeat=NOW)
    assert health(fresh, NOW, TIMEOUTS).to is None


def test_unreachable_comes_back_to_ready_when_its_runner_heartbeats_again() -> None:
    back = seen(S.UNREACHABLE, runner_registered=True, answers_own_id=True, last_heartbeat=NOW)
    assert health(back, NOW, TIMEOUTS).to is S.READY
    still = seen(
        S.UNREACHABLE, runner_registered=True, answers_own_id=True, last_heartbeat=NOW - timedelta(hours=1)
    )
    assert health(still, NOW, TIMEOUTS).to is None


@pytest.mark.parametrize("state", [S.BOOTING, S.READY, S.UNREACHABLE, S.ORPHANED])
@pytest.mark.parametrize("answer", [None, PowerState.TERMINATED])
def test_a_machine_the_provider_lost_is_terminated_after_two_not_founds_in_a_row(
    state: State, answer: PowerState | None
) -> None:
    first = health(seen(state, provider_state=answer), NOW, TIMEOUTS)
    assert (first.to, first.missing_checks) == (None, 1)
    second = health(seen(state, provider_state=answer, missing_checks=1), NOW, TIMEOUTS)
    assert (second.to, second.reason, second.missing_checks) == (S.TERMINATED, "provider_lost", 2)


def test_a_machine_found_again_resets_the_not_found_count() -> None:
    assert health(seen(S.READY, missing_checks=1, last_heartbeat=NOW), NOW, TIMEOUTS).missing_checks == 0


def test_an_orphan_the_provider_still_runs_stays_orphaned() -> None:
    assert health(seen(S.ORPHANED), NOW, TIMEOUTS).to is None


def test_provisioning_adopts_a_tagged_machine_before_anything_else() -> None:
    assert provisioning(tagged_machine_found=True, attempts=5, max_attempts=3) is CreatePlan.ADOPT
    assert provisioning(tagged_machine_found=False, attempts=0, max_attempts=3) is CreatePlan.CREATE
    assert provisioning(tagged_machine_found=False, attempts=2, max_attempts=3) is CreatePlan.CREATE
    assert provisioning(tagged_machine_found=False, attempts=3, max_attempts=3) is CreatePlan.GIVE_UP


def test_a_refused_create_is_retried_while_it_may_pass_and_attempts_remain() -> None:
    assert after_create_error(retryable=True, attempts=1, max_attempts=3).to is None
    assert after_create_error(retryable=True, attempts=3, max_attempts=3).to is S.FAILED
    assert after_create_error(retryable=False, attempts=1, max_attempts=3).to is S.FAILED


def test_the_terminator_needs_two_gone_answers_in_a_row() -> None:
    assert terminator(gone=True, gone_checks=0) == (1, False)
    assert terminator(gone=True, gone_checks=1) == (2, True)
    assert terminator(gone=False, gone_checks=1) == (0, False)  # seen again: start over


def test_orphans_are_live_machines_no_live_instance_owns() -> None:
    machines = [
        Owned("known", "i-1", PowerState.RUNNING),
        Owned("unknown", None, PowerState.RUNNING),
        Owned("stray-second", "i-1", PowerState.RUNNING),  # a second machine for a known instance
        Owned("after-termination", "i-2", PowerState.RUNNING),
        Owned("being-adopted", "i-3", PowerState.STARTING),
        Owned("going", None, PowerState.TERMINATING),
        Owned("gone", None, PowerState.TERMINATED),
    ]
    known = [
        Known("i-1", S.READY, "known"),
        Known("i-2", S.TERMINATED, "after-termination"),
        Known("i-3", S.PROVISIONING, None),
    ]
    assert [m.provider_id for m in orphans(machines, known)] == [
        "unknown",
        "stray-second",
        "after-termination",
    ]
