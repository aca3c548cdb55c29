"""The fleet overview (`/`): counts by state, search, filter and sort, servers needing attention first.

One call to `services.fleet.summary` (three queries whatever the fleet's size: servers with their
state, liveness, new messages); filtering and sorting are done on that list, in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.rendering import page, principal_of
from ikoma.services import fleet

router = APIRouter(include_in_schema=False)

StateFilter = Literal["", "attention", "ok", "warning", "error", "unknown", "offline"]
SortKey = Literal["attention", "name", "health", "updates", "disk", "heartbeat"]
STATE_LABELS: dict[str, str] = {
    "": "All",
    "attention": "Needs attention",
    "error": "Error",
    "warning": "Warning",
    "unknown": "Unknown",
    "ok": "OK",
    "offline": "Offline",
}
SORT_LABELS: dict[str, str] = {
    "attention": "Needs attention first",
    "name": "Name",
    "health": "Health",
    "updates": "Most updates",
    "disk": "Fullest root disk",
    "heartbeat": "Oldest heartbeat",
}
_HEALTH_RANK = {"error": 0, "warning": 1, "unknown": 2, "ok": 3}


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One table row. A plain object, not the state dict: Jinja reads `row.x` from an object at once,
    where on a dict it first fails an attribute lookup (most of the page's render time at 500 rows)."""

    server_id: str
    server_name: str
    health: str
    attention: list[str]
    runner_id: str | None
    online: bool
    apt_updates: int | None
    apt_security: int | None
    apt_reboot_required: bool | None
    docker_status: str | None
    root_used_percent: float | None
    load1: float | None
    last_heartbeat_at: datetime | None

    @classmethod
    def of(cls, item: dict[str, Any]) -> FleetRow:
        view = item["view"]
        return cls(
            server_id=view["server_id"],
            server_name=view["server_name"],
            health=view["health"],
            attention=item["attention"],
            runner_id=None if view["runner_id"] is None else str(view["runner_id"]),
            online=bool(view["online"]),
            apt_updates=view["apt_updates"],
            apt_security=view["apt_security"],
            apt_reboot_required=view["apt_reboot_required"],
            docker_status=view["docker_status"],
            root_used_percent=view["root_used_percent"],
            load1=view["load1"],
            last_heartbeat_at=view["last_heartbeat_at"],
        )


def matches(item: dict[str, Any], query: str, state: str) -> bool:
    view = item["view"]
    if query and query not in view["server_name"].lower():
        return False
    if state == "attention":
        return bool(item["attention"])
    if state == "offline":
        return not view["online"]
    return not state or view["health"] == state


def _sort_key(sort: str) -> Callable[[dict[str, Any]], Any]:
    """Every key ends with the name, so equal rows keep a stable, readable order."""

    def name(i: dict[str, Any]) -> str:
        return str(i["view"]["server_name"]).lower()

    def health(i: dict[str, Any]) -> int:
        return _HEALTH_RANK.get(i["view"]["health"], 2)

    keys: dict[str, Callable[[dict[str, Any]], Any]] = {
        "attention": lambda i: (not i["attention"], health(i), name(i)),
        "name": name,
        "health": lambda i: (health(i), name(i)),
        "updates": lambda i: (-(i["view"]["apt_updates"] or 0), -(i["view"]["apt_security"] or 0), name(i)),
        "disk": lambda i: (-(i["view"]["root_used_percent"] or -1.0), name(i)),
        # never seen first, then the longest silent
        "heartbeat": lambda i: (
            i["view"]["last_heartbeat_at"] is not None,
            str(i["view"]["last_heartbeat_at"] or ""),
            name(i),
        ),
    }
    return keys[sort]


@router.get("/")
async def fleet_page(
    request: Request,
    ctx: Ctx,
    q: Annotated[str, Query(max_length=200, description="part of a server's name")] = "",
    state: Annotated[StateFilter, Query()] = "",
    sort: Annotated[SortKey, Query()] = "attention",
) -> Response:
    principal = principal_of(request)
    scope = principal.server_ids if principal is not None else frozenset()
    found = await fleet.summary(ctx.db, server_ids=scope, stale_after=ctx.settings.stale_after)
    query = q.strip().lower()
    shown = sorted((i for i in found["items"] if matches(i, query, state)), key=_sort_key(sort))
    return page(
        request,
        "fleet.html",
        {
            "summary": found,
            "rows": [FleetRow.of(i) for i in shown],
            "q": q,
            "state": state,
            "sort": sort,
            "state_labels": STATE_LABELS,
            "sort_labels": SORT_LABELS,
            "filtered": bool(query or state),
        },
    )
