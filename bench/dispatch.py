"""IKOMA dispatch benchmark: how fast runners drain the order queue, and how long an order waits.

Run with `make bench` (`.venv/bin/python bench/dispatch.py`); `--help` lists the options and
bench/README.md explains the output. For each backend (SQLite, PostgreSQL) the benchmark starts a
real `python -m ikoma serve` process on a free port of 127.0.0.1 with a throw-away data dir and
database, sets up a fleet over the admin API, then runs two benchmarks against it:

* drain: N orders are queued first (not timed); then every runner loops claim-next?wait=0 -> start ->
  complete until claim-next answers 204. Throughput = orders / (first claim sent -> last complete
  answered); latency percentiles per call type; every order must be completed exactly once.
* paced: runners long-poll (claim-next?wait=10) while producers create orders at a fixed rate
  (open loop, scheduled against the monotonic clock). create->claim latency of an order = the time
  its claim answer reached a runner - the time just before its create request was sent.

Client side: the parent process sets up (httpx, not timed) and checks the outcome; the timed load
runs in spawned worker processes with a bare HTTP/1.1 client (loadgen.py, wire.py), which costs a
few tens of µs per request, so that the server, not the client, is the bottleneck. Every result
carries `cpu` (client processes, server process tree, PostgreSQL backends of the run's database,
whole machine; meters.py) and CPU per order: on a shared 2-core machine the CPU figures and the
ratios to the yardstick run just after are what compare, not absolute throughput.

One JSON document goes to stdout; progress goes to stderr. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import math
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

import loadgen
from meters import CpuMeter

LOOPBACK = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL_PREFIX = "postgresql://postgres@127.0.0.1:5432/"
PLAYBOOK_KEY = "system.test_ping"
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
LONG_POLL_S = 10
CREATE_CONCURRENCY = 16
STRAGGLER_WAIT_S = 5.0
PACE_GRACE_S = 1.0
MAX_PRODUCERS = 128
# Idle keep-alive connections are dropped by the client well before uvicorn's 5 s keep-alive timeout;
# with equal timeouts a request can go out on a connection the server is closing (ReadError).
KEEPALIVE_S = 2.0
JSON_HEADERS = {"content-type": "application/json"}

# httpcore 1.x runs `import sniffio` on every pool-lock acquisition; without sniffio installed each
# of those failed imports searches sys.path again (~0.2 ms of CPU per request, a third of the client's
# cost). A None entry in sys.modules makes that import fail at once; httpcore then assumes asyncio,
# which is what this benchmark runs on.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]


class BenchError(Exception):
    """The benchmark cannot go on (server did not start, setup answered an error, ...)."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# statistics and error accounting


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(samples_s: list[float], ps: tuple[int, ...], with_max: bool = False) -> dict[str, Any]:
    """{"count", "p50Ms", ..., "maxMs"?} from samples in seconds (None when there are no samples)."""
    values = sorted(samples_s)
    out: dict[str, Any] = {"count": len(values)}
    for p in ps:
        out[f"p{p}Ms"] = round(percentile(values, p) * 1000.0, 3) if values else None
    if with_max:
        out["maxMs"] = round(values[-1] * 1000.0, 3) if values else None
    return out


def number(value: float) -> float | int:
    """12.0 -> 12 for the JSON, other values unchanged."""
    return int(value) if value.is_integer() else value


