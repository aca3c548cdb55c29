"""Two replicas on one PostgreSQL: an order created on replica B → claimed by a runner long-polling A.

Issue 12 (scope 4, measure): the wake-up crosses processes through PostgreSQL's NOTIFY (one listening
connection per replica, services/broadcast.py), not the once-a-second doorbell read. The benchmark
starts two real `ikoma serve` on one new PostgreSQL database, attaches one runner, and `--orders` times:
holds a `claim-next?wait=30` open on A, creates an order on B (`POST /v1/orders`, admin, audited) and
takes the time from sending the create until A's poll answers with the order (create → claim), and from
the create's answer until then (answer → claim: the wake-up's own share). Each claimed order is then
started and completed, so the reconciler never requeues it. The same is measured with both calls on A
(`--same` orders) for comparison, and A's metrics tell what woke each claim (broadcast or doorbell).

    .venv/bin/python bench/replicas.py --orders 1000

One JSON document on stdout, progress on stderr; traffic to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from dispatch import (
    PLAYBOOK_KEY,
    Runner,
    ServerProcess,
    Tally,
    admin_client,
    expect,
    latency_summary,
    log,
    post_json,
    postgres_database,
    setup_fleet,
    start_and_complete,
)

LONG_POLL_S = 30
SETTLE_S = 0.02  # between orders: the runner's next poll is waiting again


def metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def wakeups(client: httpx.AsyncClient) -> dict[str, float]:
    text = (await client.get("/metrics")).text
    return {
        source: metric(text, f'ikoma_claim_wakeups_total{{source="{source}"}}')
        for source in ("broadcast", "local", "doorbell")
    }


async def run_orders(
    poll_on: httpx.AsyncClient, create_on: httpx.AsyncClient, runner: Runner, count: int
) -> dict[str, Any]:
    """`count` rounds of: poll waiting on one replica, order created on `create_on`, claimed."""
    headers = {"x-runner-id": runner.id, "x-runner-token": runner.token}
    body = {"serverId": runner.server_id, "playbookKey": PLAYBOOK_KEY}
    create_to_claim: list[float] = []
    answer_to_claim: list[float] = []
    tally = Tally()
    finishing: list[asyncio.Task[bool]] = []
    for i in range(count):
        poll = asyncio.create_task(
            poll_on.post(f"/runner/orders/claim-next?wait={LONG_POLL_S}", headers=headers)
        )
        await asyncio.sleep(SETTLE_S)
        sent = time.monotonic()
        order = expect(await post_json(create_on, "/orders", body), 201, "POST /orders")["order"]
        answered = time.monotonic()
        resp = await asyncio.wait_for(poll, timeout=LONG_POLL_S + 5)
        claimed_at = time.monotonic()
        claimed = expect(resp, 200, "claim-next")
        if claimed["id"] != order["id"]:
            raise RuntimeError(f"claimed {claimed['id']}, created {order['id']}")
        create_to_claim.append(claimed_at - sent)
        answer_to_claim.append(claimed_at - answered)
        finishing.append(asyncio.create_task(start_and_complete(poll_on, claimed, tally)))
        if (i + 1) % 200 == 0:
            log(f"replicas: {i + 1}/{count}")
    await asyncio.gather(*finishing)
    return {
        "orders": count,
        "createToClaim": latency_summary(sorted(create_to_claim), (50, 99), with_max=True),
        "createAnswerToClaim": latency_summary(sorted(answer_to_claim), (50, 99), with_max=True),
    }


async def measure(a: ServerProcess, b: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    async with (
        admin_client(a.base_url, a.admin_key, connections=4) as admin_a,
        admin_client(b.base_url, b.admin_key, connections=4) as admin_b,
    ):
        runner = (await setup_fleet(admin_b, 1))[0]
        async with httpx.AsyncClient(
            base_url=f"{a.base_url}/v1",
            timeout=LONG_POLL_S + 30,
            trust_env=False,
            headers={"x-runner-id": runner.id, "x-runner-token": runner.token},
        ) as runner_a:
            metrics_a = httpx.AsyncClient(base_url=a.base_url, trust_env=False)
            before = await wakeups(metrics_a)
            log(f"replicas: {args.orders} orders created on B, claimed on A")
            cross = await run_orders(runner_a, admin_b, runner, args.orders)
            middle = await wakeups(metrics_a)
            log(f"replicas: {args.same} orders created and claimed on A")
            same = await run_orders(runner_a, admin_a, runner, args.same)
            after = await wakeups(metrics_a)
            await metrics_a.aclose()
    return {
        "crossReplica": {**cross, "wokenBy": {k: middle[k] - before[k] for k in before}},
        "sameReplica": {**same, "wokenBy": {k: after[k] - middle[k] for k in middle}},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--same", type=int, default=200)
    args = parser.parse_args()
    if not 1 <= args.orders <= 20_000 or not 0 <= args.same <= 20_000:
        parser.error("--orders 1..20000, --same 0..20000")
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ikoma-replicas-")))
        url = stack.enter_context(postgres_database())
        admin_key = secrets.token_urlsafe(24)
        servers = []
        for name in ("a", "b"):  # one after the other: A migrates the database, then B finds it current
            (data_dir / name).mkdir()
            server = ServerProcess(url, data_dir / name, admin_key=admin_key)
            server.start()
            stack.callback(server.stop)
            server.wait_ready()
            servers.append(server)
        result = asyncio.run(measure(servers[0], servers[1], args))
    sys.stdout.write(
        orjson.dumps({"backend": "postgresql", **result}, option=orjson.OPT_INDENT_2).decode() + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
