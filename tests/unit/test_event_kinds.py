"""Which event kind a change is (domain/event_kinds.py), and the kind names the log accepts."""

from __future__ import annotations

import pytest

from ikoma.domain.event_kinds import KINDS, ORDER_KINDS, order_kind, state_changes
from ikoma.domain.lifecycle import TRANSITIONS, OrderStatus, Reason
from ikoma.domain.machine_state import MachineState
from ikoma.services.events import camel, topic_of

S = OrderStatus


@pytest.mark.parametrize(
    ("to_status", "reason", "kind"),
    [
        (S.QUEUED, Reason.CREATED, "order.created"),
        (S.CLAIMED, Reason.CLAIMED, "order.claimed"),
        (S.RUNNING, Reason.STARTED, "order.started"),
        (S.SUCCEEDED, Reason.COMPLETED, "order.succeeded"),
        (S.SUCCEEDED, Reason.LATE_COMPLETION, "order.succeeded"),
        (S.FAILED, Reason.COMPLETED, "order.failed"),
        (S.CANCELLED, Reason.CANCELLED_BY_USER, "order.cancelled"),
        (S.CANCELLED, Reason.CANCEL_HONOURED, "order.cancelled"),
        (S.RUNNING, "cancel_requested", "order.cancel_requested"),
        (S.TIMEOUT, Reason.TIMED_OUT, "order.timeout"),
        (S.STALE, Reason.HEARTBEAT_LOST, "order.stale"),
        (S.QUEUED, Reason.RETRY, "order.requeued"),
        (S.QUEUED, Reason.LEASE_EXPIRED, "order.requeued"),
        (S.QUEUED, Reason.RUNNER_REVOKED, "order.requeued"),
    ],
)
def test_an_order_transition_is_named_by_the_status_it_reaches_or_its_reason(
    to_status: OrderStatus, reason: str, kind: str
) -> None:
    assert order_kind(to_status, reason) == kind
    assert order_kind(to_status.value, str(reason)) == kind  # as stored: plain strings


def test_every_lifecycle_edge_has_a_listed_kind() -> None:
    for _, target in TRANSITIONS:
        assert order_kind(target, "some_reason") in ORDER_KINDS


def test_every_listed_kind_is_a_topic_and_a_name_within_the_columns() -> None:
    assert len(set(KINDS)) == len(KINDS)
    for kind in KINDS:
        assert topic_of(kind) == kind.split(".")[0]


@pytest.mark.parametrize("bad", ["order", ".created", "order.", "x" * 40 + ".y", "a." + "b" * 70])
def test_a_malformed_kind_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event kind"):
        topic_of(bad)


def test_reboot_required_only_when_it_becomes_required() -> None:
    calm = MachineState()
    reboot = MachineState(apt_reboot_required=True)
    assert state_changes(calm, reboot) == [("state.reboot_required", {})]
    assert state_changes(reboot, reboot) == []
    assert state_changes(reboot, calm) == []


def test_updates_found_only_when_more_updates_are_pending() -> None:
    none, some, more_security = (
        MachineState(),
        MachineState(apt_updates=5, apt_security=1),
        MachineState(apt_updates=5, apt_security=2),
    )
    assert state_changes(none, some) == [
        (
            "state.updates_found",
            {"updates": 5, "security": 1, "previousUpdates": 0, "previousSecurity": 0},
        )
    ]
    assert state_changes(some, some) == []
    assert state_changes(some, none) == []  # an upgrade ran: fewer pending is no news
    assert [kind for kind, _ in state_changes(some, more_security)] == ["state.updates_found"]


def test_data_field_names_are_spelled_as_the_api_spells_them() -> None:
    assert camel("os_family") == "osFamily"
    assert camel("requeued_order_ids") == "requeuedOrderIds"
    assert camel("labels") == "labels"
