"""The order lifecycle as a pure state machine.

QUEUED → CLAIMED → RUNNING → SUCCEEDED | FAILED, plus CANCELLED, TIMEOUT and STALE. Storage applies a
transition only after `check_transition` allows it, and always as a compare-and-set on the status it
read, so two writers can never both apply a transition from the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ikoma.domain.errors import Conflict


class OrderStatus(StrEnum):
    QUEUED = "QUEUED"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    STALE = "STALE"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {OrderStatus.SUCCEEDED, OrderStatus.FAILED, OrderStatus.CANCELLED, OrderStatus.TIMEOUT, OrderStatus.STALE}
)
ACTIVE = frozenset({OrderStatus.CLAIMED, OrderStatus.RUNNING})

# What each runner call needs the order to be in.
START_FROM = frozenset({OrderStatus.CLAIMED})
HEARTBEAT_FROM = ACTIVE
COMPLETE_FROM = frozenset({OrderStatus.RUNNING})
LATE_COMPLETE_FROM = frozenset({OrderStatus.STALE})
LOGS_FROM = ACTIVE


class Reason(StrEnum):
    """Why a transition happened; stored on every order event."""

    CREATED = "created"
    CLAIMED = "claimed"
    STARTED = "started"
    COMPLETED = "completed"
    CANCELLED_BY_USER = "cancelled_by_user"
    LEASE_EXPIRED = "lease_expired"
    HEARTBEAT_LOST = "heartbeat_lost"
    TIMED_OUT = "timed_out"
    RETRY = "retry"
    LATE_COMPLETION = "late_completion"
    CANCEL_HONOURED = "cancel_honoured"
    RUNNER_REVOKED = "runner_revoked"  # an admin revoked the runner holding the order


# Every allowed edge. Anything else is refused with 409 invalid_status.
TRANSITIONS: frozenset[tuple[OrderStatus, OrderStatus]] = frozenset(
    {
        (OrderStatus.QUEUED, OrderStatus.CLAIMED),
        (OrderStatus.QUEUED, OrderStatus.CANCELLED),
        (OrderStatus.CLAIMED, OrderStatus.RUNNING),
        (OrderStatus.CLAIMED, OrderStatus.QUEUED),  # lease expired before start: nothing ran, requeue
        (OrderStatus.CLAIMED, OrderStatus.CANCELLED),
        (OrderStatus.RUNNING, OrderStatus.SUCCEEDED),
        (OrderStatus.RUNNING, OrderStatus.FAILED),
        (OrderStatus.RUNNING, OrderStatus.CANCELLED),
        (OrderStatus.RUNNING, OrderStatus.TIMEOUT),
        (OrderStatus.RUNNING, OrderStatus.STALE),
        # Retries: a failed or lost execution goes back to the queue while attempts remain.
        (OrderStatus.FAILED, OrderStatus.QUEUED),
        (OrderStatus.STALE, OrderStatus.QUEUED),
        # A runner that finished while it could not reach the API delivers its report late; accepted
        # once, and only while its lease is still the order's current one (nobody else claimed it).
        (OrderStatus.STALE, OrderStatus.SUCCEEDED),
        (OrderStatus.STALE, OrderStatus.FAILED),
        # The same, once the lost run was requeued for a retry that nobody claimed yet: the retry was
        # only scheduled because the API could not hear the runner; its success stands instead.
        (OrderStatus.QUEUED, OrderStatus.SUCCEEDED),
    }
)


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return (current, target) in TRANSITIONS


def check_transition(current: OrderStatus, target: OrderStatus, *, order_id: str | None = None) -> None:
    """Raise 409 invalid_status unless `current → target` is an edge of the lifecycle."""
    if not can_transition(current, target):
        raise Conflict(
            f"order is {current.value}; it cannot become {target.value}",
            reason="invalid_status",
            orderId=order_id,
            status=current.value,
            target=target.value,
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff between automatic retries: base·2^(n-1), capped."""

    base_seconds: float = 2.0
    cap_seconds: float = 300.0

    def delay_after(self, executions: int) -> float:
        """Seconds to wait before the next attempt, after `executions` executions have failed."""
        if executions < 1:
            return 0.0
        # 2**63 is past any cap; bounding the exponent keeps huge attempt counts from overflowing
        return float(min(self.cap_seconds, self.base_seconds * 2.0 ** min(executions - 1, 63)))


def should_retry(*, outcome: OrderStatus, executions: int, max_attempts: int, cancel_requested: bool) -> bool:
    """Whether a finished execution goes back to the queue.

    Only FAILED and STALE (runner lost) are retried: TIMEOUT would time out again and CANCELLED is what
    the user asked for. `executions` counts the attempts that reached RUNNING, so a claim that expired
    before start never uses up an attempt of a non-idempotent playbook (max_attempts=1 runs at most once).
    """
    if cancel_requested or outcome not in (OrderStatus.FAILED, OrderStatus.STALE):
        return False
    return executions < max_attempts


def decide_lost_run(*, cancel_requested: bool, executions: int, max_attempts: int) -> list[OrderStatus]:
    """The statuses a RUNNING order passes through when its runner stopped heartbeating.

    A cancel that was requested ends it CANCELLED (the user's wish stands, nothing is re-run); otherwise
    it is STALE, and back to QUEUED while attempts remain.
    """
    if cancel_requested:
        return [OrderStatus.CANCELLED]
    if should_retry(
        outcome=OrderStatus.STALE, executions=executions, max_attempts=max_attempts, cancel_requested=False
    ):
        return [OrderStatus.STALE, OrderStatus.QUEUED]
    return [OrderStatus.STALE]


@dataclass(frozen=True, slots=True)
class OrderView:
    """What runner-route checks need to know of an order."""

    id: str
    status: OrderStatus
    runner_id: str | None
    lease_token: str | None


def diagnose_runner_refusal(
    order: OrderView | None,
    *,
    runner_id: str,
    lease_token: str | None,
    expected: frozenset[OrderStatus],
    order_id: str,
) -> Conflict:
    """Explain why a runner's start/heartbeat/complete did not apply (the 409 reasons of seed 000).

    The fencing check comes first: a runner that presents the token of an earlier attempt is a zombie
    and must learn that its lease is gone, even though another runner now holds the order.
    """
    if order is None:
        return Conflict("no order with this id", reason="order_not_found", orderId=order_id)
    if lease_token is not None and lease_token != order.lease_token:
        return Conflict(
            "this lease is no longer the order's current lease",
            reason="stale_lease",
            orderId=order_id,
            status=order.status.value,
        )
    if order.runner_id != runner_id:
        return Conflict("order belongs to another runner", reason="wrong_runner", orderId=order_id)
    if lease_token is None and order.status in expected:
        # the tokenless guard refused it: this runner held an earlier attempt of the order
        return Conflict(
            "this runner held an earlier attempt of the order: send the claim's lease token",
            reason="lease_token_required",
            orderId=order_id,
            status=order.status.value,
        )
    wanted = " or ".join(sorted(s.value for s in expected))
    return Conflict(
        f"order is {order.status.value}; this call needs {wanted}",
        reason="invalid_status",
        orderId=order_id,
        status=order.status.value,
    )
