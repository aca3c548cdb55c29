"""The timed load of the benchmarks, sent from worker processes with the bare client of wire.py.

The benchmark's parent process sets things up (fleet, queued orders) and checks the outcome; the
load itself runs in a pool of spawned processes, each on its own event loop (uvloop when installed):

* `drain`: runners split over the workers, each looping claim-next?wait=0 → start → complete;
* `paced_runners` + `produce`: runners long-polling in some workers while one producer process
  creates orders on a fixed schedule (open loop).

All times are `time.monotonic()`, which on Linux is one clock for every process of the machine, so
a send time taken by the producer and a receive time taken by a runner process can be subtracted.
Each call returns plain data (lists, dicts) and the worker's own CPU seconds, to be merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any
from urllib.parse import urlsplit

from wire import Answer, Connection, WireError

REPORT: dict[str, Any] = {"version": "v2", "summary": "bench", "durationMs": 0, "steps": [], "errors": []}
MAX_CONSECUTIVE_ERRORS = 100


@dataclass
class Tally:
    """Unexpected answers and transport errors, grouped by call and kind (picklable)."""

    counts: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0

    def answer(self, call: str, answer: Answer) -> None:
        self.counts[f"{call}: HTTP {answer.status} {answer.reason()}"] += 1
        if answer.status >= 500:
            self.server_errors += 1

    def exc(self, call: str, exc: BaseException) -> None:
        self.counts[f"{call}: {type(exc).__name__}: {exc}"[:200]] += 1

    def note(self, message: str) -> None:
        self.counts[message] += 1

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.server_errors += other.server_errors

    def lines(self) -> list[str]:
        return [f"{key} (x{n})" if n > 1 else key for key, n in self.counts.most_common()]


@dataclass
class Target:
    """Where the load goes: the server's base URL and the credentials of the callers."""

    base_url: str
    admin_key: str = ""

    def connection(self, headers: dict[str, str]) -> Connection:
        parts = urlsplit(self.base_url)
        return Connection(parts.hostname or "127.0.0.1", parts.port or 80, headers)

    def runner(self, runner: tuple[str, str, str]) -> Connection:
        return self.connection({"x-runner-id": runner[0], "x-runner-token": runner[1]})

    def admin(self) -> Connection:
        return self.connection({"x-ikoma-admin-key": self.admin_key})


def pool(workers: int) -> ProcessPoolExecutor:
    """Spawned workers (a forked copy of a process with a running event loop is not safe)."""
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    for future in [executor.submit(_warm) for _ in range(workers)]:
        future.result()
    return executor


def _warm() -> None:
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401 - imported once so the timed call does not pay for it


