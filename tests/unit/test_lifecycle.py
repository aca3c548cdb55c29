"""The order lifecycle as a pure state machine: edges, terminal states, retries, lost runs, 409 reasons."""

from __future__ import annotations

import itertools

import pytest

from ikoma.domain.errors import Conflict
from ikoma.domain.lifecycle import (
    ACTIVE,
    COMPLETE_FROM,
    HEARTBEAT_FROM,
    START_FROM,
    TERMINAL,
    TRANSITIONS,
    OrderStatus,
    OrderView,
    RetryPolicy,
    can_transition,
    check_transition,
    decide_lost_run,
    diagnose_runner_refusal,
    should_retry,
)

S = OrderStatus
ORDER_ID = "3f0c5d0e-8a51-4d59-b0a4-6c1f1f6f9a10"
RUNNER_A = "9b2d7c1a-1111-4e0b-8d55-2a7e3c4b5d60"
RUNNER_B = "9b2d7c1a-2222-4e0b-8d55-2a7e3c4b5d60"
LEASE_1 = "5a9e0c6f-0001-4f3c-9d8e-7b6a5c4d3e2f"
LEASE_2 = "5a9e0c6f-0002-4f3c-9d8e-7b6a5c4d3e2f"

REFUSED = sorted(
    (pair for pair in itertools.product(OrderStatus, repeat=2) if pair not in TRANSITIONS),
    key=lambda p: (p[0].value, p[1].value),
)


