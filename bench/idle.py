"""Idle runners: what N runners long-polling `claim-next?wait=30` with nothing to do cost the server.

A fleet of agents is mostly this load (issue 11, target 3). The benchmark starts a real `ikoma serve`
on SQLite (or `--backend postgresql`), registers N runners each on its own server, holds one
long-poll per runner open (re-issued as each one ends; the first polls are spread evenly over one
poll's 30 s, as a fleet's are, so the server sees N/30 new polls a second), waits until all are
waiting, then measures for `--seconds` (default 30: every runner polls again once): the server
process's CPU (% of one core), its RSS, the polls answered meanwhile, and the latency of one order
created for one of those runners until its poll answers with it (create → claim, `--probes` times).

    .venv/bin/python bench/idle.py --runners 1000 --seconds 30

One JSON document on stdout, progress on stderr; traffic to 127.0.0.1 only, bounded in count and time.
To compare with an older checkout, run it with `PYTHONPATH=<that checkout>/src`: the server process
inherits it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from dispatch import (
    PLAYBOOK_KEY,
    CpuMeter,
    Runner,
    ServerProcess,
    admin_client,
    expect,
    latency_summary,
    log,
    post_json,
    postgres_database,
    setup_fleet,
)

LONG_POLL_S = 30
CONNECTIONS_PER_CLIENT = 100


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def poll_forever(
    client: httpx.AsyncClient,
    runner: Runner,
    waiting: set[str],
    answers: dict[str, asyncio.Future[float]],
    *,
    delay: float,
    polls: list[int],
) -> None:
    headers = {"x-runner-id": runner.id, "x-runner-token": runner.token}
    await asyncio.sleep(delay)
    while True:
        waiting.add(runner.id)
        try:
            resp = await client.post(f"/runner/orders/claim-next?wait={LONG_POLL_S}", headers=headers)
        finally:
            waiting.discard(runner.id)
        polls[0] += 1
        if resp.status_code == 200:
            order = orjson.loads(resp.content)
            future = answers.pop(order["id"], None)
            if future is not None and not future.done():
                future.set_result(time.monotonic())
        elif resp.status_code != 204:
            raise RuntimeError(f"claim-next answered {resp.status_code}: {resp.text[:200]}")


async def seed_fleet(database_url: str, count: int) -> list[Runner]:
    """`count` servers each with its own runner, written straight into the database (seconds, where
    registering 10,000 over the audited admin API takes many minutes on a busy machine)."""
    from sqlalchemy import insert

    from ikoma.domain import tokens
    from ikoma.storage.database import Database
    from ikoma.storage.tables import runners as runners_table
    from ikoma.storage.tables import servers as servers_table

    tag = secrets.token_hex(3)
    fleet: list[Runner] = []
    runner_rows: list[dict[str, Any]] = []
    server_rows: list[dict[str, Any]] = []
    for i in range(count):
        issued = tokens.issue("ikr")
        runner_id, server_id = str(uuid.uuid4()), str(uuid.uuid4())
        runner_rows.append(
            {
                "id": runner_id,
                "name": f"idle-runner-{tag}-{i}",
                "token_hash": issued.hash,
                "token_prefix": issued.prefix,
                "capabilities": [],
            }
        )
        server_rows.append(
            {
                "id": server_id,
                "name": f"idle-{tag}-{i}",
                "hostname": f"idle-{i}.invalid",
                "port": 22,
                "labels": {},
                "os_family": "debian",
                "runner_id": runner_id,
            }
        )
        fleet.append(Runner(id=runner_id, token=issued.secret, server_id=server_id))
    db = Database(database_url)
    try:
        async with db.write() as tx:
            await tx.execute(insert(runners_table), runner_rows)
            await tx.execute(insert(servers_table), server_rows)
    finally:
        await db.dispose()
    return fleet


async def measure(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    async with admin_client(server.base_url, server.admin_key, connections=16) as admin:
        log(f"idle: registering {args.runners} runners ({args.register})")
        runners: list[Runner] = []
        if args.register == "seed":
            runners = await seed_fleet(server.database_url, args.runners)
        while len(runners) < args.runners:  # 16 registrations at a time, in slices so progress shows
            slice_size = min(800, args.runners - len(runners))
            parts = [slice_size // 16 + (1 if i < slice_size % 16 else 0) for i in range(16)]
            for fleet in await asyncio.gather(*(setup_fleet(admin, n) for n in parts if n)):
                runners += fleet
            log(f"idle: {len(runners)} runners")
        # httpx scans its whole pool for every request: many small pools keep the client fast
        per_client = CONNECTIONS_PER_CLIENT
        limits = httpx.Limits(max_connections=per_client + 1, max_keepalive_connections=per_client + 1)
        async with contextlib.AsyncExitStack() as clients_stack:
            clients = [
                await clients_stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=f"{server.base_url}/v1",
                        limits=limits,
                        timeout=LONG_POLL_S + 30,
                        trust_env=False,
                    )
                )
                for _ in range(0, len(runners), per_client)
            ]
            waiting: set[str] = set()
            answers: dict[str, asyncio.Future[float]] = {}
            polls = [0]
            tasks = [
                asyncio.create_task(
                    poll_forever(
                        clients[i // per_client],
                        r,
                        waiting,
                        answers,
                        delay=i * LONG_POLL_S / len(runners),
                        polls=polls,
                    )
                )
                for i, r in enumerate(runners)
            ]
            deadline = time.monotonic() + LONG_POLL_S + 120
            while len(waiting) < len(runners) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled, not signalled: a count across N tasks
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # the polls reached the server and wait there
            waiting_then = len(waiting)
            log(f"idle: {waiting_then} polls waiting; measuring {args.seconds} s")
            meter = CpuMeter(server.proc.pid if server.proc is not None else None)
            polls_before = polls[0]
            meter.start()
            await asyncio.sleep(args.seconds)
            cpu = meter.stop()
            polls_answered = polls[0] - polls_before
            rss = rss_mb(server.proc.pid) if server.proc is not None else None
            latencies: list[float] = []
            creates: list[float] = []
            for probe in range(args.probes):
                target = runners[(probe * 7919) % len(runners)]
                future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                sent = time.monotonic()
                body = {"serverId": target.server_id, "playbookKey": PLAYBOOK_KEY}
                order = expect(await post_json(admin, "/orders", body), 201, "POST /orders")["order"]
                creates.append(time.monotonic() - sent)
                answers[order["id"]] = future
                with contextlib.suppress(TimeoutError):
                    latencies.append(await asyncio.wait_for(future, timeout=LONG_POLL_S + 5) - sent)
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "runners": len(runners),
        "waiting": waiting_then,
        "seconds": args.seconds,
        "serverCpuPercent": cpu.get("serverPercent"),
        "machineBusyPercent": cpu.get("machineBusyPercent"),
        "serverRssMb": rss,
        "pollsAnsweredPerSecond": round(polls_answered / args.seconds, 1),
        "createToClaim": latency_summary(sorted(latencies), (50, 99), with_max=True),
        "createAnswered": latency_summary(sorted(creates), (50, 99), with_max=True),
        "probesAnswered": f"{len(latencies)}/{args.probes}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runners", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--register",
        choices=["seed", "api"],
        default="seed",
        help="runners written straight into the database (fast) or registered over the admin API",
    )
    args = parser.parse_args()
    if not 1 <= args.runners <= 20_000 or not 1 <= args.seconds <= 300 or not 0 <= args.probes <= 200:
        parser.error("--runners 1..20000, --seconds 1..300, --probes 0..200")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ikoma-idle-")))
        if args.backend == "sqlite":
            url = f"sqlite:///{data_dir / 'idle.db'}"
        else:
            url = stack.enter_context(postgres_database())
        server = ServerProcess(url, data_dir, admin_key=secrets.token_urlsafe(24))
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        result = asyncio.run(measure(server, args))
    document = {"backend": args.backend, "pythonpath": os.environ.get("PYTHONPATH"), **result}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