class Tally:
    """Counts unexpected answers and transport errors, grouped by call and kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.server_errors = 0

    def http(self, call: str, resp: httpx.Response) -> None:
        reason = "?"
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            reason = str(orjson.loads(resp.content).get("reason", "?"))
        self.counts[f"{call}: HTTP {resp.status_code} {reason}"] += 1
        if resp.status_code >= 500:
            self.server_errors += 1

    def exc(self, call: str, exc: BaseException) -> None:
        self.counts[f"{call}: {type(exc).__name__}: {exc}"[:200]] += 1

    def note(self, message: str) -> None:
        self.counts[message] += 1

    def merge(self, other: loadgen.Tally) -> None:
        """Add what a worker process of the load generator counted."""
        self.counts.update(other.counts)
        self.server_errors += other.server_errors

    def lines(self) -> list[str]:
        return [f"{key} (x{n})" if n > 1 else key for key, n in self.counts.most_common()]


# --------------------------------------------------------------------------------------------------
# the server under test


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One `python -m ikoma serve` child process on a free loopback port."""

    def __init__(self, database_url: str, data_dir: Path, admin_key: str) -> None:
        self.database_url = database_url
        self.data_dir = data_dir
        self.admin_key = admin_key
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pg_database(self) -> str | None:
        """The PostgreSQL database's name (its backends' CPU is metered), None on SQLite."""
        if not self.database_url.startswith("postgresql"):
            return None
        return self.database_url.rsplit("/", 1)[-1]

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            {
                "PORT": str(self.port),
                "HOST": LOOPBACK,
                "IKOMA_DATA_DIR": str(self.data_dir),
                "IKOMA_ADMIN_KEY": self.admin_key,
                "DATABASE_URL": self.database_url,
                "IKOMA_LOG_LEVEL": "warning",
            }
        )
        with self.log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ikoma", "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise BenchError(
                        f"server exited with code {code} before it was ready:\n{self.log_tail()}"
                    )
                try:
                    resp = client.get(f"{self.base_url}/readyz")
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        raise BenchError(f"GET /readyz not 200 after {READY_TIMEOUT_S:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log(f"server did not stop {STOP_GRACE_S:.0f} s after SIGTERM; sending SIGKILL")
            self.proc.kill()
            self.proc.wait(timeout=STOP_GRACE_S)


class YardstickProcess(ServerProcess):
    """bench/yardstick.py: the bare prototype of the same three runner calls IKOMA is measured against."""

    def __init__(self, backend: str, database: str, data_dir: Path) -> None:
        super().__init__(database, data_dir, admin_key="the-yardstick-checks-no-key")
        self.backend = backend
        self.log_path = data_dir / "yardstick.log"

    def start(self) -> None:
        script = Path(__file__).with_name("yardstick.py")
        argv = [sys.executable, str(script), "--backend", self.backend, "--database", self.database_url]
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )


# --------------------------------------------------------------------------------------------------
# PostgreSQL scratch database


async def pg_create_database(name: str) -> None:
    import asyncpg  # only needed for the PostgreSQL backend

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def pg_drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------------
# HTTP clients


@dataclass(frozen=True)
class Runner:
    id: str
    token: str
    server_id: str


def admin_client(base_url: str, admin_key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{base_url}/v1",
        headers={"x-ikoma-admin-key": admin_key},
        http2=False,
        limits=httpx.Limits(
            max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE_S
        ),
        timeout=httpx.Timeout(30.0),
        trust_env=False,
    )


def runner_client(base_url: str, runner: Runner) -> httpx.AsyncClient:
    # One runner = one sequential loop, so one keep-alive connection (two for a cancelled long-poll).
    return httpx.AsyncClient(
        base_url=f"{base_url}/v1",
        headers={"x-runner-id": runner.id, "x-runner-token": runner.token},
        http2=False,
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=KEEPALIVE_S),
        timeout=httpx.Timeout(LONG_POLL_S + 20.0),
        trust_env=False,
    )


@contextlib.asynccontextmanager
async def runner_clients(base_url: str, runners: list[Runner]) -> AsyncIterator[list[httpx.AsyncClient]]:
    clients = [runner_client(base_url, r) for r in runners]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


