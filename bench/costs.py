"""What a completion's ingestion and an admin create cost the server, as ratios measured in one run.

Issue 11, target 5 (completion ingestion): the server CPU of completing a `system.metrics` and a
`system.facts` order with a realistic v2 report must stay ≤ 1.5x a `system.test_ping`'s. The reports
are real: the built-in playbooks are run once on this machine (`ikoma.runner`, as the agent runs
them) before the benchmark starts. For each kind, `--completions` orders are created, claimed and
started (not timed, 8 runners), then completed from a worker process while the server's CPU (and on
PostgreSQL its backends' CPU) is metered: CPU per completion, and its ratio to the ping's.

Issue 11, target 7 (create rate): `POST /v1/orders` (admin key, validated, audited) as fast as 16
keep-alive connections from a worker process get answers, against the yardstick's bare insert
route (bench/yardstick.py) in the same run: orders/s, server CPU per create, and the ratios.

    .venv/bin/python bench/costs.py --backends sqlite,postgresql --completions 1000 --creates 2000

One JSON document on stdout, progress on stderr; bench/README.md explains the fields.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson

import loadgen
from dispatch import (
    PG_ADMIN_URL,
    ServerProcess,
    Tally,
    admin_client,
    create_orders,
    ikoma_server,
    in_workers,
    latency_summary,
    log,
    per_order,
    postgres_reachable,
    ratio,
    runner_tuples,
    setup_fleet,
    split,
    yardstick_server,
)
from meters import CpuMeter

KINDS = ("system.test_ping", "system.metrics", "system.facts")
CREATE_CONNECTIONS = 16


async def live_reports() -> dict[str, dict[str, Any]]:
    """The v2 report of each playbook in KINDS, run for real on this machine as the agent does."""
    from ikoma.runner.agent import build_report, order_status
    from ikoma.runner.execution import ExecutionContext
    from ikoma.runner.playbooks import REGISTRY

    reports = {}
    for key in KINDS:
        ctx = ExecutionContext("bench-costs", {})
        result = await REGISTRY[key](ctx, {})
        status = order_status(result, ctx)
        if status != "SUCCEEDED":
            log(f"costs: {key} ran {status} on this machine; its report is used as it is")
        reports[key] = build_report(result, 1234, ctx.masker)
    return reports


def meter_for(server: ServerProcess) -> CpuMeter:
    return CpuMeter(server.proc.pid if server.proc is not None else None, server.pg_database)


async def completion_costs(
    server: ServerProcess, reports: dict[str, dict[str, Any]], count: int, workers: ProcessPoolExecutor
) -> dict[str, Any]:
    target = loadgen.Target(server.base_url, server.admin_key)
    out: dict[str, Any] = {}
    async with admin_client(server.base_url, server.admin_key, connections=16) as admin:
        runners = await setup_fleet(admin, 8)
        groups = split(runner_tuples(runners), 2)
        for key in KINDS:
            tally = Tally()
            created = await create_orders(admin, runners, count, tally, key)
            parts = await in_workers(
                workers, [functools.partial(loadgen.claim_and_start, target, g, count) for g in groups]
            )
            held = [item for p in parts for item in p["held"]]
            meter = meter_for(server)
            start_at = time.monotonic() + 0.2
            meter.start()
            done = await in_workers(
                workers,
                [
                    functools.partial(loadgen.complete_all, target, held[i::2], reports[key], start_at)
                    for i in range(2)
                ],
            )
            cpu = meter.stop(client_cpu_s=sum(d["cpuSeconds"] for d in done))
            for part in (*parts, *done):
                tally.merge(part["tally"])
            ok = sum(d["ok"] for d in done)
            errors = tally.lines()
            if len(created) != count or ok != count:
                errors.insert(
                    0, f"{count} wanted, {len(created)} created, {len(held)} started, {ok} completed"
                )
            out[key] = {
                "completions": ok,
                "reportBytes": len(orjson.dumps(reports[key])),
                "complete": latency_summary([x for d in done for x in d["latencies"]], (50, 99)),
                "cpu": cpu,
                "serverCpuMsPerCompletion": per_order(cpu.get("serverCpuSeconds"), ok),
                "databaseCpuMsPerCompletion": per_order(cpu.get("databaseCpuSeconds"), ok),
                "errors": errors,
            }
            log(f"costs: complete {key}: {out[key]['serverCpuMsPerCompletion']} ms server CPU each")
    ping = out[KINDS[0]]["serverCpuMsPerCompletion"]
    for key in KINDS[1:]:
        # issue 11 target 5: <= 1.5
        out[key]["vsPing"] = ratio(out[key]["serverCpuMsPerCompletion"], ping)
    return out


async def create_rate(
    server: ServerProcess, count: int, workers: ProcessPoolExecutor, yardstick: bool = False
) -> dict[str, Any]:
    target = loadgen.Target(server.base_url, server.admin_key)
    async with admin_client(server.base_url, server.admin_key, connections=16) as admin:
        runners = await setup_fleet(admin, 8)
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/v1/orders", {"serverId": runners[i % 8].server_id, "playbookKey": KINDS[0]})
        for i in range(count)
    ]
    meter = meter_for(server)
    start_at = time.monotonic() + 0.2
    meter.start()
    (done,) = await in_workers(
        workers, [functools.partial(loadgen.hammer, target, calls, CREATE_CONNECTIONS, start_at)]
    )
    cpu = meter.stop(client_cpu_s=done["cpuSeconds"])
    tally = Tally()
    tally.merge(done["tally"])
    seconds = done["last"] - done["first"] if done["ok"] else 0.0
    result = {
        "creates": done["ok"],
        "connections": CREATE_CONNECTIONS,
        "seconds": round(seconds, 3),
        "ordersPerSecond": round(done["ok"] / seconds, 1) if seconds > 0 else None,
        "latency": latency_summary(done["latencies"], (50, 99)),
        "cpu": cpu,
        "serverCpuMsPerCreate": per_order(cpu.get("serverCpuSeconds"), done["ok"]),
        "databaseCpuMsPerCreate": per_order(cpu.get("databaseCpuSeconds"), done["ok"]),
        "errors": tally.lines(),
    }
    who = "yardstick" if yardstick else "ikoma"
    log(f"costs: {who} create: {result['ordersPerSecond']} orders/s, {result['serverCpuMsPerCreate']} ms CPU")
    return result


def run_backend(
    backend: str, args: argparse.Namespace, reports: dict[str, dict[str, Any]], workers: ProcessPoolExecutor
) -> dict[str, Any]:
    with ikoma_server(backend) as server:
        ingestion = asyncio.run(completion_costs(server, reports, args.completions, workers))
    with ikoma_server(backend) as server:
        create = asyncio.run(create_rate(server, args.creates, workers))
    with yardstick_server(backend) as bare:
        bare_create = asyncio.run(create_rate(bare, args.creates, workers, yardstick=True))
    return {
        "backend": backend,
        "ingestion": ingestion,
        "create": {
            "ikoma": create,
            "yardstick": bare_create,
            # issue 11 target 7: >= 0.5
            "createVsYardstick": ratio(create["ordersPerSecond"], bare_create["ordersPerSecond"]),
            "serverCpuVsYardstick": ratio(
                bare_create["serverCpuMsPerCreate"], create["serverCpuMsPerCreate"]
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list of sqlite,postgresql")
    parser.add_argument("--completions", type=int, default=1000, help="completions of each kind")
    parser.add_argument("--creates", type=int, default=2000, help="orders created for the create rate")
    args = parser.parse_args(argv)
    if not 10 <= args.completions <= 100_000 or not 10 <= args.creates <= 100_000:
        parser.error("--completions and --creates must be 10..100000")
    reports = asyncio.run(live_reports())
    results: list[dict[str, Any]] = []
    workers = loadgen.pool(2)
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            if backend == "postgresql" and (why := postgres_reachable()) is not None:
                log(f"postgresql: skipped, {PG_ADMIN_URL} is unreachable ({why})")
                results.append({"backend": backend, "skipped": f"PostgreSQL unreachable: {why}"})
                continue
            results.append(run_backend(backend, args, reports, workers))
    finally:
        workers.shutdown()
    document = {"costs": {"cpus": os.cpu_count(), "results": results}}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    failed = any(
        r.get("errors")
        for result in results
        for r in [*result.get("ingestion", {}).values(), *result.get("create", {}).values()]
        if isinstance(r, dict)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
