"""The SSE fan-out (services/event_fanout.py) over an in-memory event log: backlog then live exactly
once, one shared reader for every subscriber, a lagging subscriber told so and closed, filters, and a
subscriber gone frees its subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from ikoma.services.event_fanout import EventFanout, EventFilter, StreamEvent

STEP = 5.0  # a guard against a hang, never a timing assertion


@dataclass(frozen=True)
class FakeEvent:
    id: int
    kind: str
    server_id: str | None = None
    order_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "serverId": self.server_id, "orderId": self.order_id}


class FakeLog:
    """The event log in memory; counts the shared reader's reads; can hold a subscriber's backlog read."""

    def __init__(self) -> None:
        self.events: list[FakeEvent] = []
        self.shared_reads = 0
        self.backlog_gate: asyncio.Event | None = None
        self.backlog_waiting = asyncio.Event()

    def append(self, kind: str, **ids: str | None) -> FakeEvent:
        event = FakeEvent(len(self.events) + 1, kind, **ids)
        self.events.append(event)
        return event

    async def latest_id(self) -> int:
        return self.events[-1].id if self.events else 0

    async def read(self, *, after: int, limit: int, only: EventFilter | None) -> list[StreamEvent]:
        if only is None:
            self.shared_reads += 1
        elif self.backlog_gate is not None:
            gate, self.backlog_gate = self.backlog_gate, None
            self.backlog_waiting.set()
            await gate.wait()
        found = [e for e in self.events if e.id > after and (only is None or only.matches(e))]
        return list(found[:limit])


def parse(frame: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in frame.decode().strip().split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return fields


_unread: dict[int, list[bytes]] = {}


async def next_frame(stream: AsyncIterator[bytes]) -> dict[str, str]:
    """The next message or `retry:` frame; comments (`: live`) are skipped, as clients do. One chunk
    of the stream may hold several frames (what queued up is written at once)."""
    unread = _unread.setdefault(id(stream), [])
    while True:
        if not unread:
            chunk = await asyncio.wait_for(anext(stream), STEP)
            unread += [part + b"\n\n" for part in chunk.split(b"\n\n") if part]
        raw = unread.pop(0)
        if not raw.startswith(b":"):
            return parse(raw)


async def ids_of(stream: AsyncIterator[bytes], count: int) -> list[int]:
    return [int((await next_frame(stream))["id"]) for _ in range(count)]


@pytest.fixture
async def log_and_fanout() -> AsyncIterator[tuple[FakeLog, EventFanout]]:
    log = FakeLog()
    fanout = EventFanout(log, registry=CollectorRegistry(), poll_interval=60)
    yield log, fanout
    await fanout.close()
    _unread.clear()


async def test_backlog_then_live_events_arrive_once_each_in_order(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    for _ in range(3):
        log.append("order.created")
    stream = fanout.stream(EventFilter(), after=1)
    assert (await next_frame(stream)) == {"retry": "3000"}
    assert await ids_of(stream, 2) == [2, 3]
    log.append("order.claimed")
    log.append("order.started")
    fanout.wake()
    assert await ids_of(stream, 2) == [4, 5]
    await stream.aclose()


async def test_a_frame_carries_id_kind_and_the_event_json(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    event = log.append("runner.offline", server_id="s1")
    stream = fanout.stream(EventFilter(), after=0)
    await next_frame(stream)
    got = await next_frame(stream)
    assert got["id"] == "1"
    assert got["event"] == "runner.offline"
    assert orjson.loads(got["data"]) == event.to_json()
    await stream.aclose()


async def test_without_a_resume_point_only_new_events_are_sent(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    log.append("order.created")
    stream = fanout.stream(EventFilter(), after=None)
    await next_frame(stream)
    pending = asyncio.ensure_future(next_frame(stream))
    await asyncio.sleep(0)
    log.append("order.failed")
    fanout.wake()
    assert (await asyncio.wait_for(pending, STEP))["id"] == "2"
    await stream.aclose()


async def test_one_shared_read_serves_every_subscriber(log_and_fanout: tuple[FakeLog, EventFanout]) -> None:
    log, fanout = log_and_fanout
    streams = [fanout.stream(EventFilter(), after=0) for _ in range(50)]
    for stream in streams:
        await next_frame(stream)  # retry hint
    pendings = [asyncio.ensure_future(next_frame(s)) for s in streams]
    await asyncio.sleep(0.01)
    reads_before = log.shared_reads
    log.append("order.created")
    fanout.wake()
    frames = await asyncio.wait_for(asyncio.gather(*pendings), STEP)
    assert {f["id"] for f in frames} == {"1"}
    # one read of the log for 50 subscribers (a poll may have slipped in: still not one per subscriber)
    assert log.shared_reads - reads_before <= 2
    for stream in streams:
        await stream.aclose()


async def test_a_subscriber_whose_queue_overflows_gets_what_was_queued_then_stream_lagging(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    fanout.queue_size = 2
    slow = fanout.stream(EventFilter(), after=0)
    await next_frame(slow)
    pending = asyncio.ensure_future(next_frame(slow))
    await asyncio.sleep(0.01)  # caught up, waiting for live events
    for _ in range(5):  # one page of the shared reader: more than the queue holds
        log.append("order.created")
    fanout.wake()
    assert (await asyncio.wait_for(pending, STEP))["id"] == "1"
    assert await ids_of(slow, 1) == [2]
    lagging = await next_frame(slow)
    assert lagging["event"] == "stream.lagging"
    assert "id" not in lagging  # the client's Last-Event-ID stays the last real event
    assert orjson.loads(lagging["data"])["lastEventId"] == 2
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(slow), STEP)
    assert fanout.subscribers == 0


async def test_a_subscriber_with_room_in_its_queue_is_not_told_it_lags(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    fanout.queue_size = 10
    stream = fanout.stream(EventFilter(), after=0)
    await next_frame(stream)
    pending = asyncio.ensure_future(next_frame(stream))
    await asyncio.sleep(0.01)
    for _ in range(10):
        log.append("order.created")
    fanout.wake()
    assert (await asyncio.wait_for(pending, STEP))["id"] == "1"
    assert await ids_of(stream, 9) == list(range(2, 11))
    await stream.aclose()


async def test_an_overflow_while_catching_up_is_read_back_from_the_log_without_a_lagging_notice(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    fanout.queue_size = 1
    log.append("order.created")
    gate = log.backlog_gate = asyncio.Event()
    stream = fanout.stream(EventFilter(), after=0)
    await next_frame(stream)
    first = asyncio.ensure_future(next_frame(stream))
    await asyncio.wait_for(log.backlog_waiting.wait(), STEP)  # subscribed; its backlog read is held
    for _ in range(3):
        log.append("order.claimed")
    fanout.wake()
    for _ in range(500):  # the shared reader overflows the queue of one while the backlog is held
        if fanout.lagging_subscribers:
            break
        await asyncio.sleep(0.01)
    assert fanout.lagging_subscribers == 1
    gate.set()
    assert (await asyncio.wait_for(first, STEP))["id"] == "1"
    assert await ids_of(stream, 3) == [2, 3, 4]
    pending = asyncio.ensure_future(next_frame(stream))
    await asyncio.sleep(0.01)
    log.append("order.started")
    fanout.wake()
    got = await asyncio.wait_for(pending, STEP)
    assert (got.get("event"), got.get("id")) == ("order.started", "5")
    await stream.aclose()


async def test_events_both_in_the_backlog_and_queued_live_are_sent_once(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    log.append("order.created")
    gate = log.backlog_gate = asyncio.Event()
    stream = fanout.stream(EventFilter(), after=0)
    await next_frame(stream)
    first = asyncio.ensure_future(next_frame(stream))
    await asyncio.wait_for(log.backlog_waiting.wait(), STEP)  # subscribed; its backlog read is held
    log.append("order.claimed")
    log.append("order.started")
    fanout.wake()
    for _ in range(500):  # the shared reader queues 2 and 3; the held backlog read will return them too
        if log.shared_reads and fanout.lagging_subscribers == 0:
            break
        await asyncio.sleep(0.01)
    gate.set()
    assert (await asyncio.wait_for(first, STEP))["id"] == "1"
    assert await ids_of(stream, 2) == [2, 3]
    pending = asyncio.ensure_future(next_frame(stream))
    await asyncio.sleep(0.01)
    log.append("order.succeeded")
    fanout.wake()
    assert (await asyncio.wait_for(pending, STEP))["id"] == "4"
    await stream.aclose()


async def test_a_live_stream_ends_once_its_credential_no_longer_holds(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    log, fanout = log_and_fanout
    fanout.recheck_interval = 0.01
    allowed = True
    checks = 0

    async def still_allowed() -> bool:
        nonlocal checks
        checks += 1
        return allowed

    stream = fanout.stream(EventFilter(), after=0, still_allowed=still_allowed)
    await next_frame(stream)
    pending = asyncio.ensure_future(next_frame(stream))
    for _ in range(500):  # checked again and again while allowed: the stream stays open
        if checks >= 3:
            break
        await asyncio.sleep(0.01)
    assert checks >= 3
    assert not pending.done()
    log.append("order.created")
    fanout.wake()
    assert (await asyncio.wait_for(pending, STEP))["id"] == "1"
    allowed = False
    with pytest.raises(StopAsyncIteration):
        await next_frame(stream)
    assert fanout.subscribers == 0


def test_kind_prefixes_match_whole_dotted_parts() -> None:
    only = EventFilter(kinds=("order.", "runner.offline"))
    assert only.matches(FakeEvent(1, "order.created"))
    assert only.matches(FakeEvent(1, "runner.offline"))
    assert not only.matches(FakeEvent(1, "runner.online"))
    assert not EventFilter(kinds=("order",)).matches(FakeEvent(1, "orders.x"))


def test_a_scoped_filter_leaves_out_other_servers_and_events_of_no_server() -> None:
    only = EventFilter(server_ids=frozenset({"s1"}))
    assert only.matches(FakeEvent(1, "order.created", server_id="s1"))
    assert not only.matches(FakeEvent(1, "order.created", server_id="s2"))
    assert not only.matches(FakeEvent(1, "api_client.created"))
    assert EventFilter().matches(FakeEvent(1, "api_client.created"))


async def test_a_subscriber_gone_frees_its_subscription_and_the_gauge(
    log_and_fanout: tuple[FakeLog, EventFanout],
) -> None:
    _, fanout = log_and_fanout
    stream = fanout.stream(EventFilter(), after=0)
    await next_frame(stream)
    pending = asyncio.ensure_future(next_frame(stream))
    await asyncio.sleep(0.01)
    assert fanout.subscribers == 1
    assert fanout.gauge._value.get() == 1
    pending.cancel()  # what a client disconnect does to the response task
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()
    assert fanout.subscribers == 0
    assert fanout.gauge._value.get() == 0
