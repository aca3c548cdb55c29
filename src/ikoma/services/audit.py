"""The audit log: every tool call and every mutating request, allowed or refused, hash-chained.

Each entry's hash covers its own fields and the previous entry's hash, and ids follow each other without
gaps; `verify` walks the chain and names the first entry that was edited, deleted or moved. Appending
takes the chain's lock inside the caller's transaction, so an entry that cannot be written takes the
action down with it. What the chain cannot see: entries cut off at the very end — the optional JSONL
mirror (`IKOMA_AUDIT_LOG`), written after commit, is the second copy to compare with.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from sqlalchemy import insert, select, text

from ikoma.domain.errors import BadRequest
from ikoma.services import events
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import audit_log

log = structlog.get_logger("ikoma.audit")

Outcome = Literal["allowed", "denied", "error"]
# `system`: what IKOMA did by itself (issue 16: provider calls of the instance loops), actor `system`
Channel = Literal["rest", "execute", "mcp", "system"]
GENESIS = "0" * 64
# any dict key containing one of these is masked in stored params; `sql` may carry passwords too
_SECRET_MARKERS = ("password", "passwd", "secret", "token", "apikey", "api_key", "credential", "sql", "key")
# PostgreSQL: one chain, one writer at a time (SQLite's BEGIN IMMEDIATE already serialises writers)
_CHAIN_LOCK = 0x1C0A_A0D1
_LOCK_CHAIN = Prepared(select(text(f"pg_advisory_xact_lock({_CHAIN_LOCK})")))
# the chain's head and the database clock in one statement, read once the chain's lock is held (on
# PostgreSQL a statement of its own after the lock's: its snapshot must be taken after the lock)
_HEAD = Prepared(
    select(
        db_now().label("now"),
        select(audit_log.c.id).order_by(audit_log.c.id.desc()).limit(1).scalar_subquery().label("id"),
        select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1).scalar_subquery().label("hash"),
    )
)
_INSERT = Prepared(insert(audit_log))


@dataclass(frozen=True)
class AuditEntry:
    channel: Channel
    actor_kind: str  # admin | api_client | user (a console session) | anonymous
    actor_id: str | None
    token_prefix: str | None
    role: str | None
    action: str  # "execute:apps.health", "mcp:deploy.up", "POST /v1/servers"
    target: str | None
    params: dict[str, Any] | None
    outcome: Outcome
    order_id: str | None = None
    status_code: int | None = None
    reason: str | None = None


@dataclass
class Problem:
    id: int
    # the last four come from the anchors outside the database (services/audit_anchor.py)
    kind: Literal[
        "edited", "deleted", "reordered", "truncated", "rehashed", "checkpoint_forged", "mirror_mismatch"
    ]
    detail: str


@dataclass
class VerifyReport:
    ok: bool
    checked: int
    problem: Problem | None = None
    head: dict[str, Any] = field(default_factory=dict)


def mask(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Params as they may be stored and shown: secrets replaced, SQL reduced to its size and digest."""
    if params is None:
        return None
    return {k: _mask_value(k, v) for k, v in params.items()}