async def post_json(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(url, content=orjson.dumps(body), headers=JSON_HEADERS)


def expect(resp: httpx.Response, status: int, what: str) -> Any:
    if resp.status_code != status:
        raise BenchError(f"{what}: expected HTTP {status}, got {resp.status_code}: {resp.text[:300]}")
    return orjson.loads(resp.content) if resp.content else None


async def setup_fleet(admin: httpx.AsyncClient, count: int) -> list[Runner]:
    """`count` servers, each with its own runner attached."""
    tag = secrets.token_hex(3)
    runners = []
    for i in range(count):
        server = expect(
            await post_json(
                admin, "/servers", {"name": f"bench-{tag}-{i}", "hostname": f"bench-{i}.invalid"}
            ),
            201,
            "POST /servers",
        )
        runner = expect(
            await post_json(admin, "/runners", {"name": f"bench-runner-{tag}-{i}"}), 201, "POST /runners"
        )
        attached = expect(
            await admin.patch(
                f"/servers/{server['id']}",
                content=orjson.dumps({"runnerId": runner["id"]}),
                headers=JSON_HEADERS,
            ),
            200,
            "PATCH /servers/:id",
        )
        if attached.get("runnerId") != runner["id"]:
            raise BenchError(f"PATCH /servers/:id did not attach the runner: {attached}")
        runners.append(Runner(id=runner["id"], token=runner["token"], server_id=server["id"]))
    return runners


async def create_orders(
    admin: httpx.AsyncClient,
    runners: list[Runner],
    count: int,
    tally: Tally,
    playbook_key: str = PLAYBOOK_KEY,
) -> list[str]:
    """Queue `count` orders round-robin over the servers, CREATE_CONCURRENCY requests at a time."""
    ids: list[str] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            body = {"serverId": runners[i % len(runners)].server_id, "playbookKey": playbook_key}
            try:
                resp = await post_json(admin, "/orders", body)
            except httpx.HTTPError as exc:
                tally.exc("create", exc)
                continue
            if resp.status_code == 201:
                ids.append(orjson.loads(resp.content)["order"]["id"])
            else:
                tally.http("create", resp)

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return ids


async def start_and_complete(client: httpx.AsyncClient, order: dict[str, Any], tally: Tally) -> bool:
    """start + complete (SUCCEEDED, minimal v2 report) one claimed order (clean-up, not timed)."""
    lease = {"leaseToken": order["leaseToken"]}
    try:
        resp = await post_json(client, f"/runner/orders/{order['id']}/start", lease)
        if resp.status_code != 200:
            tally.http("start", resp)
            return False
        body = {"status": "SUCCEEDED", "report": loadgen.REPORT, **lease}
        resp = await post_json(client, f"/runner/orders/{order['id']}/complete", body)
        if resp.status_code != 200:
            tally.http("complete", resp)
            return False
    except httpx.HTTPError as exc:
        tally.exc("start/complete", exc)
        return False
    return True


# --------------------------------------------------------------------------------------------------
# drain


def runner_tuples(runners: list[Runner]) -> list[tuple[str, str, str]]:
    return [(r.id, r.token, r.server_id) for r in runners]


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into at most `parts` non-empty lists."""
    return [chunk for chunk in (items[i::parts] for i in range(max(1, parts))) if chunk]


async def in_workers(
    workers: ProcessPoolExecutor, calls: list[Callable[[], dict[str, Any]]]
) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    return list(await asyncio.gather(*(loop.run_in_executor(workers, call) for call in calls)))


async def count_orders(admin: httpx.AsyncClient, status: str, tally: Tally) -> int | None:
    """How many orders the server lists with `status` (paged; None when it cannot tell)."""
    total = 0
    cursor: str | None = None
    for _ in range(1000):
        params: dict[str, str | int] = {"status": status, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        try:
            resp = await admin.get("/orders", params=params)
        except httpx.HTTPError as exc:
            tally.exc(f"GET /orders?status={status}", exc)
            return None
        if resp.status_code != 200:
            tally.http(f"GET /orders?status={status}", resp)
            return None
        page = orjson.loads(resp.content)
        total += len(page["items"])
        cursor = page.get("nextCursor")
        if not cursor:
            return total
    return None


async def run_drain(
    server: ServerProcess,
    admin: httpx.AsyncClient,
    runners: list[Runner],
    args: argparse.Namespace,
    workers: ProcessPoolExecutor,
    playbook_key: str = PLAYBOOK_KEY,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Queue `args.orders` orders (not timed), then drain them from the worker processes."""
    tally = Tally()
    orders = args.orders
    log(f"drain: queueing {orders} orders over {len(runners)} servers (concurrency {CREATE_CONCURRENCY})")
    created = await create_orders(admin, runners, orders, tally, playbook_key)
    if len(created) != orders:
        tally.note(f"drain: only {len(created)} of {orders} orders were created")
    groups = split(runner_tuples(runners), args.client_processes)
    log(f"drain: {len(runners)} runners in {len(groups)} client processes draining {len(created)} orders")
    target = loadgen.Target(server.base_url)
    meter = CpuMeter(server.proc.pid if server.proc is not None else None, server.pg_database)
    start_at = time.monotonic() + 0.2
    deadline = start_at + args.drain_timeout
    meter.start()
    parts = await in_workers(
        workers,
        [
            functools.partial(loadgen.drain, target, group, len(created), start_at, deadline, report)
            for group in groups
        ],
    )
    cpu = meter.stop(client_cpu_s=sum(p["cpuSeconds"] for p in parts))
    completed: list[str] = [oid for p in parts for oid in p["completed"]]
    first_claim = min(p["firstClaim"] for p in parts)
    last_complete = max(p["lastComplete"] for p in parts)
    for part in parts:
        tally.merge(part["tally"])
    seconds = last_complete - first_claim if completed else 0.0
    errors: list[str] = []
    if len(completed) != len(created):
        errors.append(f"{len(completed)} orders completed, {len(created)} created")
    duplicates = len(completed) - len(set(completed))
    if duplicates:
        errors.append(f"{duplicates} orders were completed more than once")
    missing = set(created) - set(completed)
    if missing:
        errors.append(f"{len(missing)} created orders were never completed, e.g. {sorted(missing)[:3]}")
    strangers = set(completed) - set(created)
    if strangers:
        errors.append(f"{len(strangers)} completed orders were not created by this run")
    if tally.server_errors:
        errors.append(f"{tally.server_errors} answers were 5xx")
    for status in ("QUEUED", "CLAIMED", "RUNNING"):
        left = await count_orders(admin, status, tally)
        if left:
            errors.append(f"the server still lists {left} {status} orders after the drain")
    errors.extend(tally.lines())
    result: dict[str, Any] = {
        "orders": len(created),
        "runners": len(runners),
        "clientProcesses": len(groups),
        "completed": len(completed),
        "seconds": round(seconds, 3),
        "ordersPerSecond": round(len(completed) / seconds, 1) if seconds > 0 else None,
        "claim": latency_summary([x for p in parts for x in p["claim"]], (50, 99)),
        "start": latency_summary([x for p in parts for x in p["start"]], (50, 99)),
        "complete": latency_summary([x for p in parts for x in p["complete"]], (50, 99)),
        "cpu": cpu,
        # what one order costs the server, whatever the client could keep up with
        "serverCpuMsPerOrder": per_order(cpu.get("serverCpuSeconds"), len(completed)),
        "databaseCpuMsPerOrder": per_order(cpu.get("databaseCpuSeconds"), len(completed)),
        "errors": errors,
    }
    log(
        f"drain: {result['ordersPerSecond']} orders/s over {result['seconds']} s, server "
        f"{result['serverCpuMsPerOrder']} ms CPU/order, {len(errors)} error lines"
    )
    return result


def per_order(cpu_seconds: float | None, count: int) -> float | None:
    return round(cpu_seconds * 1000 / count, 3) if cpu_seconds is not None and count else None


# --------------------------------------------------------------------------------------------------
# paced load


async def cancel_orders(admin: httpx.AsyncClient, order_ids: list[str], tally: Tally) -> int:
    """Cancel (admin API) orders a round left behind, CREATE_CONCURRENCY at a time; returns how many."""
    pending = list(order_ids)
    cancelled = 0

    async def worker() -> None:
        nonlocal cancelled
        while pending:
            order_id = pending.pop()
            try:
                resp = await post_json(admin, f"/orders/{order_id}/cancel", {"reason": "bench round over"})
            except httpx.HTTPError as exc:
                tally.exc("cleanup cancel", exc)
                continue
            if resp.status_code == 200:
                cancelled += 1
            elif resp.status_code != 409:  # 409 invalid_status: it ended meanwhile
                tally.http("cleanup cancel", resp)

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return cancelled


async def drain_leftovers(clients: list[httpx.AsyncClient], tally: Tally) -> int:
    """Claim+start+complete whatever is still queued so that the next round starts empty."""
    done = 0
    for client in clients:
        for _ in range(10_000):
            try:
                resp = await client.post("/runner/orders/claim-next?wait=0")
            except httpx.HTTPError as exc:
                tally.exc("cleanup claim", exc)
                break
            if resp.status_code != 200:
                if resp.status_code != 204:
                    tally.http("cleanup claim", resp)
                break
            if await start_and_complete(client, orjson.loads(resp.content), tally):
                done += 1
    return done


async def run_paced(
    server: ServerProcess,
    admin: httpx.AsyncClient,
    runners: list[Runner],
    rate: float,
    args: argparse.Namespace,
    workers: ProcessPoolExecutor,
) -> dict[str, Any]:
    """Runners long-poll in the worker processes while one more worker creates orders at `rate`."""
    tally = Tally()
    duration = args.duration
    total = max(1, round(rate * duration))
    # Enough connections that each has up to 100 ms for its create before its next slot is due.
    producers = max(8, min(MAX_PRODUCERS, math.ceil(rate / 10.0)))
    groups = split(runner_tuples(runners), args.client_processes)
    log(
        f"paced: {rate:g} orders/s for {duration:g} s ({total} orders, {producers} producer "
        f"connections, {len(runners)} runners in {len(groups)} client processes)"
    )
    target = loadgen.Target(server.base_url, server.admin_key)
    t0 = time.monotonic() + 0.7  # the runners park their first long-poll meanwhile
    stop_at = t0 + total / rate + max(PACE_GRACE_S, 0.2 * total / rate)
    end_at = stop_at + STRAGGLER_WAIT_S
    meter = CpuMeter(server.proc.pid if server.proc is not None else None, server.pg_database)
    meter.start()
    produced, *parts = await in_workers(
        workers,
        [
            functools.partial(
                loadgen.produce,
                target,
                [r.server_id for r in runners],
                PLAYBOOK_KEY,
                rate,
                total,
                t0,
                stop_at,
                producers,
            ),
            *(functools.partial(loadgen.paced_runners, target, g, LONG_POLL_S, end_at) for g in groups),
        ],
    )
    cpu = meter.stop(client_cpu_s=produced["cpuSeconds"] + sum(p["cpuSeconds"] for p in parts))
    sent: dict[str, float] = produced["sent"]
    claimed: dict[str, float] = {oid: t for p in parts for oid, t in p["claimed"].items()}
    for part in (produced, *parts):
        tally.merge(part["tally"])
    left_behind = sorted(sent.keys() - claimed.keys())
    # Orders of an overloaded round are cancelled (1 call each) rather than run, then whatever is
    # still queued (e.g. a create whose answer was lost) is run so the next round starts empty.
    cancelled = await cancel_orders(admin, left_behind, tally)
    async with runner_clients(server.base_url, runners) as clients:
        leftovers = await drain_leftovers(clients, tally)

    latencies = [claimed[oid] - t for oid, t in sent.items() if oid in claimed]
    errors = tally.lines()
    if tally.server_errors:
        errors.insert(0, f"{tally.server_errors} answers were 5xx")
    span = produced["last"] - produced["first"]
    achieved = (len(sent) - 1) / span if len(sent) > 1 and span > 0 else None
    c2c = latency_summary(latencies, (50, 95, 99), with_max=True)
    result: dict[str, Any] = {
        "targetRate": number(rate),
        "durationSeconds": number(duration),
        "targetOrders": total,
        "created": len(sent),
        "achievedRate": round(achieved, 1) if achieved is not None else None,
        "createToClaim": c2c,
        "unclaimed": len(left_behind),
        "cleanup": {"cancelled": cancelled, "drained": leftovers},
        "cpu": cpu,
        "errors": errors,
    }
    log(
        f"paced: created {len(sent)}/{total} at {result['achievedRate']}/s, create->claim "
        f"p50 {c2c['p50Ms']} ms p99 {c2c['p99Ms']} ms, unclaimed {len(left_behind)}"
    )
    return result


# --------------------------------------------------------------------------------------------------
# one backend


async def bench_server(
    server: ServerProcess, args: argparse.Namespace, workers: ProcessPoolExecutor
) -> dict[str, Any]:
    async with admin_client(server.base_url, server.admin_key, connections=CREATE_CONCURRENCY) as admin:
        runners = await setup_fleet(admin, args.runners)
        drain = await run_drain(server, admin, runners, args, workers)
        paced = [await run_paced(server, admin, runners, rate, args, workers) for rate in args.rates]
    return {"drain": drain, "paced": paced}


async def bench_yardstick(
    server: ServerProcess, args: argparse.Namespace, workers: ProcessPoolExecutor
) -> dict[str, Any]:
    """The drain alone, against the bare prototype: the yardstick of the ratios."""
    async with admin_client(server.base_url, server.admin_key, connections=CREATE_CONCURRENCY) as admin:
        runners = await setup_fleet(admin, args.runners)
        return await run_drain(server, admin, runners, args, workers)


@contextlib.contextmanager
def yardstick_server(backend: str) -> Iterator[YardstickProcess]:
    """bench/yardstick.py running on a throw-away database of `backend`, stopped on exit."""
    with contextlib.ExitStack() as stack:
        data_dir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=f"ikoma-yardstick-{backend}-"))
        )
        database = (
            str(data_dir / "yardstick.db")
            if backend == "sqlite"
            else stack.enter_context(postgres_database())
        )
        server = YardstickProcess(backend, database, data_dir)
        log(f"{backend}: starting the yardstick (bench/yardstick.py) on {server.base_url}")
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        yield server


