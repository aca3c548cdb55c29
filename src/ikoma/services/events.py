"""The event log: one ordered record of what happens in the fleet, written as an outbox.

`publish` buffers an event on the caller's transaction; the buffer is inserted just before that
transaction commits (one statement), so an event exists exactly when the change it describes does: a
rolled-back change leaves none. Readers page by `id` (`read`, `GET /v1/events`, the SSE stream,
webhook dispatch) and must never skip an event, which ids alone do not promise on PostgreSQL: ids come
from a sequence at insert time, but transactions commit in any order, so a reader could see id 8
committed, move its cursor past it, and never see id 7 committed a moment later. The guard: the flush
takes a transaction-scoped advisory lock (in the insert statement itself, before any id is drawn), so
event-writing transactions take ids and commit one after the other, in id order (the audit chain
serialises its writers the same way). SQLite has one writer at a time already. The cost, and the
next design should it cost too much, are in docs/architecture.md ("The event log").

New events wake in-process readers after commit (`NEW_EVENTS`); on PostgreSQL the flush also sends
`NOTIFY ikoma_events` (delivered at commit) for the readers of other API processes.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import bindparam, func, insert, or_, select, text

from ikoma.storage.database import Tx
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import events, orders

CHANNEL = "ikoma_events"  # the PostgreSQL NOTIFY channel (services/broadcast.py listens to it)
# PostgreSQL: event-writing transactions take ids and commit one at a time (see the module docstring)
EVENTS_LOCK = 0x1C0A_E7E5
MAX_KIND = 64
MAX_TOPIC = 32

# An order event names its server: taken from the order in the insert itself, so the transition paths
# (services/history.py) need not carry it. COALESCE stops at a given server id.
_ORDER_SERVER = select(orders.c.server_id).where(orders.c.id == bindparam("p_order_id")).scalar_subquery()
# SQLite: on the driver (storage/prepared.py), past SQLAlchemy's execute path
_INSERT = Prepared(
    insert(events).values(
        kind=bindparam("p_kind"),
        topic=bindparam("p_topic"),
        server_id=func.coalesce(bindparam("p_server_id", type_=events.c.server_id.type), _ORDER_SERVER),
        order_id=bindparam("p_order_id", type_=events.c.order_id.type),
        runner_id=bindparam("p_runner_id", type_=events.c.runner_id.type),
        actor=bindparam("p_actor"),
        data=bindparam("p_data", type_=events.c.data.type),
    )
)
# PostgreSQL: the lock, the notification and the insert in one statement, one round trip, so the lock
# is held for as little as the commit allows. Every row comes out of the join with `guard`, so the lock
# is taken before the first id is drawn; ORDER BY n draws them in publish order. NOTIFY is delivered
# only if the transaction commits (payload `<origin>:<payload>` as services/broadcast.py sends them; no
# process has the origin `outbox`).
_GUARDED_INSERT = text(
    "INSERT INTO events (kind, topic, server_id, order_id, runner_id, actor, data) "
    "SELECT v.kind, v.topic, COALESCE(v.server_id::uuid, "
    "(SELECT o.server_id FROM orders o WHERE o.id = v.order_id::uuid)), "
    "v.order_id::uuid, v.runner_id::uuid, v.actor, v.data::jsonb "
    "FROM (SELECT pg_advisory_xact_lock(:lock), pg_notify(:channel, 'outbox:')) AS guard, "
    "unnest(CAST(:kinds AS text[]), CAST(:topics AS text[]), CAST(:servers AS text[]), "
    "CAST(:orders AS text[]), CAST(:runners AS text[]), CAST(:actors AS text[]), CAST(:datas AS text[])) "
    "WITH ORDINALITY AS v(kind, topic, server_id, order_id, runner_id, actor, data, n) "
    "ORDER BY v.n"
)
# on the driver (storage/prepared.py): asyncpg prepares it once per connection, past SQLAlchemy's adapter
_GUARDED_INSERT_PREPARED = Prepared(_GUARDED_INSERT)

_pending: weakref.WeakKeyDictionary[Tx, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


class Doorbell:
    """Wakes in-process readers when events commit; each then reads on from its own cursor.

    A reader listens for as long as it follows the log, so an event committed between its read and
    its wait still rings: `with NEW_EVENTS.listen() as rung: read; await rung.wait(); rung.clear()`.
    """

    def __init__(self) -> None:
        self._listeners: set[asyncio.Event] = set()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def ring(self) -> None:
        for listener in self._listeners:
            listener.set()

    @contextmanager
    def listen(self) -> Iterator[asyncio.Event]:
        rung = asyncio.Event()
        self._listeners.add(rung)
        try:
            yield rung
        finally:
            self._listeners.discard(rung)


NEW_EVENTS = Doorbell()


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    ts: datetime
    kind: str
    topic: str
    server_id: str | None
    order_id: str | None
    runner_id: str | None
    actor: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as the API, the stream and webhooks show it (camelCase, ISO 8601 UTC time)."""
        return {
            "id": self.id,
            "ts": _iso(self.ts),
            "kind": self.kind,
            "topic": self.topic,
            "serverId": self.server_id,
            "orderId": self.order_id,
            "runnerId": self.runner_id,
            "actor": self.actor,
            "data": self.data,
        }


