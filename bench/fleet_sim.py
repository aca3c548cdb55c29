"""The simulated fleet of bench/fleet.py, run in worker processes (see loadgen.py for the conventions).

A simulated runner is what the agent does, minus running the playbook: heartbeat every
`heartbeat_s`, long-poll claim-next in between (the wait cut so that the next heartbeat is on time),
and for a claimed order start then complete it at once with the given report. One keep-alive
connection per runner; the first call of each is spread over `ramp_s` so that N runners do not all
connect in the same instant. Times are `time.monotonic()` (one clock for all processes).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from loadgen import Tally, Target, run_timed, sleep_until
from wire import Answer, WireError


def register(target: Target, names: list[str], connections: int) -> dict[str, Any]:
    """A runner (POST /v1/runners) and its server (POST /v1/servers with runnerId) per name:
    {"runners": [(runner id, token, server id)], "tally"}."""
    return run_timed(lambda: _register(target, names, connections))


async def _register(target: Target, names: list[str], connections: int) -> dict[str, Any]:
    tally = Tally()
    made: list[tuple[str, str, str]] = []
    pending = list(reversed(names))

    async def worker() -> None:
        conn = target.admin()
        try:
            while pending:
                name = pending.pop()
                try:
                    runner = await conn.request("POST", "/v1/runners", {"name": f"{name}-runner"})
                    if runner.status != 201:
                        tally.answer("POST /v1/runners", runner)
                        continue
                    created = runner.json()
                    body = {"name": name, "hostname": f"{name}.invalid", "runnerId": created["id"]}
                    server = await conn.request("POST", "/v1/servers", body)
                except WireError as exc:
                    tally.exc("register", exc)
                    continue
                if server.status != 201:
                    tally.answer("POST /v1/servers", server)
                    continue
                made.append((created["id"], created["token"], server.json()["id"]))
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"runners": made, "tally": tally}


def simulate(
    target: Target,
    runners: list[tuple[str, str, str]],
    report: dict[str, Any],
    begin_at: float,
    ramp_s: float,
    end_at: float,
    heartbeat_s: float,
    long_poll_s: float,
) -> dict[str, Any]:
    """Run the runners from `begin_at` (spread over `ramp_s`) to `end_at`: {"completed": {orderId:
    complete answered}, "heartbeats", "polls", "tally"}."""
    return run_timed(
        lambda: _simulate(target, runners, report, begin_at, ramp_s, end_at, heartbeat_s, long_poll_s)
    )


async def _simulate(
    target: Target,
    runners: list[tuple[str, str, str]],
    report: dict[str, Any],
    begin_at: float,
    ramp_s: float,
    end_at: float,
    heartbeat_s: float,
    long_poll_s: float,
) -> dict[str, Any]:
    tally = Tally()
    completed: dict[str, float] = {}
    counts = {"heartbeats": 0, "polls": 0}
    heartbeat_body = {"version": "bench-fleet", "hostname": "bench.invalid", "capabilities": []}
    draw = random.Random(len(runners))

    def fault(call: str, answer: Answer) -> None:
        tally.answer(call, answer)

    async def one(runner: tuple[str, str, str], first_at: float) -> None:
        conn = target.runner(runner)
        await sleep_until(first_at)
        next_heartbeat = time.monotonic()
        try:
            while time.monotonic() < end_at:
                now = time.monotonic()
                try:
                    if now >= next_heartbeat:
                        next_heartbeat = now + heartbeat_s
                        counts["heartbeats"] += 1
                        answer = await conn.request("POST", "/v1/runner/heartbeat", heartbeat_body)
                        if answer.status != 200:
                            fault("heartbeat", answer)
                    wait = max(1.0, min(long_poll_s, next_heartbeat - time.monotonic()))
                    counts["polls"] += 1
                    answer = await conn.request("POST", f"/v1/runner/orders/claim-next?wait={wait:.0f}")
                    if answer.status == 204:
                        continue
                    if answer.status != 200:
                        fault("claim", answer)
                        await asyncio.sleep(1.0)
                        continue
                    order = answer.json()
                    lease = {"leaseToken": order["leaseToken"]}
                    answer = await conn.request("POST", f"/v1/runner/orders/{order['id']}/start", lease)
                    if answer.status != 200:
                        fault("start", answer)
                        continue
                    body = {"status": "SUCCEEDED", "report": report, **lease}
                    answer = await conn.request("POST", f"/v1/runner/orders/{order['id']}/complete", body)
                    if answer.status == 200:
                        completed[order["id"]] = time.monotonic()
                    else:
                        fault("complete", answer)
                except WireError as exc:
                    tally.exc("runner", exc)
                    await asyncio.sleep(1.0)
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(one(r, begin_at + draw.random() * ramp_s)) for r in runners]
    await sleep_until(end_at)
    for task in tasks:  # long-polls still parked at the end are abandoned
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"completed": completed, **counts, "tally": tally}
