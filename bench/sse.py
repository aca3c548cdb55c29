"""SSE fan-out: one `ikoma serve` process with N subscribers on `GET /v1/events/stream` (issue 12).

Starts a real server on SQLite (or `--backend postgresql`), opens `--subscribers` SSE streams from
`--workers` client processes (raw asyncio sockets: a light client, so the figure is the server's),
waits until every stream is live (its `: live` comment), then creates `--events` orders one every
`--interval` seconds. Each order writes one `order.created` event that every subscriber receives. The
latency of one delivery is the subscriber's wall clock at receipt minus the event's `ts` (the
database clock of the writing transaction, same machine): event → delivered, p50/p99/max over every
(event, subscriber) pair. Also: the server's RSS before the subscribers, with them idle, and at the end,
and its CPU while the events flow.

    .venv/bin/python bench/sse.py --subscribers 1000 --events 50

One JSON document on stdout, progress on stderr; traffic to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from dispatch import (
    LOOPBACK,
    PLAYBOOK_KEY,
    CpuMeter,
    ServerProcess,
    admin_client,
    expect,
    latency_summary,
    log,
    post_json,
    postgres_database,
)
from idle import rss_mb

CONNECT_SLICE = 50  # connections opened at once per worker (the server's accept backlog is 2048)
LIVE_TIMEOUT_S = 120.0
DELIVERY_TIMEOUT_S = 60.0


async def subscribe(
    port: int, admin_key: str, server_id: str, expected: int, live: asyncio.Event, out: list[float]
) -> int:
    """One SSE stream over a raw socket: sets `live` once caught up, then records the latency of each
    event until `expected` arrived; returns how many arrived."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    path = f"/v1/events/stream?kind=order.created&serverId={server_id}"
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nX-Api-Key: {admin_key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream answered {head[:200]!r}")
    pending, received = b"", 0
    try:
        while received < expected:
            size = int((await reader.readline()).strip(), 16)  # chunked transfer encoding
            if size == 0:
                raise RuntimeError("the server ended the stream")
            pending += await reader.readexactly(size)
            await reader.readexactly(2)
            while b"\n\n" in pending:
                message, pending = pending.split(b"\n\n", 1)
                if message == b": live":
                    live.set()
                for line in message.split(b"\n"):
                    if line.startswith(b"data: "):
                        now = time.time()
                        ts = orjson.loads(line[6:])["ts"]
                        out.append(now - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
                        received += 1
                    elif line.startswith(b"event: stream.lagging"):
                        raise RuntimeError("a subscriber was told it lags")
    finally:
        writer.close()
    return received


async def worker_main(
    port: int, admin_key: str, server_id: str, count: int, expected: int, pipe: Connection
) -> None:
    latencies: list[float] = []
    lives = [asyncio.Event() for _ in range(count)]
    tasks: list[asyncio.Task[int]] = []
    for start in range(0, count, CONNECT_SLICE):
        for live in lives[start : start + CONNECT_SLICE]:
            tasks.append(
                asyncio.create_task(subscribe(port, admin_key, server_id, expected, live, latencies))
            )
        await asyncio.gather(*(live.wait() for live in lives[start : start + CONNECT_SLICE]))
    pipe.send(("live", count))
    cpu0 = time.process_time()
    done, pending = await asyncio.wait(tasks, timeout=DELIVERY_TIMEOUT_S + expected * 5)
    for task in pending:
        task.cancel()
    errors = [str(t.exception()) for t in done if t.exception() is not None]
    pipe.send(("done", {"latencies": latencies, "errors": errors[:5], "cpuS": time.process_time() - cpu0}))


def worker(port: int, admin_key: str, server_id: str, count: int, expected: int, pipe: Connection) -> None:
    asyncio.run(worker_main(port, admin_key, server_id, count, expected, pipe))


async def produce(server: ServerProcess, server_id: str, args: argparse.Namespace) -> None:
    async with admin_client(server.base_url, server.admin_key, connections=2) as admin:
        for _ in range(args.events):
            body = {"serverId": server_id, "playbookKey": PLAYBOOK_KEY}
            expect(await post_json(admin, "/orders", body), 201, "POST /orders")
            await asyncio.sleep(args.interval)


async def make_server(server: ServerProcess) -> str:
    async with admin_client(server.base_url, server.admin_key, connections=2) as admin:
        name = f"sse-bench-{secrets.token_hex(4)}"
        created = expect(
            await post_json(admin, "/servers", {"name": name, "hostname": name}), 201, "POST /servers"
        )
    return str(created["id"])


def metric(server: ServerProcess, name: str) -> float | None:
    import httpx

    for line in httpx.get(f"{server.base_url}/metrics", timeout=30, trust_env=False).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def measure(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    assert server.proc is not None
    pid = server.proc.pid
    server_id = asyncio.run(make_server(server))
    rss_before = rss_mb(pid)
    shares = [
        args.subscribers // args.workers + (1 if i < args.subscribers % args.workers else 0)
        for i in range(args.workers)
    ]
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for share in shares:
        ours, theirs = context.Pipe()
        proc = context.Process(
            target=worker,
            args=(server.port, server.admin_key, server_id, share, args.events, theirs),
            daemon=True,
        )
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    try:
        log(f"sse: opening {args.subscribers} streams from {args.workers} processes")
        for pipe in pipes:
            if not pipe.poll(LIVE_TIMEOUT_S):
                raise RuntimeError(f"streams not live after {LIVE_TIMEOUT_S} s:\n{server.log_tail()}")
            pipe.recv()
        subscribed = metric(server, "ikoma_sse_subscribers")
        time.sleep(2)
        rss_idle = rss_mb(pid)
        log(f"sse: {subscribed:.0f} subscribers live; {args.events} events, one every {args.interval} s")
        meter = CpuMeter(pid, server.pg_database)
        meter.start()
        asyncio.run(produce(server, server_id, args))
        results = []
        for pipe in pipes:
            if not pipe.poll(DELIVERY_TIMEOUT_S + args.events * 5):
                raise RuntimeError("deliveries not complete in time")
            results.append(pipe.recv()[1])
        cpu = meter.stop(client_cpu_s=sum(r["cpuS"] for r in results))
        rss_after = rss_mb(pid)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "subscribers": args.subscribers,
        "subscribedGauge": subscribed,
        "events": args.events,
        "intervalS": args.interval,
        "deliveries": f"{len(latencies)}/{args.subscribers * args.events}",
        "eventToDelivered": latency_summary(latencies, (50, 99), with_max=True),
        "serverRssMb": {"before": rss_before, "subscribedIdle": rss_idle, "after": rss_after},
        "rssPerSubscriberKb": (
            None
            if rss_before is None or rss_idle is None
            else round((rss_idle - rss_before) * 1024 / args.subscribers, 1)
        ),
        "cpu": cpu,
        "errors": [e for r in results for e in r["errors"]][:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if not 1 <= args.subscribers <= 10_000 or not 1 <= args.events <= 1000 or not 1 <= args.workers <= 16:
        parser.error("--subscribers 1..10000, --events 1..1000, --workers 1..16")
    if not 0.01 <= args.interval <= 10:
        parser.error("--interval 0.01..10")
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ikoma-sse-")))
        if args.backend == "sqlite":
            url = f"sqlite:///{data_dir / 'sse.db'}"
        else:
            url = stack.enter_context(postgres_database())
        server = ServerProcess(url, data_dir, admin_key=secrets.token_urlsafe(24))
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        result = measure(server, args)
    document = {"backend": args.backend, "pythonpath": os.environ.get("PYTHONPATH"), **result}
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
