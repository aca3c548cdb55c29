"""Live delivery of the event log: ONE reader per process follows the log and fans each new event out to
the subscribers (SSE streams) whose filter matches it.

Why one reader: 1,000 subscribers must cost one query per batch of new events, not one per subscriber
per event. Each event is encoded once (`Delivery.frame`) and the same bytes go to every subscriber.

A subscriber first registers (from then on the reader queues what it reads for it), then reads its
backlog from the database itself (after its `Last-Event-ID`), then drains its queue, skipping the ids
it already sent. Registering first means nothing committed in between can fall through the gap; the id
check drops the overlap.

Each subscriber's queue is bounded (`queue_size`): a client that reads slower than events arrive may
neither grow the server's memory without end nor slow the others. When its queue is full the
subscriber is marked lagging: it still gets the events already queued, then one `stream.lagging` event
naming the id to resume from, and its stream ends (the client reconnects with that id and reads the rest
from the database). While it is still catching up on its backlog, an overflow costs nothing: the
database holds everything, it just reads on.

The reader reads when woken (`wake`: the events doorbell rings after a commit in this process, and for
another process's commits when the broadcaster relays its NOTIFY) and, as a safety net while anyone is
subscribed, every `poll_interval` seconds (`SAFETY_POLL_SECONDS` while `signalled()` says other
processes' signals do arrive). With no subscriber it reads nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Gauge

from ikoma.services import events
from ikoma.storage.database import Database

log = structlog.get_logger("ikoma.events.fanout")

PAGE = 500  # events per read, for the shared reader and for a subscriber's backlog
DEFAULT_QUEUE_SIZE = 1000
DEFAULT_POLL_SECONDS = 1.0
DEFAULT_RECHECK_SECONDS = 15.0  # how often a live subscriber's credential is checked again
# while other processes' commits reach us as signals (services/broadcast.py), the poll is a safety net
SAFETY_POLL_SECONDS = 5.0
RETRY_MS = 3000  # the `retry:` hint: how long an EventSource waits before it reconnects
LAGGING = "stream.lagging"
LIVE_COMMENT = b": live\n\n"  # caught up: from here on, events come as they are written
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class StreamEvent(Protocol):
    """What the fan-out needs of an event (services.events.Event)."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def server_id(self) -> str | None: ...
    @property
    def order_id(self) -> str | None: ...
    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a subscriber gets: kind prefixes (none: all), the servers it may see or asked for
    (None: every event, those without a server included), one order."""

    kinds: tuple[str, ...] = ()
    server_ids: frozenset[str] | None = None
    order_id: str | None = None

    def matches(self, event: StreamEvent) -> bool:
        if self.kinds and not any(_kind_matches(event.kind, prefix) for prefix in self.kinds):
            return False
        if self.server_ids is not None and event.server_id not in self.server_ids:
            return False
        return self.order_id is None or event.order_id == self.order_id


def _kind_matches(kind: str, prefix: str) -> bool:
    """As services.events.kind_filter: `order` and `order.` match every order event, `order.failed`
    itself (and any kind below it)."""
    stem = prefix.rstrip(".")
    return kind == stem or kind.startswith(stem + ".")


class EventSource(Protocol):
    """The event log as the fan-out reads it (services.events over the database, or a test double)."""

    async def latest_id(self) -> int: ...
    async def read(self, *, after: int, limit: int, only: EventFilter | None) -> list[StreamEvent]: ...


class EventLog:
    """The event log in the database (services/events.py), as the fan-out reads it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def latest_id(self) -> int:
        async with self.db.read() as tx:
            return await events.last_id(tx)

    async def read(self, *, after: int, limit: int, only: EventFilter | None) -> list[StreamEvent]:
        async with self.db.read() as tx:
            if only is None:
                found = await events.read(tx, after=after, limit=limit)
            else:
                found = await events.read(
                    tx,
                    after=after,
                    limit=limit,
                    kinds=list(only.kinds),
                    server_ids=only.server_ids,
                    order_id=only.order_id,
                )
        return list(found)


def frame(event_id: int | None, kind: str, data: dict[str, Any]) -> bytes:
    """One SSE message. JSON has no raw newline in it, so `data:` is always one line."""
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data, option=JSON_OPTIONS) + b"\n\n"


def event_frame(event: StreamEvent) -> bytes:
    return frame(event.id, event.kind, event.to_json())


def retry_frame(milliseconds: int = RETRY_MS) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def lagging_frame(last_id: int) -> bytes:
    """No `id:` line: the client's Last-Event-ID stays the last event it really got."""
    return frame(
        None,
        LAGGING,
        {
            "kind": LAGGING,
            "lastEventId": last_id,
            "message": "this stream fell too far behind and was closed: "
            f"reconnect with Last-Event-ID {last_id} (or ?after={last_id}) to read on",
        },
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    frame: bytes


@dataclass(eq=False)
class Subscription:
    only: EventFilter
    size: int
    lagging: bool = False
    _due: bool = False  # time to check the subscriber's credential again
    _queue: deque[Delivery] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, delivery: Delivery) -> None:
        if self.lagging:
            return
        if len(self._queue) >= self.size:
            self.lagging = True
        else:
            self._queue.append(delivery)
        self._ready.set()

    def restart(self) -> None:
        """Forget the queue and the overflow: the caller reads on from the database instead."""
        self._queue.clear()
        self.lagging = False

    def tick(self) -> None:
        self._due = True
        self._ready.set()

    async def next(self) -> list[Delivery] | None:
        """Every queued event, oldest first; [] when a credential check is due; None once drained
        after an overflow."""
        while not self._queue:
            if self.lagging:
                return None
            if self._due:
                self._due = False
                return []
            self._ready.clear()
            await self._ready.wait()
        taken = list(self._queue)
        self._queue.clear()
        return taken


