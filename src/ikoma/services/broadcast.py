"""Wake-ups across the processes of one deployment: `NOTIFY` on PostgreSQL, in-process on SQLite.

A message is a hint that something changed ("the order of runner R is queued", "events after id N
exist"), never the change itself: the database stays the truth, and a listener that may have missed
messages is told to re-read (a *resync*). Usage, one `Broadcast` per process (`bootstrap.Context`):

    await broadcast.notify(tx, CHANNEL, payload)   # inside a write transaction: sent with its commit,
                                                   # never for a rollback (pg_notify in the transaction)
    broadcast.publish(CHANNEL, payload)            # after a commit, outside any transaction: same
                                                   # delivery, batched, best effort (the safety polls
                                                   # catch a message lost with a crash); local=False
                                                   # sends to the other processes only
    subscription = broadcast.subscribe(CHANNEL, callback)
    subscription.close()

`callback(payload)` runs on the event loop for every message of the channel, from this process (at once)
and from the other processes (through PostgreSQL); it must be quick and not block. `callback(None)` is
the resync: messages may have been lost (the listening connection was lost and is back), so re-read
from the last position you know. `broadcast.reliable` tells whether messages from other processes
arrive right now (always on SQLite, where there is one process; on PostgreSQL while the listening
connection is up) and `broadcast.generation` changes whenever that stops or starts again.

Channels are short lowercase identifiers (`ikoma_claims`, `ikoma_events`, `ikoma_credentials`, below);
payloads are text without newlines, at most `MAX_PAYLOAD` bytes, never secrets (any session of the
database can LISTEN).

On PostgreSQL each process keeps one dedicated listening connection (asyncpg, outside the pool): it
LISTENs to every subscribed channel, sends the `publish` batches, and is checked by a heartbeat every
`HEARTBEAT_SECONDS`; when it is lost it is re-established with backoff, and every subscriber gets the
resync. A process ignores the echo of its own messages (it delivered them locally already).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import text

from ikoma.storage.database import Database, Tx
from ikoma.storage.urls import driver_url

if TYPE_CHECKING:
    from ikoma.metrics import Metrics

log = structlog.get_logger("ikoma.broadcast")

# The channels in use: order wake-ups for claims (payload: runner/server ids separated by spaces),
# the event log (helper H4: payload: the newest event id) and runner credentials revoked or rotated
# (payload: the runner id; every process drops its cached verification).
CLAIMS = "ikoma_claims"
EVENTS = "ikoma_events"
CREDENTIALS = "ikoma_credentials"

MAX_OUTBOX = 10_000  # messages waiting for the listening connection
MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes; room for the origin prefix and batching
HEARTBEAT_SECONDS = 5.0
APPLICATION_NAME = "ikoma-broadcast"
RECONNECT_MAX_SECONDS = 5.0
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS m(c, p)"

Callback = Callable[[str | None], None]


class Subscription:
    def __init__(self, broadcast: Broadcast, channel: str, callback: Callback) -> None:
        self._broadcast = broadcast
        self.channel = channel
        self.callback = callback

    def close(self) -> None:
        self._broadcast._unsubscribe(self)


class Broadcast:
    def __init__(self, db: Database, *, metrics: Metrics | None = None) -> None:
        self.db = db
        self.metrics = metrics
        # tells this process's own messages apart when PostgreSQL echoes them back
        self.origin = secrets.token_hex(4)
        self.generation = 0
        self._subscribers: defaultdict[str, list[Subscription]] = defaultdict(list)
        self._outbox: list[tuple[str, str]] = []
        self._kick = asyncio.Event()
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # asyncpg.Connection (untyped)
        self._listening: set[str] = set()

    @property
    def reliable(self) -> bool:
        """True while messages from other processes arrive (SQLite: one process, always)."""
        return self.db.is_sqlite or self._connected

    # --- sending ---------------------------------------------------------------------------------

    async def notify(self, tx: Tx, channel: str, payload: str) -> None:
        """Send `payload` on `channel` when `tx` commits; nothing is sent if it rolls back."""
        _check(channel, payload)
        if tx.dialect == "postgresql":
            await tx.execute(_NOTIFY, {"channel": channel, "payload": f"{self.origin}:{payload}"})
        tx.after_commit(lambda: self._deliver(channel, payload))

    def publish(self, channel: str, payload: str, *, local: bool = True) -> None:
        """Send `payload` on `channel` now (call it after a commit): local listeners at once (unless
        `local` is false: the caller told them itself), the others with the listening connection's
        next batch."""
        _check(channel, payload)
        if local:
            self._deliver(channel, payload)
        if not self.db.is_sqlite and self._task is not None:
            if len(self._outbox) >= MAX_OUTBOX:
                # the connection is away for long: drop the oldest hints; the other processes' doorbell
                # polls (and their resync, if they lost their own connection too) find the work anyway
                del self._outbox[: MAX_OUTBOX // 2]
            self._outbox.append((channel, payload))
            self._kick.set()

    # --- receiving -------------------------------------------------------------------------------

    def subscribe(self, channel: str, callback: Callback) -> Subscription:
        _check(channel, "")
        subscription = Subscription(self, channel, callback)
        self._subscribers[channel].append(subscription)
        if channel not in self._listening:
            self._kick.set()  # the listening connection LISTENs to it on its next turn
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        group = self._subscribers.get(subscription.channel)
        if group is not None and subscription in group:
            group.remove(subscription)

    def _deliver(self, channel: str, payload: str | None) -> None:
        for subscription in list(self._subscribers.get(channel, ())):
            try:
                subscription.callback(payload)
            except Exception as exc:  # one faulty listener must not stop the others
                log.warning("broadcast_listener_failed", channel=channel, error=type(exc).__name__)

    def _resync(self) -> None:
        for channel in list(self._subscribers):
            self._deliver(channel, None)

    def _on_notification(self, _conn: Any, _pid: int, channel: str, wire: str) -> None:
        origin, _, batch = wire.partition(":")
        if origin == self.origin:
            return  # our own message, delivered locally when it was sent
        if self.metrics is not None:
            self.metrics.broadcasts_received.labels(channel=channel).inc()
        for payload in batch.split("\n"):
            self._deliver(channel, payload)

    # --- the listening connection (PostgreSQL) ---------------------------------------------------

    async def start(self) -> None:
        if self.db.is_sqlite or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="broadcast-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def wait_connected(self, within: float) -> bool:
        """For tests and start-up: True once the listening connection is up (False after `within` s)."""
        deadline = asyncio.get_running_loop().time() + within
        while not self.reliable:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            lost = asyncio.Event()
            try:
                await self._connect(lost)
                backoff = 0.1
                self._set_connected(True)
                log.info("broadcast_listening", channels=sorted(self._listening), resync=not first)
                if not first:
                    self._resync()  # what was sent while we were away is found by re-reading
                first = False
                await self._serve(lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost or refused: listeners fall back on their polls meanwhile
                log.warning("broadcast_connection_lost", error=type(exc).__name__, detail=str(exc)[:200])
            self._set_connected(False)
            await self._drop_connection()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _connect(self, lost: asyncio.Event) -> None:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information; here, not at
        # module level: SQLite deployments never load it

        dsn = driver_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        # named, so an operator (and a test) can tell it in pg_stat_activity
        conn = await asyncpg.connect(dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME})
        self._conn = conn
        conn.add_termination_listener(lambda _conn: lost.set())
        self._listening = set()
        await self._listen_all(conn)

    async def _listen_all(self, conn: Any) -> None:
        for channel in list(self._subscribers):
            if channel not in self._listening:
                await conn.add_listener(channel, self._on_notification)
                self._listening.add(channel)

    async def _serve(self, lost: asyncio.Event) -> None:
        """Send batches and LISTEN to new channels as they come; a heartbeat when idle."""
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + HEARTBEAT_SECONDS
        while True:
            if lost.is_set() or conn.is_closed():
                raise ConnectionError("listening connection closed")
            self._kick.clear()
            await self._listen_all(conn)
            if self._outbox:
                await self._send(conn)
            now = loop.time()
            if now >= next_beat:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=HEARTBEAT_SECONDS)
                next_beat = now + HEARTBEAT_SECONDS
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(self._kick, lost), timeout=next_beat - now)

    async def _send(self, conn: Any) -> None:
        batch, self._outbox = self._outbox, []
        joined: dict[str, list[str]] = defaultdict(list)
        for channel, payload in batch:
            joined[channel].append(payload)
        channels: list[str] = []
        wires: list[str] = []
        for channel, payloads in joined.items():
            for chunk in _chunks(list(dict.fromkeys(payloads))):  # each payload once per batch
                channels.append(channel)
                wires.append(f"{self.origin}:{chunk}")
        try:
            await conn.execute(_NOTIFY_MANY, channels, wires)
        except BaseException:
            self._outbox[:0] = batch  # sent with the next connection; the receivers' resync covers it too
            raise

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            self.generation += 1

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._listening = set()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
            if not conn.is_closed():
                conn.terminate()


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _chunks(payloads: list[str]) -> list[str]:
    """Join payloads with newlines into as few messages as PostgreSQL's size limit allows."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for payload in payloads:
        if current and size + len(payload) + 1 > MAX_PAYLOAD:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(payload)
        size += len(payload) + 1
    if current:
        chunks.append("\n".join(current))
    return chunks


def _check(channel: str, payload: str) -> None:
    if not channel or not channel.replace("_", "").isalnum() or not channel.islower() or len(channel) > 63:
        raise ValueError(f"broadcast channel must be a short lowercase identifier, not {channel!r}")
    if "\n" in payload or len(payload.encode()) > MAX_PAYLOAD:
        raise ValueError(f"broadcast payload must be one line of at most {MAX_PAYLOAD} bytes")
