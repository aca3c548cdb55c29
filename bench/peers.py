"""Peers on the same PostgreSQL: procrastinate and pgqueuer drain trivial jobs, IKOMA drains orders.

Issue 11, target 2: IKOMA's PostgreSQL drain >= 1.0x procrastinate and pgqueuer (batch 1, one
worker) draining trivial jobs on the same database server in the same run, despite HTTP,
authentication and history. For each peer the benchmark creates a database of its own
(`ikoma_peers_<random>`, dropped after), installs the peer's schema and queues `--jobs` no-op jobs
(not timed), then starts one worker process (`bench/peers.py --worker <peer> ...`, concurrency 1,
batch 1) that drains them. The worker reports its wall time and its own CPU; the parent meters the
PostgreSQL backends of that database (by their process title, bench/meters.py) around the drain.
IKOMA then drains `--jobs` `system.test_ping` orders with 1 runner (the same one-at-a-time shape)
and with 8, through `ikoma serve` on a database of its own (bench/dispatch.py's drain).

    .venv/bin/python bench/peers.py --jobs 2000

One JSON document on stdout, progress on stderr. Needs the `bench` extra (`pip install -e '.[bench]'`);
a peer whose package is missing is reported as skipped. PostgreSQL unreachable: everything skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

import loadgen
from dispatch import (
    PG_ADMIN_URL,
    admin_client,
    ikoma_server,
    log,
    postgres_database,
    postgres_reachable,
    ratio,
    run_drain,
    setup_fleet,
)
from meters import HZ, pg_backend_ticks

PEERS = ("procrastinate", "pgqueuer")
WORKER_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------------------------------
# the worker process of one peer (run as `peers.py --worker NAME`)


async def procrastinate_worker(url: str, jobs: int, ready: Any) -> None:
    import procrastinate

    # it warns that an App made in a __main__ module cannot be found by its CLI: not used here
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        if jobs:  # set-up mode: schema and queued jobs
            await app.schema_manager.apply_schema_async()
            await noop.batch_defer_async(*({} for _ in range(jobs)))
            return
        await ready()
        await app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False)


async def pgqueuer_worker(url: str, jobs: int, ready: Any) -> None:
    import asyncpg
    from pgqueuer import PgQueuer, Queries
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(url)
    try:
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint("noop")
        async def noop(_: Any) -> None:
            return None

        if jobs:
            queries = Queries.from_asyncpg_connection(conn)
            await queries.install()
            await queries.enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)
            return
        await ready()
        await pgq.run(batch_size=1, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
    finally:
        await conn.close()


def worker_main(peer: str, url: str, jobs: int) -> int:
    """Set up (`jobs` > 0) or drain (`jobs` == 0). Draining: print `ready` once connected, wait for a
    line on stdin, drain, print {"wall", "cpu"} of the drain alone."""
    marks: dict[str, float] = {}

    async def ready() -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        marks["cpu0"], marks["t0"] = time.process_time(), time.monotonic()

    async def run() -> None:
        body = procrastinate_worker if peer == "procrastinate" else pgqueuer_worker
        await body(url, jobs, ready)
        marks["cpu1"], marks["t1"] = time.process_time(), time.monotonic()

    asyncio.run(run())
    if not jobs:
        wall, cpu = marks["t1"] - marks["t0"], marks["cpu1"] - marks["cpu0"]
        print(orjson.dumps({"wall": wall, "cpu": cpu}).decode(), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# the parent


class BackendSampler:
    """CPU of the PostgreSQL backends of one database, sampled every 0.1 s in a thread so that a
    backend that exits before the end still counts (up to its last sample)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, baseline: bool) -> None:
        for pid, ticks in pg_backend_ticks(self.database).items():
            self.first.setdefault(pid, ticks if baseline else 0)
            self.last[pid] = ticks

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample(baseline=False)

    def start(self) -> None:
        self._sample(baseline=True)
        self._thread.start()

    def stop(self) -> float:
        """CPU seconds of the backends since start()."""
        self._stop.set()
        self._thread.join()
        self._sample(baseline=False)
        return sum(self.last[pid] - self.first[pid] for pid in self.last) / HZ