def topic_of(kind: str) -> str:
    """`order.succeeded` → `order`; a kind is `<topic>.<what>`, within the columns' sizes."""
    topic, dot, rest = kind.partition(".")
    if not dot or not topic or not rest or len(kind) > MAX_KIND or len(topic) > MAX_TOPIC:
        raise ValueError(f"not an event kind: {kind!r}")
    return topic


def publish(
    tx: Tx,
    kind: str,
    *,
    server_id: str | None = None,
    order_id: str | None = None,
    runner_id: str | None = None,
    actor: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Add an event to `tx`: inserted just before it commits, in publish order, or never (rollback).

    `data` is small and never holds a secret nor an order's params. An order's event without a
    server id gets the order's server.
    """
    row = {
        "p_kind": kind,
        "p_topic": topic_of(kind),
        "p_server_id": server_id,
        "p_order_id": order_id,
        "p_runner_id": runner_id,
        "p_actor": actor,
        "p_data": data or {},
    }
    buffered = _pending.get(tx)
    if buffered is None:
        buffered = _pending[tx] = []
        tx.before_commit(_flush)
    buffered.append(row)


async def _flush(tx: Tx) -> None:
    rows = _pending.pop(tx, None)
    if not rows:
        return
    if tx.dialect == "postgresql":
        await tx.execute(
            _GUARDED_INSERT_PREPARED,
            {
                "lock": EVENTS_LOCK,
                "channel": CHANNEL,
                "kinds": [r["p_kind"] for r in rows],
                "topics": [r["p_topic"] for r in rows],
                "servers": [r["p_server_id"] for r in rows],
                "orders": [r["p_order_id"] for r in rows],
                "runners": [r["p_runner_id"] for r in rows],
                "actors": [r["p_actor"] for r in rows],
                "datas": [orjson.dumps(r["p_data"]).decode() for r in rows],
            },
        )
    else:  # SQLite: one writer at a time already
        await tx.execute(_INSERT, rows if len(rows) > 1 else rows[0])
    tx.after_commit(NEW_EVENTS.ring)


def camel(name: str) -> str:
    """`os_family` → `osFamily`: field names in `data` are spelled as the API spells them."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def kind_filter(prefixes: Iterable[str]) -> Any:
    """`order` or `order.` matches every order event; `order.failed` matches itself (and below)."""
    clauses = []
    for prefix in prefixes:
        stem = prefix.rstrip(".")
        clauses.append(events.c.kind == stem)
        clauses.append(events.c.kind.startswith(stem + ".", autoescape=True))
    return or_(*clauses)


async def read(
    tx: Tx,
    *,
    after: int,
    limit: int,
    kinds: list[str] | None = None,
    server_ids: set[str] | frozenset[str] | None = None,
    order_id: str | None = None,
) -> list[Event]:
    """Up to `limit` events with id > `after`, in id order.

    `kinds`: prefixes (any of them). `server_ids`: None for every event; otherwise only events of those
    servers (an event of no server is then left out): a scoped caller's visibility, or a filter.
    """
    query = select(events).where(events.c.id > after)
    if kinds:
        query = query.where(kind_filter(kinds))
    if server_ids is not None:
        query = query.where(events.c.server_id.in_(sorted(server_ids)))
    if order_id is not None:
        query = query.where(events.c.order_id == order_id)
    rows = await tx.execute(query.order_by(events.c.id).limit(limit))
    return [_event(r) for r in rows.mappings()]


async def last_id(tx: Tx) -> int:
    """The newest event's id (0 when there is none): where a reader that wants only new events starts."""
    return int((await tx.execute(select(func.coalesce(func.max(events.c.id), 0)))).scalar_one())


def _event(row: Any) -> Event:
    return Event(
        id=int(row["id"]),
        ts=row["ts"],
        kind=row["kind"],
        topic=row["topic"],
        server_id=_uuid(row["server_id"]),
        order_id=_uuid(row["order_id"]),
        runner_id=_uuid(row["runner_id"]),
        actor=row["actor"],
        data=dict(row["data"] or {}),
    )


def _uuid(value: Any) -> str | None:
    return None if value is None else str(uuid.UUID(str(value)))


def _iso(value: datetime | str) -> str:
    if isinstance(value, str):  # SQLite may answer the database clock's default as text
        value = datetime.fromisoformat(value)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")