def run_timed(coro: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run one timed coroutine on a fresh loop; adds the worker's CPU seconds to its result."""
    runner: Callable[..., Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    cpu0 = time.process_time()
    result: dict[str, Any] = runner(coro())
    result["cpuSeconds"] = time.process_time() - cpu0
    return result


async def sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _start_and_complete(
    conn: Connection, order: dict[str, Any], report: dict[str, Any], tally: Tally, out: dict[str, Any] | None
) -> bool:
    order_id = order["id"]
    lease = {"leaseToken": order["leaseToken"]}
    try:
        t0 = time.monotonic()
        answer = await conn.request("POST", f"/v1/runner/orders/{order_id}/start", lease)
        t1 = time.monotonic()
        if answer.status != 200:
            tally.answer("start", answer)
            return False
        body = {"status": "SUCCEEDED", "report": report, **lease}
        answer = await conn.request("POST", f"/v1/runner/orders/{order_id}/complete", body)
        t2 = time.monotonic()
        if answer.status != 200:
            tally.answer("complete", answer)
            return False
    except WireError as exc:
        tally.exc("start/complete", exc)
        return False
    if out is not None:
        out["start"].append(t1 - t0)
        out["complete"].append(t2 - t1)
        out["lastComplete"] = max(out["lastComplete"], t2)
    return True


# --------------------------------------------------------------------------------------------------
# drain


def drain(
    target: Target,
    runners: list[tuple[str, str, str]],
    max_orders: int,
    start_at: float,
    deadline: float,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every runner loops claim → start → complete from `start_at` until claim-next answers 204."""
    return run_timed(lambda: _drain(target, runners, max_orders, start_at, deadline, report or REPORT))


async def _drain(
    target: Target,
    runners: list[tuple[str, str, str]],
    max_orders: int,
    start_at: float,
    deadline: float,
    report: dict[str, Any],
) -> dict[str, Any]:
    tally = Tally()
    out: dict[str, Any] = {
        "claim": [],
        "start": [],
        "complete": [],
        "completed": [],
        "firstClaim": math.inf,
        "lastComplete": 0.0,
    }

    async def one(runner: tuple[str, str, str]) -> None:
        conn = target.runner(runner)
        errors_in_a_row = 0
        try:
            for _ in range(max_orders + MAX_CONSECUTIVE_ERRORS + 1):
                if time.monotonic() > deadline:
                    tally.note("drain: deadline reached before the queue was empty")
                    return
                if errors_in_a_row >= MAX_CONSECUTIVE_ERRORS:
                    tally.note(f"drain: a runner gave up after {MAX_CONSECUTIVE_ERRORS} consecutive errors")
                    return
                t0 = time.monotonic()
                out["firstClaim"] = min(out["firstClaim"], t0)
                try:
                    answer = await conn.request("POST", "/v1/runner/orders/claim-next?wait=0")
                except WireError as exc:
                    tally.exc("claim", exc)
                    errors_in_a_row += 1
                    continue
                out["claim"].append(time.monotonic() - t0)
                if answer.status == 204:
                    return
                if answer.status != 200:
                    tally.answer("claim", answer)
                    errors_in_a_row += 1
                    continue
                order = answer.json()
                if await _start_and_complete(conn, order, report, tally, out):
                    out["completed"].append(order["id"])
                    errors_in_a_row = 0
                else:
                    errors_in_a_row += 1
            tally.note("drain: a runner claimed more orders than were queued")
        finally:
            conn.close()

    await sleep_until(start_at)
    await asyncio.gather(*(one(r) for r in runners))
    out["tally"] = tally
    return out


# --------------------------------------------------------------------------------------------------
# paced load


def paced_runners(
    target: Target, runners: list[tuple[str, str, str]], long_poll_s: int, end_at: float
) -> dict[str, Any]:
    """Runners long-poll and run what they get until `end_at`: {orderId: claim answer received}."""
    return run_timed(lambda: _paced_runners(target, runners, long_poll_s, end_at))


async def _paced_runners(
    target: Target, runners: list[tuple[str, str, str]], long_poll_s: int, end_at: float
) -> dict[str, Any]:
    tally = Tally()
    claimed: dict[str, float] = {}

    async def loop(runner: tuple[str, str, str]) -> None:
        conn = target.runner(runner)
        try:
            while time.monotonic() < end_at:
                try:
                    answer = await conn.request("POST", f"/v1/runner/orders/claim-next?wait={long_poll_s}")
                except WireError as exc:
                    tally.exc("claim", exc)
                    await asyncio.sleep(0.05)
                    continue
                received = time.monotonic()
                if answer.status == 204:
                    continue
                if answer.status != 200:
                    tally.answer("claim", answer)
                    await asyncio.sleep(0.05)
                    continue
                order = answer.json()
                claimed[order["id"]] = received
                await _start_and_complete(conn, order, REPORT, tally, None)
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(loop(r)) for r in runners]
    await sleep_until(end_at)
    for task in tasks:  # a long-poll still parked at the end is abandoned (its connection closed)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"claimed": claimed, "tally": tally}


def produce(
    target: Target,
    server_ids: list[str],
    playbook_key: str,
    rate: float,
    total: int,
    t0: float,
    stop_at: float,
    connections: int,
) -> dict[str, Any]:
    """Create order i at t0 + i/rate (open loop) over `connections` keep-alive connections; nothing
    is sent after `stop_at`. Returns {"sent": {orderId: send time}, "first", "last", "tally"}."""
    return run_timed(
        lambda: _produce(target, server_ids, playbook_key, rate, total, t0, stop_at, connections)
    )


async def _produce(
    target: Target,
    server_ids: list[str],
    playbook_key: str,
    rate: float,
    total: int,
    t0: float,
    stop_at: float,
    connections: int,
) -> dict[str, Any]:
    tally = Tally()
    sent: dict[str, float] = {}
    next_index = 0
    first, last = math.inf, 0.0

    async def producer() -> None:
        nonlocal next_index, first, last
        conn = target.admin()
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                await sleep_until(t0 + i / rate)
                send_at = time.monotonic()
                if send_at > stop_at:
                    return
                first, last = min(first, send_at), max(last, send_at)
                body = {"serverId": server_ids[i % len(server_ids)], "playbookKey": playbook_key}
                try:
                    answer = await conn.request("POST", "/v1/orders", body)
                except WireError as exc:
                    tally.exc("create", exc)
                    continue
                if answer.status == 201:
                    sent[answer.json()["order"]["id"]] = send_at
                else:
                    tally.answer("create", answer)
        finally:
            conn.close()

    await asyncio.gather(*(producer() for _ in range(connections)))
    return {"sent": sent, "first": first, "last": last, "tally": tally}


# --------------------------------------------------------------------------------------------------
# closed-loop calls (create rate, ingestion cost)


def hammer(
    target: Target,
    calls: list[tuple[str, str, Any]],
    connections: int,
    start_at: float,
) -> dict[str, Any]:
    """The admin `calls` (method, path, body), `connections` at a time, as fast as the server
    answers. Returns {"ok", "latencies", "first", "last", "tally"}."""
    return run_timed(lambda: _hammer(target, calls, connections, start_at))


async def _hammer(
    target: Target,
    calls: list[tuple[str, str, Any]],
    connections: int,
    start_at: float,
) -> dict[str, Any]:
    tally = Tally()
    latencies: list[float] = []
    next_index = 0
    first, last = math.inf, 0.0

    async def worker() -> None:
        nonlocal next_index, first, last
        conn = target.admin()
        try:
            while next_index < len(calls):
                method, path, body = calls[next_index]
                next_index += 1
                t0 = time.monotonic()
                first = min(first, t0)
                try:
                    answer = await conn.request(method, path, body)
                except WireError as exc:
                    tally.exc(path, exc)
                    continue
                t1 = time.monotonic()
                last = max(last, t1)
                if answer.status in (200, 201):
                    latencies.append(t1 - t0)
                else:
                    tally.answer(f"{method} {path}", answer)
        finally:
            conn.close()

    await sleep_until(start_at)
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"ok": len(latencies), "latencies": latencies, "first": first, "last": last, "tally": tally}


# --------------------------------------------------------------------------------------------------
# completions alone (ingestion cost): claim and start first, complete later


def claim_and_start(target: Target, runners: list[tuple[str, str, str]], max_orders: int) -> dict[str, Any]:
    """Every runner claims and starts until claim-next answers 204: {"held": [(runner, orderId,
    leaseToken)], "tally"}; the orders stay RUNNING for `complete_all`."""
    return run_timed(lambda: _claim_and_start(target, runners, max_orders))


async def _claim_and_start(
    target: Target, runners: list[tuple[str, str, str]], max_orders: int
) -> dict[str, Any]:
    tally = Tally()
    held: list[tuple[tuple[str, str, str], str, str]] = []

    async def one(runner: tuple[str, str, str]) -> None:
        conn = target.runner(runner)
        try:
            for _ in range(max_orders + 1):
                answer = await conn.request("POST", "/v1/runner/orders/claim-next?wait=0")
                if answer.status != 200:
                    if answer.status != 204:
                        tally.answer("claim", answer)
                    return
                order = answer.json()
                lease = {"leaseToken": order["leaseToken"]}
                started = await conn.request("POST", f"/v1/runner/orders/{order['id']}/start", lease)
                if started.status != 200:
                    tally.answer("start", started)
                    continue
                held.append((runner, order["id"], order["leaseToken"]))
        except WireError as exc:
            tally.exc("claim/start", exc)
        finally:
            conn.close()

    await asyncio.gather(*(one(r) for r in runners))
    return {"held": held, "tally": tally}


def complete_all(
    target: Target, held: list[tuple[tuple[str, str, str], str, str]], report: dict[str, Any], start_at: float
) -> dict[str, Any]:
    """Complete (SUCCEEDED, `report`) every held order, one runner's orders one after the other."""
    return run_timed(lambda: _complete_all(target, held, report, start_at))


async def _complete_all(
    target: Target, held: list[tuple[tuple[str, str, str], str, str]], report: dict[str, Any], start_at: float
) -> dict[str, Any]:
    tally = Tally()
    latencies: list[float] = []
    by_runner: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for runner, order_id, lease in held:
        by_runner.setdefault(runner, []).append((order_id, lease))
    first, last = math.inf, 0.0

    async def one(runner: tuple[str, str, str], orders: list[tuple[str, str]]) -> None:
        nonlocal first, last
        conn = target.runner(runner)
        try:
            for order_id, lease in orders:
                body = {"status": "SUCCEEDED", "report": report, "leaseToken": lease}
                t0 = time.monotonic()
                first = min(first, t0)
                try:
                    answer = await conn.request("POST", f"/v1/runner/orders/{order_id}/complete", body)
                except WireError as exc:
                    tally.exc("complete", exc)
                    continue
                t1 = time.monotonic()
                last = max(last, t1)
                if answer.status == 200:
                    latencies.append(t1 - t0)
                else:
                    tally.answer("complete", answer)
        finally:
            conn.close()

    await sleep_until(start_at)
    await asyncio.gather(*(one(r, o) for r, o in by_runner.items()))
    return {"ok": len(latencies), "latencies": latencies, "first": first, "last": last, "tally": tally}
