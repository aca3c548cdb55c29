"""The fleet summary: which servers need attention, and why, most pressing first."""

from __future__ import annotations

from typing import Any

from ikoma.services import messages
from ikoma.services.state import list_states
from ikoma.storage.database import Database

_RANK = {"error": 0, "warning": 1, "unknown": 2, "ok": 3}


def attention(view: dict[str, Any], new_messages: int) -> list[str]:
    """Reasons, most pressing first; empty when the server needs nothing."""
    reasons = []
    if view["runner_id"] is None:
        reasons.append("no runner attached")
    elif not view["online"]:
        reasons.append("runner offline")
    if view["last_error_order_id"]:
        reasons.append(f"{view['last_error_playbook']} failed")
    if view["docker_status"] in ("down", "error"):
        reasons.append(f"docker {view['docker_status']}")
    if view["disk_warnings"]:
        reasons.append(f"{view['disk_warnings']} disk warning(s)")
    if view["apt_reboot_required"]:
        reasons.append("reboot required")
    if view["apt_security"]:
        reasons.append(f"{view['apt_security']} security update(s)")
    if view["docker_unhealthy"]:
        reasons.append(f"{view['docker_unhealthy']} unhealthy container(s)")
    if view["hardware_warnings"]:
        reasons.append(f"{view['hardware_warnings']} hardware warning(s)")
    if new_messages:
        reasons.append(f"{new_messages} new important message(s)")
    return reasons


async def summary(db: Database, *, server_ids: frozenset[str] | None, stale_after: float) -> dict[str, Any]:
    """Counts over the visible servers, and one row per server, those needing attention first."""
    views = await list_states(db, server_ids=server_ids, stale_after=stale_after)
    async with db.read() as tx:
        fresh = await messages.count_new(tx, [v["server_id"] for v in views]) if views else {}
    items: list[dict[str, Any]] = []
    for view in views:
        new = fresh.get(view["server_id"], 0)
        items.append({"view": view, "new": new, "attention": attention(view, new)})
    items.sort(key=lambda i: (not i["attention"], _RANK[i["view"]["health"]], i["view"]["server_name"]))
    by_health = {health: 0 for health in _RANK}
    for item in items:
        by_health[item["view"]["health"]] += 1
    return {
        "servers": len(items),
        "needing_attention": sum(1 for i in items if i["attention"]),
        "by_health": by_health,
        "down": sum(1 for i in items if not i["view"]["online"]),
        "reboot_required": sum(1 for i in items if i["view"]["apt_reboot_required"]),
        "with_security_updates": sum(1 for i in items if i["view"]["apt_security"]),
        "docker_down": sum(1 for i in items if i["view"]["docker_status"] == "down"),
        "new_messages": sum(i["new"] for i in items),
        "items": items,
    }
