"""Which event kind a change is: order transitions and machine-state changes, as pure functions.

The list of kinds is the contract of `GET /v1/events`, the SSE stream and webhooks (docs/api.md).
"""

from __future__ import annotations

from typing import Any

from ikoma.domain.lifecycle import OrderStatus, Reason
from ikoma.domain.machine_state import MachineState

ORDER_KINDS = (
    "order.created",
    "order.claimed",
    "order.started",
    "order.succeeded",
    "order.failed",
    "order.cancelled",
    "order.cancel_requested",
    "order.timeout",
    "order.stale",
    "order.requeued",
)
INSTANCE_KINDS = tuple(
    f"instance.{state}"
    for state in (
        "provisioning",
        "booting",
        "ready",
        "unreachable",
        "terminating",
        "terminated",
        "failed",
        "orphaned",
    )
)
# every kind the log stores (webhooks add their own `webhook.*`); `stream.lagging` is SSE only
KINDS = (
    *ORDER_KINDS,
    "runner.registered",
    "runner.online",
    "runner.offline",
    "runner.revoked",
    "runner.token_rotated",
    "runner.deleted",
    "server.created",
    "server.changed",
    "server.attached",
    "server.deleted",
    "message.created",
    "message.acknowledged",
    "state.reboot_required",
    "state.updates_found",
    "report.stored",
    "artifact.stored",
    "tool.called",
    "tool.refused",
    "api_client.created",
    "api_client.revoked",
    "user.created",
    "user.updated",
    "user.disabled",
    "user.deleted",
    # issue 16: a catalog sync's counts; a provider call that failed (its stable reason)
    "catalog.synced",
    "provider.error",
    # issue 16: every instance transition is `instance.<state it reaches>` (services/instances.py)
    *INSTANCE_KINDS,
)

CANCEL_REQUESTED = "cancel_requested"  # the order event reason of a cancel asked of a RUNNING order
_BY_STATUS = {
    OrderStatus.CLAIMED: "order.claimed",
    OrderStatus.RUNNING: "order.started",
    OrderStatus.SUCCEEDED: "order.succeeded",
    OrderStatus.FAILED: "order.failed",
    OrderStatus.CANCELLED: "order.cancelled",
    OrderStatus.TIMEOUT: "order.timeout",
    OrderStatus.STALE: "order.stale",
}


def order_kind(to_status: OrderStatus | str, reason: str) -> str:
    """The kind of an order transition: by the status it reaches, and `created` / `cancel_requested` /
    `requeued` (back to QUEUED: a retry, an expired lease, a revoked runner) by its reason."""
    if reason == Reason.CREATED:
        return "order.created"
    if reason == CANCEL_REQUESTED:
        return "order.cancel_requested"
    status = OrderStatus(to_status)
    if status is OrderStatus.QUEUED:
        return "order.requeued"
    return _BY_STATUS[status]


def state_changes(before: MachineState, after: MachineState) -> list[tuple[str, dict[str, Any]]]:
    """(kind, data) of the state changes the log records, only when they change.

    `state.reboot_required`: a reboot became required. `state.updates_found`: more updates (or more
    security updates) are pending than before; fewer (an upgrade ran) or as many is no news.
    """
    found: list[tuple[str, dict[str, Any]]] = []
    if after.apt_reboot_required and not before.apt_reboot_required:
        found.append(("state.reboot_required", {}))
    if after.apt_updates > before.apt_updates or after.apt_security > before.apt_security:
        found.append(
            (
                "state.updates_found",
                {
                    "updates": after.apt_updates,
                    "security": after.apt_security,
                    "previousUpdates": before.apt_updates,
                    "previousSecurity": before.apt_security,
                },
            )
        )
    return found