def _mask_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if any(marker in lowered for marker in _SECRET_MARKERS):
        if lowered == "sql" and isinstance(value, str):
            digest = hashlib.sha256(value.encode()).hexdigest()
            return {"masked": True, "bytes": len(value.encode()), "sha256": digest}
        return "***"
    if isinstance(value, Mapping):
        return {k: _mask_value(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(key, v) if isinstance(v, Mapping) else v for v in value]
    return value


def _stamp(at: datetime | str) -> str:
    """The timestamp as hashed: UTC, millisecond precision (what both backends keep exactly)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _hashed(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The fields an entry's hash covers, as they are shown (camelCase, timestamp as hashed)."""
    return {
        "id": int(row["id"]),
        "at": _stamp(row["at"]),
        "channel": row["channel"],
        "actorKind": row["actor_kind"],
        "actorId": row["actor_id"],
        "tokenPrefix": row["token_prefix"],
        "role": row["role"],
        "action": row["action"],
        "target": row["target"],
        "params": row["params"],
        "outcome": row["outcome"],
        "statusCode": row["status_code"],
        "reason": row["reason"],
        "orderId": row["order_id"],
    }


def _digest(prev_hash: str, row: Mapping[Any, Any]) -> str:
    fields = _hashed(row)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


async def append(tx: Tx, entry: AuditEntry, *, mirror: Path | None = None) -> int:
    """Add the entry to the chain inside `tx`; returns its id. Raises if it cannot be written."""
    if tx.dialect == "postgresql":
        await tx.execute(_LOCK_CHAIN)
    head = (await tx.execute(_HEAD)).one()
    row: dict[str, Any] = {
        **asdict(entry),
        "params": mask(entry.params),
        "id": int(head.id) + 1 if head.id is not None else 1,
        "at": _as_datetime(head.now),
    }
    # the stored timestamp is truncated to what is hashed, so both backends read back the same value
    row["at"] = datetime.fromisoformat(_stamp(row["at"]).replace("Z", "+00:00"))
    row["prev_hash"] = head.hash if head.id is not None else GENESIS
    row["hash"] = _digest(row["prev_hash"], row)
    await tx.execute(_INSERT, row)
    _publish_tool_call(tx, entry)
    if mirror is not None:
        tx.after_commit(lambda: _mirror(mirror, row))
    return int(row["id"])


def _publish_tool_call(tx: Tx, entry: AuditEntry) -> None:
    """A tool call allowed (`tool.called`) or refused (`tool.refused`) in the event log; the audit's
    `error` outcome of a call is its order's `order.failed`. Never the params, not even masked."""
    if entry.channel in ("rest", "system") or entry.outcome == "error":
        return
    actor = entry.actor_kind  # `admin`, `anonymous` (no valid credential); else `<kind>:<id>` (`user:<id>`)
    if entry.actor_kind != "admin" and entry.actor_id is not None:
        actor = f"{entry.actor_kind}:{entry.actor_id}"
    events.publish(
        tx,
        "tool.called" if entry.outcome == "allowed" else "tool.refused",
        order_id=entry.order_id,
        actor=actor,
        data={
            "tool": entry.action.partition(":")[2],
            "channel": entry.channel,
            "target": entry.target,
            "statusCode": entry.status_code,
            "reason": entry.reason,
        },
    )


class InTransaction:
    """An `allowed` entry written by the transaction of the action it audits: one commit for both, and
    an entry that cannot be written rolls the action back.

    The action calls `join(tx)` when it opens its write transaction; the entry is appended just before
    that transaction commits (the chain's lock held from there to the commit, no longer). `failure`
    turns the append's exception into the one the action raises (api/policy.py: 503
    `audit_unavailable`, or the database outage as it is). `written` once the transaction committed:
    an action that never joined, or rolled back, leaves the entry to its caller.
    """

    __slots__ = ("_failure", "_joined", "entry", "mirror", "written")

    def __init__(
        self, entry: AuditEntry, *, mirror: Path | None, failure: Callable[[Exception], Exception]
    ) -> None:
        self.entry = entry
        self.mirror = mirror
        self.written = False
        self._failure = failure
        self._joined: Tx | None = None

    def join(self, tx: Tx) -> None:
        if self.written or self._joined is tx:
            return  # one entry per request, whatever the action's transactions
        self._joined = tx
        tx.before_commit(self._append)

    async def _append(self, tx: Tx) -> None:
        try:
            await append(tx, self.entry, mirror=self.mirror)
        except Exception as exc:
            failed = self._failure(exc)
            if failed is exc:
                raise
            raise failed from None
        tx.after_commit(self._committed)

    def _committed(self) -> None:
        self.written = True


async def record(db: Database, entry: AuditEntry, *, mirror: Path | None = None) -> int:
    """Append in a transaction of its own (for refusals and outcomes, which change nothing else)."""
    async with db.write() as tx:
        return await append(tx, entry, mirror=mirror)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    # SQLite answers `db_now()` as text
    return datetime.fromisoformat(str(value))


def _mirror(path: Path, row: Mapping[Any, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(public(row), ensure_ascii=False, default=str) + "\n")
    except OSError as exc:  # the database holds the entry; the mirror is a convenience copy
        log.warning("audit_mirror_failed", path=str(path), error=str(exc))


def public(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        **_hashed(row),
        # seed 001 filters its JSONL on `.result == "error"`
        "result": row["outcome"],
        "prevHash": row["prev_hash"],
        "hash": row["hash"],
    }


def _cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(str(entry_id).encode()).decode().rstrip("=")


def _after(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except ValueError:
        raise BadRequest("cursor is not one this API returned", reason="invalid_cursor") from None


async def list_entries(
    db: Database,
    *,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Newest first. `actor` matches the actor id or the token prefix; `action` is a prefix."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
    if actor:
        query = query.where((audit_log.c.actor_id == actor) | (audit_log.c.token_prefix == actor))
    if action:
        query = query.where(audit_log.c.action.startswith(action, autoescape=True))
    if outcome:
        query = query.where(audit_log.c.outcome == outcome)
    if target:
        query = query.where(audit_log.c.target == target)
    if since:
        query = query.where(audit_log.c.at >= since)
    if until:
        query = query.where(audit_log.c.at < until)
    if cursor:
        query = query.where(audit_log.c.id < _after(cursor))
    async with db.read() as tx:
        rows = (await tx.execute(query)).mappings().all()
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "items": [public(r) for r in page],
        "nextCursor": _cursor(int(page[-1]["id"])) if more and page else None,
    }


async def verify(db: Database, *, batch: int = 1000) -> VerifyReport:
    """Walk the chain from the first entry; stop at the first break."""
    checked = 0
    prev_id = 0
    prev_hash = GENESIS
    async with db.read() as tx:
        while True:
            rows = (
                (
                    await tx.execute(
                        select(audit_log)
                        .where(audit_log.c.id > prev_id)
                        .order_by(audit_log.c.id)
                        .limit(batch)
                    )
                )
                .mappings()
                .all()
            )
            if not rows:
                break
            for row in rows:
                entry_id = int(row["id"])
                if entry_id != prev_id + 1:
                    return VerifyReport(
                        False,
                        checked,
                        Problem(prev_id + 1, "deleted", f"entries {prev_id + 1}..{entry_id - 1} are missing"),
                    )
                # the link first: a moved row carries the hash of a neighbour it no longer follows
                if row["prev_hash"] != prev_hash:
                    return VerifyReport(
                        False,
                        checked,
                        Problem(entry_id, "reordered", "it does not follow the entry before it in the chain"),
                    )
                if _digest(row["prev_hash"], row) != row["hash"]:
                    return VerifyReport(
                        False, checked, Problem(entry_id, "edited", "its fields do not match its hash")
                    )
                prev_id, prev_hash = entry_id, row["hash"]
                checked += 1
    return VerifyReport(True, checked, None, {"id": prev_id, "hash": prev_hash})