def spawn_worker(peer: str, url: str, jobs: int) -> subprocess.Popen[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", peer, "--database", url]
    return subprocess.Popen(
        [*argv, "--jobs", str(jobs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_peer(peer: str, jobs: int) -> dict[str, Any]:
    with postgres_database() as url:
        log(f"{peer}: queueing {jobs} jobs")
        setup = spawn_worker(peer, url, jobs)
        setup.communicate(timeout=WORKER_TIMEOUT_S)
        if setup.returncode != 0:
            return {"peer": peer, "failed": f"set-up exited with {setup.returncode}"}
        database = url.rsplit("/", 1)[-1]
        worker = spawn_worker(peer, url, 0)
        assert worker.stdin is not None
        assert worker.stdout is not None
        try:
            if worker.stdout.readline().strip() != "ready":
                return {"peer": peer, "failed": "the worker did not start"}
            sampler = BackendSampler(database)
            sampler.start()
            log(f"{peer}: one worker draining {jobs} jobs (batch 1, concurrency 1)")
            worker.stdin.write("go\n")
            worker.stdin.flush()
            line = worker.stdout.readline()
            database_s = sampler.stop()
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if worker.returncode != 0 or not line:
            return {"peer": peer, "failed": f"the worker exited with {worker.returncode}"}
        measured = orjson.loads(line)
        wall, cpu = measured["wall"], measured["cpu"]
        result = {
            "peer": peer,
            "jobs": jobs,
            "seconds": round(wall, 3),
            "jobsPerSecond": round(jobs / wall, 1),
            "workerCpuMsPerJob": round(cpu * 1000 / jobs, 3),
            "databaseCpuMsPerJob": round(database_s * 1000 / jobs, 3),
            "totalCpuMsPerJob": round((cpu + database_s) * 1000 / jobs, 3),
        }
        log(f"{peer}: {result['jobsPerSecond']} jobs/s, {result['totalCpuMsPerJob']} ms CPU/job in all")
        return result
    raise AssertionError("unreachable")


async def ikoma_drain(server: Any, runners: int, jobs: int, client_processes: int) -> dict[str, Any]:
    args = argparse.Namespace(orders=jobs, client_processes=client_processes, drain_timeout=WORKER_TIMEOUT_S)
    workers = loadgen.pool(client_processes)
    try:
        async with admin_client(server.base_url, server.admin_key, connections=16) as admin:
            fleet = await setup_fleet(admin, runners)
            drain = await run_drain(server, admin, fleet, args, workers)
    finally:
        workers.shutdown()
    total = None
    if drain["serverCpuMsPerOrder"] is not None and drain["databaseCpuMsPerOrder"] is not None:
        total = round(drain["serverCpuMsPerOrder"] + drain["databaseCpuMsPerOrder"], 3)
    return {
        "peer": f"ikoma ({runners} runner{'s' if runners > 1 else ''})",
        "jobs": drain["completed"],
        "seconds": drain["seconds"],
        "jobsPerSecond": drain["ordersPerSecond"],
        "serverCpuMsPerJob": drain["serverCpuMsPerOrder"],
        "databaseCpuMsPerJob": drain["databaseCpuMsPerOrder"],
        # the runners' own CPU (here the bare load generator) is left out, as the peers' producers are
        "totalCpuMsPerJob": total,
        "errors": drain["errors"],
    }


def run_ikoma(runner_counts: list[int], jobs: int) -> list[dict[str, Any]]:
    out = []
    for runners in runner_counts:
        with ikoma_server("postgresql") as server:
            out.append(asyncio.run(ikoma_drain(server, runners, jobs, min(2, runners))))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs (orders) each drains (default 2000)")
    parser.add_argument("--ikoma-runners", default="1,8", help="IKOMA drains with these runner counts")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma list of procrastinate,pgqueuer")
    parser.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.database, args.jobs)
    if not 1 <= args.jobs <= 100_000:
        parser.error("--jobs must be 1..100000")
    runner_counts = [int(n) for n in args.ikoma_runners.split(",") if n.strip()]
    why = postgres_reachable()
    if why is not None:
        log(f"peers: skipped, {PG_ADMIN_URL} is unreachable ({why})")
        sys.stdout.write(
            orjson.dumps({"peers": {"skipped": f"PostgreSQL unreachable: {why}"}}).decode() + "\n"
        )
        return 0
    results: list[dict[str, Any]] = []
    for peer in [p.strip() for p in args.peers.split(",") if p.strip()]:
        try:
            __import__(peer)
        except ImportError:
            results.append({"peer": peer, "skipped": "not installed: pip install -e '.[bench]'"})
            continue
        results.append(run_peer(peer, args.jobs))
    ikoma = run_ikoma(runner_counts, args.jobs)
    ratios: dict[str, Any] = {}
    for mine in ikoma:
        for peer in results:
            if "jobsPerSecond" in peer:
                key = f"{mine['peer']} vs {peer['peer']}"
                ratios[key] = {
                    "jobsPerSecond": ratio(mine["jobsPerSecond"], peer["jobsPerSecond"]),
                    "totalCpuPerJob": ratio(peer["totalCpuMsPerJob"], mine["totalCpuMsPerJob"]),
                }
    document = {
        "peers": {
            "jobs": args.jobs,
            "cpus": os.cpu_count(),
            "results": [*results, *ikoma],
            # > 1: IKOMA faster (jobsPerSecond) or cheaper (totalCpuPerJob: the peer's CPU ÷ IKOMA's)
            "ratios": ratios,
        }
    }
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    failed = any("failed" in r or r.get("errors") for r in document["peers"]["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