@contextlib.contextmanager
def ikoma_server(backend: str) -> Iterator[ServerProcess]:
    """`ikoma serve` on a throw-away database of `backend`, stopped on exit."""
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"ikoma-bench-{backend}-")))
        if backend == "sqlite":
            database_url = f"sqlite:///{data_dir / 'bench.db'}"
        else:
            database_url = stack.enter_context(postgres_database())
        server = ServerProcess(database_url, data_dir, admin_key=secrets.token_urlsafe(24))
        log(f"{backend}: starting server on {server.base_url}")
        server.start()
        stack.callback(server.stop)
        server.wait_ready()
        yield server


def run_yardstick(backend: str, args: argparse.Namespace, workers: ProcessPoolExecutor) -> dict[str, Any]:
    with yardstick_server(backend) as server:
        return asyncio.run(bench_yardstick(server, args, workers))
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def ratio(numerator: Any, denominator: Any) -> float | None:
    if not numerator or not denominator:
        return None
    return round(float(numerator) / float(denominator), 3)


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    name = f"ikoma_bench_{secrets.token_hex(4)}"
    asyncio.run(pg_create_database(name))
    try:
        yield PG_URL_PREFIX + name
    finally:
        try:
            asyncio.run(pg_drop_database(name))
        except Exception as exc:  # report, do not hide the benchmark's own outcome
            log(f"could not drop database {name}: {exc}")


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""

    async def probe() -> None:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_backend(backend: str, args: argparse.Namespace, workers: ProcessPoolExecutor) -> dict[str, Any]:
    with ikoma_server(backend) as server:
        result = asyncio.run(bench_server(server, args, workers))
        if server.proc is not None and server.proc.poll() is not None:
            raise BenchError(f"server exited during the benchmark:\n{server.log_tail()}")
        if result["drain"]["errors"] or any(p["errors"] for p in result["paced"]):
            result["serverLogTail"] = server.log_tail(40).splitlines()  # the log dies with the temp dir
        return {"backend": backend, **result}
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma list of sqlite,postgresql")
    parser.add_argument("--runners", type=int, default=8, help="runners, each on its own server (default 8)")
    parser.add_argument("--orders", type=int, default=4000, help="orders queued for the drain (default 4000)")
    parser.add_argument(
        "--rates", default="200,1000", help="paced creation rates in orders/s (issue 11: 200,1000)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each paced round (default 5)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="give up the drain after this (s)")
    parser.add_argument("--quick", action="store_true", help="tiny run: 200 orders, rate 50, 2 s")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="worker processes the runners are split over (default 2; paced rounds add one producer)",
    )
    parser.add_argument(
        "--no-yardstick",
        dest="yardstick",
        action="store_false",
        help="skip the drain against bench/yardstick.py (the bare prototype the ratios compare with)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.orders, args.rates, args.duration = 200, "50", 2.0
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates must be a comma list of numbers")
    if not 1 <= args.runners <= 256 or not 1 <= args.orders <= 1_000_000:
        parser.error("--runners must be 1..256 and --orders 1..1000000")
    if not 1 <= args.client_processes <= 32:
        parser.error("--client-processes must be 1..32")
    if any(not 0 < r <= 20_000 for r in args.rates) or not 0 < args.duration <= 600:
        parser.error("rates must be in (0, 20000] and --duration in (0, 600]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    results: list[dict[str, Any]] = []
    failed = False
    workers = loadgen.pool(args.client_processes + 1)
    for backend in args.backends:
        if backend == "postgresql":
            why = postgres_reachable()
            if why is not None:
                log(f"postgresql: skipped, {PG_ADMIN_URL} is unreachable ({why})")
                results.append({"backend": backend, "skipped": f"PostgreSQL unreachable: {why}"})
                continue
        try:
            result = run_backend(backend, args, workers)
            if args.yardstick:
                yardstick = run_yardstick(backend, args, workers)
                result["yardstick"] = {"drain": yardstick}
                # issue 11's first two targets: IKOMA's drain as a fraction of the bare prototype's
                result["drainVsYardstick"] = ratio(
                    result["drain"].get("ordersPerSecond"), yardstick.get("ordersPerSecond")
                )
                # the same in server CPU per order (the prototype's drain is often client-bound here)
                result["serverCpuVsYardstick"] = ratio(
                    yardstick.get("serverCpuMsPerOrder"), result["drain"].get("serverCpuMsPerOrder")
                )
            results.append(result)
        except BenchError as exc:
            log(f"{backend}: FAILED: {exc}")
            results.append({"backend": backend, "failed": str(exc)})
            failed = True
        except Exception as exc:  # an unexpected answer shape, a transport error during setup, ...
            traceback.print_exc(file=sys.stderr)
            results.append({"backend": backend, "failed": f"{type(exc).__name__}: {exc}"})
            failed = True
    workers.shutdown()
    document = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
        },
        "config": {
            "runners": args.runners,
            "orders": args.orders,
            "rates": [number(r) for r in args.rates],
            "durationSeconds": number(args.duration),
            "longPollSeconds": LONG_POLL_S,
            "clientProcesses": args.client_processes,
        },
        "results": results,
    }
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    failed = failed or any(
        r.get("drain", {}).get("errors") or any(p.get("errors") for p in r.get("paced", [])) for r in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
