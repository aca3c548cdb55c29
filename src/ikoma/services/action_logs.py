"""The action log: the audit log (services/audit.py) as the console searches it — filters, keyset pages
newest first, and counts by action and by outcome over the same filters (seed 002's `/action_logs`).

Read-only: entries are written by the audit alone. A page's cursor is the id of its last entry; the next
(older) page is `id < cursor`. Ids are drawn under the chain's lock and committed in id order, so an
entry committed while someone pages is always newer than every cursor handed out: pages never skip
nor repeat an entry, whatever is appended meanwhile.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, or_, select

from ikoma.domain.errors import BadRequest, Invalid
from ikoma.services import audit
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import audit_log

Outcome = Literal["allowed", "denied", "error"]
Channel = Literal["rest", "execute", "mcp", "system"]
# the stats name at most this many actions (the most frequent); the rest are summed in `otherActions`
STATS_ACTIONS = 50


@dataclass(frozen=True)
class Filters:
    """What narrows the log. `actor`: an actor id, a token prefix, or `kind:id` (`user:<id>`,
    `api_client:<id>`); `action` and `target`: prefixes; `since` inclusive, `until` exclusive."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: Outcome | None = None
    channel: Channel | None = None
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise Invalid(
                "`from` must be before `to`",
                reason="invalid_time_range",
                errors=[
                    {"path": "from", "message": "`from` must be before `to`", "type": "invalid_time_range"}
                ],
            )

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.actor:
            found.append(_actor(self.actor))
        if self.action:
            found.append(audit_log.c.action.startswith(self.action, autoescape=True))
        if self.target:
            found.append(audit_log.c.target.startswith(self.target, autoescape=True))
        if self.outcome:
            found.append(audit_log.c.outcome == self.outcome)
        if self.channel:
            found.append(audit_log.c.channel == self.channel)
        if self.since is not None:
            found.append(audit_log.c.at >= self.since)
        if self.until is not None:
            found.append(audit_log.c.at < self.until)
        return found


def _actor(actor: str) -> ColumnElement[bool]:
    matches: list[ColumnElement[bool]] = [audit_log.c.actor_id == actor, audit_log.c.token_prefix == actor]
    kind, colon, actor_id = actor.partition(":")
    if colon and kind and actor_id:
        matches.append(and_(audit_log.c.actor_kind == kind, audit_log.c.actor_id == actor_id))
    elif actor in ("admin", "anonymous"):  # kinds without an id of their own
        matches.append(audit_log.c.actor_kind == actor)
    return or_(*matches)


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"al:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor stands for; a cursor this API did not hand out is refused (400 `invalid_cursor`)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        entry_id = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        entry_id, prefix = 0, ""
    if prefix != "al" or entry_id < 1:
        raise BadRequest("cursor is not one this API returned", reason="invalid_cursor", cursor=cursor[:100])
    return entry_id


def _page_query(filters: Filters, *, before: int | None, limit: int) -> Select[Any]:
    query = select(audit_log).where(*filters.conditions())
    if before is not None:
        query = query.where(audit_log.c.id < before)
    return query.order_by(audit_log.c.id.desc()).limit(limit)


async def list_entries(db: Database, filters: Filters, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` entries that match, newest first."""
    filters.check()
    async with db.read() as tx:
        rows = (await tx.execute(_page_query(filters, before=None, limit=limit))).mappings().all()
    return [audit.public(r) for r in rows]


async def search(
    db: Database, filters: Filters, *, cursor: str | None = None, limit: int = 50, stats: bool = True
) -> dict[str, Any]:
    """One page, newest first, `nextCursor` (None on the last page), and, unless `stats` is false, the
    counts by action and by outcome of every entry that matches the filters (all pages, not this one)."""
    filters.check()
    before = decode_cursor(cursor) if cursor else None
    async with db.read() as tx:
        # one more than the page tells whether an older page exists
        rows = (await tx.execute(_page_query(filters, before=before, limit=limit + 1))).mappings().all()
        counted = await _stats(tx, filters) if stats else None
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [audit.public(r) for r in page],
        "nextCursor": encode_cursor(int(page[-1]["id"])) if more and page else None,
        "stats": counted,
    }


async def _stats(tx: Tx, filters: Filters) -> dict[str, Any]:
    # one scan for both counts: by (action, outcome), summed here
    count = func.count().label("n")
    rows = (
        await tx.execute(
            select(audit_log.c.action, audit_log.c.outcome, count)
            .where(*filters.conditions())
            .group_by(audit_log.c.action, audit_log.c.outcome)
        )
    ).all()
    outcomes = {"allowed": 0, "denied": 0, "error": 0}
    actions: dict[str, int] = {}
    for row in rows:
        n = int(row.n)
        outcomes[str(row.outcome)] = outcomes.get(str(row.outcome), 0) + n
        actions[str(row.action)] = actions.get(str(row.action), 0) + n
    total = sum(outcomes.values())
    shown = sorted(actions.items(), key=lambda item: (-item[1], item[0]))[:STATS_ACTIONS]
    return {
        "total": total,
        "byOutcome": outcomes,
        "byAction": [{"action": action, "count": n} for action, n in shown],
        "otherActions": total - sum(n for _, n in shown),
    }