def _name(pair: tuple[OrderStatus, OrderStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


# --- transitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("edge", sorted(TRANSITIONS, key=lambda p: (p[0].value, p[1].value)), ids=_name)
def test_every_lifecycle_edge_is_allowed(edge: tuple[OrderStatus, OrderStatus]) -> None:
    current, target = edge
    assert can_transition(current, target)
    check_transition(current, target, order_id=ORDER_ID)  # does not raise


@pytest.mark.parametrize("pair", REFUSED, ids=_name)
def test_every_pair_outside_the_lifecycle_is_refused_with_invalid_status(
    pair: tuple[OrderStatus, OrderStatus],
) -> None:
    current, target = pair
    assert not can_transition(current, target)
    with pytest.raises(Conflict) as refused:
        check_transition(current, target, order_id=ORDER_ID)
    assert refused.value.status_code == 409
    assert refused.value.reason == "invalid_status"
    assert refused.value.details == {"orderId": ORDER_ID, "status": current.value, "target": target.value}


def test_refused_and_allowed_pairs_cover_every_status_pair_exactly_once() -> None:
    assert len(TRANSITIONS) + len(REFUSED) == len(OrderStatus) ** 2


def test_no_status_transitions_to_itself() -> None:
    assert all(current != target for current, target in TRANSITIONS)


def test_terminal_statuses_are_succeeded_failed_cancelled_timeout_and_stale() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.STALE} == TERMINAL
    assert [s for s in OrderStatus if s.is_terminal] == [s for s in OrderStatus if s in TERMINAL]
    assert not any(s.is_terminal for s in (S.QUEUED, S.CLAIMED, S.RUNNING))


def test_active_statuses_are_the_ones_holding_a_lease() -> None:
    assert {S.CLAIMED, S.RUNNING} == ACTIVE
    assert not ACTIVE & TERMINAL


def test_only_failed_and_stale_leave_a_terminal_status_for_a_retry_or_a_late_report() -> None:
    leaving_terminal = {(a, b) for a, b in TRANSITIONS if a in TERMINAL}
    assert leaving_terminal == {
        (S.FAILED, S.QUEUED),
        (S.STALE, S.QUEUED),
        (S.STALE, S.SUCCEEDED),  # late completion of a runner whose lease is still current
        (S.STALE, S.FAILED),
    }


def test_runner_calls_need_the_documented_statuses() -> None:
    assert frozenset({S.CLAIMED}) == START_FROM
    assert frozenset({S.CLAIMED, S.RUNNING}) == HEARTBEAT_FROM
    assert frozenset({S.RUNNING}) == COMPLETE_FROM


# --- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [S.FAILED, S.STALE])
@pytest.mark.parametrize(("executions", "max_attempts"), [(1, 2), (1, 3), (2, 3), (19, 20)])
def test_failed_and_stale_runs_are_retried_while_executions_remain(
    outcome: OrderStatus, executions: int, max_attempts: int
) -> None:
    assert should_retry(
        outcome=outcome, executions=executions, max_attempts=max_attempts, cancel_requested=False
    )


@pytest.mark.parametrize("outcome", [S.FAILED, S.STALE])
@pytest.mark.parametrize(("executions", "max_attempts"), [(1, 1), (2, 2), (3, 3), (4, 3)])
def test_failed_and_stale_runs_are_not_retried_once_attempts_are_spent(
    outcome: OrderStatus, executions: int, max_attempts: int
) -> None:
    assert not should_retry(
        outcome=outcome, executions=executions, max_attempts=max_attempts, cancel_requested=False
    )


@pytest.mark.parametrize("outcome", [S.TIMEOUT, S.CANCELLED, S.SUCCEEDED])
def test_timeout_cancelled_and_succeeded_runs_are_never_retried(outcome: OrderStatus) -> None:
    assert not should_retry(outcome=outcome, executions=1, max_attempts=20, cancel_requested=False)


@pytest.mark.parametrize("outcome", [S.FAILED, S.STALE])
def test_a_requested_cancel_is_never_retried(outcome: OrderStatus) -> None:
    assert not should_retry(outcome=outcome, executions=1, max_attempts=20, cancel_requested=True)


@pytest.mark.parametrize("outcome", [S.FAILED, S.STALE])
def test_single_attempt_playbook_never_runs_twice(outcome: OrderStatus) -> None:
    assert not should_retry(outcome=outcome, executions=1, max_attempts=1, cancel_requested=False)


def test_lost_run_with_attempts_left_goes_stale_then_back_to_the_queue() -> None:
    assert decide_lost_run(cancel_requested=False, executions=1, max_attempts=3) == [S.STALE, S.QUEUED]


def test_lost_run_with_attempts_spent_ends_stale() -> None:
    assert decide_lost_run(cancel_requested=False, executions=3, max_attempts=3) == [S.STALE]
    assert decide_lost_run(cancel_requested=False, executions=1, max_attempts=1) == [S.STALE]


def test_lost_run_with_a_requested_cancel_ends_cancelled_even_with_attempts_left() -> None:
    assert decide_lost_run(cancel_requested=True, executions=1, max_attempts=5) == [S.CANCELLED]


def test_every_lost_run_path_follows_lifecycle_edges() -> None:
    for cancel, executions, max_attempts in itertools.product([False, True], [1, 2, 3], [1, 2, 3]):
        path = [
            S.RUNNING,
            *decide_lost_run(cancel_requested=cancel, executions=executions, max_attempts=max_attempts),
        ]
        for current, target in itertools.pairwise(path):
            check_transition(current, target)


# --- backoff -------------------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_delay() -> None:
    policy = RetryPolicy(base_seconds=2.0, cap_seconds=300.0)
    assert [policy.delay_after(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(base_seconds=2.0, cap_seconds=300.0)
    assert policy.delay_after(8) == 256.0
    assert policy.delay_after(9) == 300.0
    assert policy.delay_after(20) == 300.0


def test_backoff_follows_a_custom_base_and_cap() -> None:
    policy = RetryPolicy(base_seconds=0.5, cap_seconds=3.0)
    assert [policy.delay_after(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_delay_before_any_execution_failed() -> None:
    assert RetryPolicy().delay_after(0) == 0.0
    assert RetryPolicy().delay_after(-1) == 0.0


def test_default_backoff_starts_at_two_seconds_and_caps_at_five_minutes() -> None:
    assert RetryPolicy().delay_after(1) == 2.0
    assert RetryPolicy().delay_after(20) == 300.0


# --- 409 reasons for runner calls ------------------------------------------------------------------


def _view(
    status: OrderStatus = S.RUNNING, runner_id: str | None = RUNNER_A, lease: str | None = LEASE_1
) -> OrderView:
    return OrderView(id=ORDER_ID, status=status, runner_id=runner_id, lease_token=lease)


def _diagnose(
    order: OrderView | None, *, runner_id: str = RUNNER_A, lease_token: str | None = LEASE_1
) -> Conflict:
    return diagnose_runner_refusal(
        order, runner_id=runner_id, lease_token=lease_token, expected=COMPLETE_FROM, order_id=ORDER_ID
    )


def test_missing_order_is_order_not_found_whatever_else_is_presented() -> None:
    refusal = _diagnose(None, runner_id=RUNNER_B, lease_token=LEASE_2)
    assert refusal.reason == "order_not_found"
    assert refusal.status_code == 409
    assert refusal.details == {"orderId": ORDER_ID}


def test_old_lease_token_is_stale_lease_even_when_another_runner_holds_the_order() -> None:
    refusal = _diagnose(_view(runner_id=RUNNER_B, lease=LEASE_2), runner_id=RUNNER_A, lease_token=LEASE_1)
    assert refusal.reason == "stale_lease"
    assert refusal.details == {"orderId": ORDER_ID, "status": "RUNNING"}


def test_lease_token_of_a_requeued_order_is_stale_lease() -> None:
    assert _diagnose(_view(status=S.QUEUED, lease=None), lease_token=LEASE_1).reason == "stale_lease"


def test_wrong_lease_token_beats_a_wrong_status() -> None:
    assert _diagnose(_view(status=S.SUCCEEDED, lease=LEASE_2), lease_token=LEASE_1).reason == "stale_lease"


def test_another_runners_order_without_a_lease_token_is_wrong_runner() -> None:
    refusal = _diagnose(_view(runner_id=RUNNER_B), runner_id=RUNNER_A, lease_token=None)
    assert refusal.reason == "wrong_runner"


def test_another_runners_order_with_its_current_lease_token_is_wrong_runner() -> None:
    assert _diagnose(_view(runner_id=RUNNER_B, lease=LEASE_1), lease_token=LEASE_1).reason == "wrong_runner"


def test_own_order_in_the_wrong_status_is_invalid_status() -> None:
    refusal = diagnose_runner_refusal(
        _view(status=S.CLAIMED),
        runner_id=RUNNER_A,
        lease_token=LEASE_1,
        expected=COMPLETE_FROM,
        order_id=ORDER_ID,
    )
    assert refusal.reason == "invalid_status"
    assert refusal.details == {"orderId": ORDER_ID, "status": "CLAIMED"}
    assert "RUNNING" in refusal.message


def test_invalid_status_names_every_status_the_call_accepts() -> None:
    refusal = diagnose_runner_refusal(
        _view(status=S.QUEUED, lease=None),
        runner_id=RUNNER_A,
        lease_token=None,
        expected=HEARTBEAT_FROM,
        order_id=ORDER_ID,
    )
    assert refusal.reason == "invalid_status"
    assert "CLAIMED or RUNNING" in refusal.message
