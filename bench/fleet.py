"""Fleet simulation (`make bench-fleet`): the largest fleet one `ikoma serve` keeps up with.

Issue 11, target 6: N simulated runners, each heartbeating every 30 s and long-polling
`claim-next` in between, and one `system.metrics` order per server per minute completed with a
realistic report (the built-in playbook run once on this machine). A step of N holds when, over its
window, create → SUCCEEDED p99 ≤ 1 s, no answer was 5xx, no call failed in transport, every order
created was completed and the creates kept their rate. N goes up step by step (`--steps`, default
1,000, 2,000, 5,000, 10,000) on one server process, registering the runners each step adds, until a
step fails or the next one would not fit in `--budget` seconds. Target: N ≥ 10,000 on SQLite.

Load: the runners are split over `--processes` worker processes (bench/fleet_sim.py, one
keep-alive connection per runner, first calls spread over `--ramp` seconds); one more process creates
the orders at N / 60 per second, round-robin over the servers (open loop, bench/loadgen.py).
create → SUCCEEDED = the simulated runner's complete answer received - the create request sent
(one monotonic clock for every process); the playbook's own run time is not simulated.

    .venv/bin/python bench/fleet.py --steps 1000,2000,5000,10000 --seconds 60

One JSON document on stdout, progress on stderr; all traffic to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

import fleet_sim
import loadgen
from costs import live_reports
from dispatch import (
    PG_ADMIN_URL,
    ServerProcess,
    Tally,
    ikoma_server,
    in_workers,
    latency_summary,
    log,
    postgres_reachable,
    split,
)
from meters import CpuMeter, rss_mb

PLAYBOOK = "system.metrics"
ORDERS_EVERY_S = 60.0
P99_LIMIT_S = 1.0
REGISTER_CONNECTIONS = 16
STRAGGLER_S = 5.0


async def grow(
    server: ServerProcess, fleet: list[tuple[str, str, str]], size: int, workers: ProcessPoolExecutor
) -> Tally:
    """Register runners (and their servers) until the fleet has `size`."""
    tally = Tally()
    target = loadgen.Target(server.base_url, server.admin_key)
    tag = secrets.token_hex(3)
    names = [f"fleet-{tag}-{i}" for i in range(size - len(fleet))]
    if not names:
        return tally
    log(f"fleet: registering {len(names)} runners")
    t0 = time.monotonic()
    parts = await in_workers(
        workers,
        [
            functools.partial(fleet_sim.register, target, g, REGISTER_CONNECTIONS // 2)
            for g in split(names, 2)
        ],
    )
    for part in parts:
        fleet.extend(part["runners"])
        tally.merge(part["tally"])
    log(f"fleet: {len(fleet)} runners ({time.monotonic() - t0:.0f} s to register)")
    return tally


async def step(
    server: ServerProcess,
    fleet: list[tuple[str, str, str]],
    report: dict[str, Any],
    args: argparse.Namespace,
    workers: ProcessPoolExecutor,
) -> dict[str, Any]:
    """One window with the whole fleet running and metrics orders flowing."""
    n = len(fleet)
    target = loadgen.Target(server.base_url, server.admin_key)
    rate = n / ORDERS_EVERY_S
    total = max(1, round(rate * args.seconds))
    begin_at = time.monotonic() + 1.0
    t0 = begin_at + args.ramp + 2.0  # every runner has polled once before the first order
    stop_at = t0 + args.seconds + 1.0
    end_at = t0 + args.seconds + STRAGGLER_S
    servers = [r[2] for r in fleet]
    log(f"fleet: step {n} runners, {rate:.1f} orders/s for {args.seconds:g} s (ramp {args.ramp:g} s)")
    meter = CpuMeter(server.proc.pid if server.proc is not None else None, server.pg_database)

    async def metered_production() -> dict[str, Any]:
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        meter.start()
        connections = max(8, min(128, round(rate / 5)))
        (produced,) = await in_workers(
            workers,
            [
                functools.partial(
                    loadgen.produce, target, servers, PLAYBOOK, rate, total, t0, stop_at, connections
                )
            ],
        )
        return produced

    simulation = in_workers(
        workers,
        [
            functools.partial(
                fleet_sim.simulate,
                target,
                group,
                report,
                begin_at,
                args.ramp,
                end_at,
                args.heartbeat,
                args.long_poll,
            )
            for group in split(fleet, args.processes)
        ],
    )
    produced, parts = await asyncio.gather(metered_production(), simulation)
    cpu = meter.stop(client_cpu_s=0.0)
    rss = rss_mb(server.proc.pid) if server.proc is not None else None
    tally = Tally()
    tally.merge(produced["tally"])
    completed: dict[str, float] = {}
    for part in parts:
        tally.merge(part["tally"])
        completed.update(part["completed"])
    sent: dict[str, float] = produced["sent"]
    latencies = [completed[oid] - t for oid, t in sent.items() if oid in completed]
    unfinished = len(sent.keys() - completed.keys())
    span = produced["last"] - produced["first"]
    achieved = (len(sent) - 1) / span if len(sent) > 1 and span > 0 else None
    summary = latency_summary(latencies, (50, 95, 99), with_max=True)
    transport = sum(n for key, n in tally.counts.items() if "HTTP" not in key)
    holds = (
        bool(latencies)
        and summary["p99Ms"] <= P99_LIMIT_S * 1000
        and tally.server_errors == 0
        and transport == 0
        and unfinished == 0
        and len(sent) >= 0.95 * total
    )
    result = {
        "runners": n,
        "targetRate": round(rate, 2),
        "targetOrders": total,
        "created": len(sent),
        "achievedRate": round(achieved, 2) if achieved is not None else None,
        "completed": len(latencies),
        "unfinished": unfinished,
        "createToSucceeded": summary,
        "heartbeats": sum(p["heartbeats"] for p in parts),
        "polls": sum(p["polls"] for p in parts),
        "serverCpuPercent": cpu.get("serverPercent"),
        "databaseCpuPercent": cpu.get("databasePercent"),
        "machineBusyPercent": cpu.get("machineBusyPercent"),
        "serverRssMb": rss,
        "serverErrors": tally.server_errors,
        "holds": holds,
        "errors": tally.lines(),
    }
    log(
        f"fleet: {n} runners: p99 {summary['p99Ms']} ms, {len(latencies)}/{total} completed, "
        f"server CPU {cpu.get('serverPercent')} %, {'holds' if holds else 'does NOT hold'}"
    )
    return result


async def run(server: ServerProcess, args: argparse.Namespace, report: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    fleet: list[tuple[str, str, str]] = []
    steps: list[dict[str, Any]] = []
    stopped = "every step ran"
    per_runner_s = 0.05  # registration time of one runner; measured after the first step
    workers = loadgen.pool(args.processes + 1)
    try:
        for size in args.steps:
            # the next step: registration + ramp + window + stragglers
            needed = (size - len(fleet)) * per_runner_s + args.ramp + args.seconds + STRAGGLER_S + 10
            if time.monotonic() - started + needed > args.budget:
                stopped = f"step {size} would not fit in --budget {args.budget:g} s"
                break
            registering = time.monotonic()
            adding = size - len(fleet)
            registration = await grow(server, fleet, size, workers)
            if adding > 0:
                per_runner_s = (time.monotonic() - registering) / adding
            if registration.counts:
                stopped = f"registration of step {size} failed: {registration.lines()[:3]}"
                break
            result = await step(server, fleet, report, args, workers)
            steps.append(result)
            if not result["holds"] and not args.keep_going:
                stopped = f"step {size} does not hold"
                break
    finally:
        workers.shutdown()
    # the largest N below which every step held
    held = [s["runners"] for s in itertools.takewhile(lambda s: s["holds"], steps)]
    return {
        "largestHeld": max(held) if held else None,
        "stopped": stopped,
        "seconds": round(time.monotonic() - started, 1),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--steps", default="1000,2000,5000,10000", help="fleet sizes, in order")
    parser.add_argument("--seconds", type=float, default=60.0, help="window of each step (default 60)")
    parser.add_argument("--ramp", type=float, default=20.0, help="first calls spread over this (s)")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="runner heartbeat interval (s)")
    parser.add_argument("--long-poll", type=float, default=30.0, help="claim-next wait (s)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for the runners")
    parser.add_argument("--budget", type=float, default=1200.0, help="stop stepping after this (s)")
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="run the next steps after one that does not hold (the trend)",
    )
    args = parser.parse_args(argv)
    try:
        args.steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        parser.error("--steps must be a comma list of integers")
    if not args.steps or any(not 1 <= s <= 20_000 for s in args.steps) or args.steps != sorted(args.steps):
        parser.error("--steps: increasing sizes in 1..20000 (one connection a runner)")
    if not 5 <= args.seconds <= 3600 or not 1 <= args.processes <= 16 or not 0 <= args.ramp <= 300:
        parser.error("--seconds 5..3600, --processes 1..16, --ramp 0..300")
    if args.backend == "postgresql" and (why := postgres_reachable()) is not None:
        log(f"postgresql: {PG_ADMIN_URL} is unreachable ({why})")
        sys.stdout.write(
            orjson.dumps({"fleet": {"skipped": f"PostgreSQL unreachable: {why}"}}).decode() + "\n"
        )
        return 0
    report = asyncio.run(live_reports())[PLAYBOOK]
    with ikoma_server(args.backend) as server:
        result = asyncio.run(run(server, args, report))
        if server.proc is not None and server.proc.poll() is not None:
            result["failed"] = f"the server exited:\n{server.log_tail()}"
        elif any(s["errors"] for s in result["steps"]):
            result["serverLogTail"] = server.log_tail(30).splitlines()
    document = {
        "fleet": {
            "backend": args.backend,
            "cpus": os.cpu_count(),
            "config": {
                "steps": args.steps,
                "windowSeconds": args.seconds,
                "rampSeconds": args.ramp,
                "heartbeatSeconds": args.heartbeat,
                "longPollSeconds": args.long_poll,
                "metricsOrderEverySeconds": ORDERS_EVERY_S,
                "p99LimitMs": P99_LIMIT_S * 1000,
                "processes": args.processes,
            },
            **result,
        }
    }
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if "failed" not in result else 1


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