class EventFanout:
    def __init__(
        self,
        source: EventSource,
        *,
        registry: CollectorRegistry | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        poll_interval: float = DEFAULT_POLL_SECONDS,
        signalled: Callable[[], bool] | None = None,
        doorbell: events.Doorbell | None = None,
        recheck_interval: float = DEFAULT_RECHECK_SECONDS,
    ) -> None:
        self.source = source
        self.doorbell = doorbell
        self.queue_size = queue_size
        self.poll_interval = poll_interval
        self.signalled = signalled
        self.recheck_interval = recheck_interval
        # subscribers by filter: an event is matched once per distinct filter, not once per subscriber
        self._groups: dict[EventFilter, set[Subscription]] = {}
        self._count = 0
        self._cursor = 0
        self._signal = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        # every open SSE stream, the order log streams included (they count through `track`)
        self.gauge = Gauge(
            "ikoma_sse_subscribers", "Open Server-Sent Events streams in this process", registry=registry
        )

    @property
    def subscribers(self) -> int:
        return self._count

    @property
    def lagging_subscribers(self) -> int:
        return sum(1 for group in self._groups.values() for s in group if s.lagging)

    def wake(self) -> None:
        """New events were committed: read them now rather than at the next poll."""
        self._signal.set()

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._run(), name="event-fanout"))
        self._tasks.append(asyncio.create_task(self._tick(), name="event-fanout-recheck"))
        if self.doorbell is not None:
            self._tasks.append(asyncio.create_task(self._forward(self.doorbell), name="event-doorbell"))

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forward(self, doorbell: events.Doorbell) -> None:
        """Commits in this process ring the doorbell: wake the reader (which reads all that committed)."""
        with doorbell.listen() as rung:
            while True:
                await rung.wait()
                rung.clear()
                self.wake()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one open stream in `ikoma_sse_subscribers` while the block runs."""
        self.gauge.inc()
        try:
            yield
        finally:
            self.gauge.dec()

    @contextlib.asynccontextmanager
    async def subscribe(self, only: EventFilter) -> AsyncIterator[Subscription]:
        async with self._start_lock:
            if not self._count:
                # the reader was idle: start it at the log's head; the subscriber reads what is older
                self._cursor = max(self._cursor, await self.source.latest_id())
            subscription = Subscription(only, self.queue_size)
            self._groups.setdefault(only, set()).add(subscription)
            self._count += 1
        self.start()
        self.wake()  # an idle reader starts polling again
        try:
            with self.track():
                yield subscription
        finally:
            group = self._groups[only]
            group.discard(subscription)
            self._count -= 1
            if not group:
                del self._groups[only]

    async def stream(
        self,
        only: EventFilter,
        after: int | None,
        *,
        still_allowed: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """SSE frames: the `retry:` hint, the backlog after `after` (None: live events only), a `: live`
        comment, then live events; ends with a `stream.lagging` frame if the subscriber falls too far
        behind. The `retry:` hint comes once the subscription is in place, and `: live` once the backlog
        is sent: whatever commits after a client saw it reaches the client through the shared reader."""
        async with self.subscribe(only) as subscription:
            last = await self.source.latest_id() if after is None else after
            yield retry_frame()
            while True:  # the backlog, from the database
                page = await self.source.read(after=last, limit=PAGE, only=only)
                for event in page:
                    yield event_frame(event)
                    last = event.id
                if len(page) < PAGE:
                    if not subscription.lagging:
                        break
                    subscription.restart()  # it overflowed while catching up: the database has it all
            yield LIVE_COMMENT
            while True:  # live, from the shared reader
                taken = await subscription.next()
                if taken is None:
                    log.info("sse_lagging", last_event_id=last, queue_size=self.queue_size)
                    yield lagging_frame(last)
                    return
                if not taken:  # a revoked or expired credential ends the stream (reconnecting: 401)
                    if still_allowed is not None and not await still_allowed():
                        log.info("sse_credential_gone", last_event_id=last)
                        return
                    continue
                # what queued up while this client was being written to goes out in one write
                fresh = [d for d in taken if d.id > last]
                if fresh:
                    yield fresh[0].frame if len(fresh) == 1 else b"".join(d.frame for d in fresh)
                    last = fresh[-1].id

    async def _run(self) -> None:
        while True:
            self._signal.clear()
            timeout: float | None = None
            if self._count:
                timeout = self._poll_timeout()
                try:
                    await self._read_new()
                except Exception as exc:  # a database outage: subscribers wait, the cursor stays put
                    log.warning("event_fanout_read_failed", error=type(exc).__name__, detail=str(exc)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), timeout)

    async def _tick(self) -> None:
        """Every `recheck_interval`, each live subscriber checks its credential again."""
        while True:
            await asyncio.sleep(self.recheck_interval)
            for group in self._groups.values():
                for subscription in group:
                    subscription.tick()

    def _poll_timeout(self) -> float:
        if self.signalled is not None and self.signalled():
            return max(self.poll_interval, SAFETY_POLL_SECONDS)
        return self.poll_interval

    async def _read_new(self) -> None:
        while self._count:
            page = await self.source.read(after=self._cursor, limit=PAGE, only=None)
            for event in page:
                self._dispatch(event)
            if page:
                self._cursor = max(self._cursor, page[-1].id)
            if len(page) < PAGE:
                return

    def _dispatch(self, event: StreamEvent) -> None:
        encoded: bytes | None = None
        for only, group in self._groups.items():
            if only.matches(event):
                if encoded is None:  # encoded once, for however many subscribers
                    encoded = event_frame(event)
                delivery = Delivery(event.id, encoded)
                for subscription in group:
                    subscription.offer(delivery)
