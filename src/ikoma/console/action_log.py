"""The action log page (`/action-log`): the audit log searched by actor, action, target, outcome,
channel and time, newest first, an "Older" page at a time, with counts by outcome and action over the
same filters. The same service as `GET /action_logs/search`, and the same least role (admin).

Times in the form are UTC (`datetime-local` inputs carry no zone). A filter the page cannot read is
said in the page, next to the form, instead of a JSON error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ikoma.api.action_types import ACTION_TYPES
from ikoma.api.deps import Ctx
from ikoma.console.rendering import page
from ikoma.domain.errors import DomainError
from ikoma.services import action_logs
from ikoma.services.action_logs import Filters

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
OUTCOMES = ("allowed", "denied", "error")
CHANNELS = ("rest", "execute", "mcp", "system")  # system: what IKOMA did at a provider (issue 16)
OUTCOME_BADGE = {"allowed": "ok", "denied": "error", "error": "warning"}
# GET /action_types names colours; the console's palette has four badges, so each maps to the nearest
COLOR_BADGE = {"green": "ok", "teal": "ok", "red": "error", "orange": "warning"}


def action_type_of(action: str) -> dict[str, str] | None:
    """An entry's action type (label, colour, icon), as GET /action_types defines it: the longest
    `type` its action starts with."""
    found = [t for t in ACTION_TYPES if action.startswith(t["type"])]
    return max(found, key=lambda t: len(t["type"]), default=None)


def parse_time(value: str, field: str) -> datetime:
    """`2026-12-07T21:15` (a datetime-local input) or full ISO 8601; no zone means UTC."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: past the last UTC time Python holds
        raise ValueError(f"{field}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)") from None


@router.get("/action-log")
async def action_log_page(
    request: Request,
    ctx: Ctx,
    actor: Annotated[str, Query(max_length=100)] = "",
    action: Annotated[str, Query(max_length=200)] = "",
    target: Annotated[str, Query(max_length=300)] = "",
    outcome: Annotated[Literal["", "allowed", "denied", "error"], Query()] = "",
    channel: Annotated[Literal["", "rest", "execute", "mcp", "system"], Query()] = "",
    since: Annotated[str, Query(alias="from", max_length=40)] = "",
    until: Annotated[str, Query(alias="to", max_length=40)] = "",
    cursor: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    form = {
        "actor": actor,
        "action": action,
        "target": target,
        "outcome": outcome,
        "channel": channel,
        "from": since,
        "to": until,
    }
    error = None
    found: dict[str, Any] = {"items": [], "nextCursor": None, "stats": None}
    try:
        filters = Filters(
            actor=actor.strip() or None,
            action=action.strip() or None,
            target=target.strip() or None,
            outcome=outcome or None,
            channel=channel or None,
            since=parse_time(since, "From") if since.strip() else None,
            until=parse_time(until, "To") if until.strip() else None,
        )
        found = await action_logs.search(ctx.db, filters, cursor=cursor or None, limit=PAGE_SIZE)
    except ValueError as exc:
        error = str(exc)
    except DomainError as refusal:
        error = refusal.message
    return page(
        request,
        "action_log.html",
        {
            "form": form,
            "query": {k: v for k, v in form.items() if v},
            "query_but_outcome": {k: v for k, v in form.items() if v and k != "outcome"},
            "items": found["items"],
            "next_cursor": found["nextCursor"],
            "stats": found["stats"],
            "cursor": cursor,
            "error": error,
            "outcomes": OUTCOMES,
            "channels": CHANNELS,
            "outcome_badge": OUTCOME_BADGE,
            "action_type_of": action_type_of,
            "color_badge": COLOR_BADGE,
            "filtered": any(form.values()),
        },
    )
