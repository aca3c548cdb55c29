"""Which servers a selector (domain/selectors.py) designates: one query, then the selector decides.

The query narrows in SQL what both backends can say portably — label terms (the JSON column
`servers.labels`: `->>` on PostgreSQL, `json_each` on SQLite, both with the key as a bound parameter, so
any key works) and connection state (the attached runner's heartbeat against the database clock, as
services/state.py `_liveness` computes it) — and the selector's own `matches` then decides every row
(name globs are matched there: LIKE differs in case between the backends). So SQL may only ever narrow,
never decide alone, and no server is read twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, and_, case, func, literal, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

from ikoma.domain.selectors import ConnectionState, Selector, Term
from ikoma.services.servers import _WITH_RUNNER as WITH_RUNNER  # the listing's columns, credentials out
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runners, servers


def connection_state(stale_after: float) -> ColumnElement[str]:
    """`online`, `offline` or `never_seen` of a server row joined to its runner (outer join)."""
    return case(
        (
            or_(runners.c.id.is_(None), runners.c.last_heartbeat_at.is_(None)),
            ConnectionState.NEVER_SEEN.value,
        ),
        (
            and_(runners.c.revoked_at.is_(None), runners.c.last_heartbeat_at >= db_now(-stale_after)),
            ConnectionState.ONLINE.value,
        ),
        else_=ConnectionState.OFFLINE.value,
    )


def _label_value(dialect: str, key: str) -> ColumnElement[Any]:
    """The label's value (NULL when the server has no such label); the key is a bound parameter."""
    if dialect == "postgresql":
        return servers.c.labels.op("->>", return_type=String())(literal(key, String()))
    pairs = func.json_each(servers.c.labels).table_valued("key", "value")
    return (
        select(literal_column("value", String()))
        .select_from(pairs)
        .where(pairs.c.key == literal(key, String()))
        .scalar_subquery()
    )


def _label_condition(dialect: str, term: Term) -> ColumnElement[bool]:
    value = _label_value(dialect, term.key)
    if term.op == "exists":
        return value.is_not(None)
    if term.op == "absent":
        return value.is_(None)
    if term.op in ("=", "in"):
        return value.in_(term.values)
    # `!=` and `notin` also hold when the label is absent (Kubernetes semantics)
    return or_(value.is_(None), value.not_in(term.values))


def _state_condition(state: ColumnElement[str], term: Term) -> ColumnElement[bool]:
    return state.in_(term.values) if term.op in ("=", "in") else state.not_in(term.values)


def narrowing(dialect: str, selector: Selector, state: ColumnElement[str]) -> list[ColumnElement[bool]]:
    """The SQL conditions implied by the selector's label and state terms (never by name globs)."""
    conditions = [_label_condition(dialect, term) for term in selector.about("label")]
    conditions += [_state_condition(state, term) for term in selector.about("state")]
    return conditions


async def select_servers(
    db: Database, selector: Selector, *, server_ids: frozenset[str] | None, stale_after: float
) -> list[dict[str, Any]]:
    """The live servers `selector` designates among `server_ids` (None: all), oldest first.

    Each row is a server as GET /v1/servers lists it, plus its `connection_state`.
    """
    if server_ids is not None and not server_ids:
        return []
    state = connection_state(stale_after)
    query = WITH_RUNNER.add_columns(state.label("connection_state")).where(
        *narrowing(db.dialect, selector, state)
    )
    if server_ids is not None:
        query = query.where(servers.c.id.in_(sorted(server_ids)))
    async with db.read() as tx:
        rows = (await tx.execute(query.order_by(servers.c.created_at, servers.c.id))).mappings()
        found = [dict(row) for row in rows]
    return [server for server in found if selector.matches(server)]
