"""What the runner lane saves per runner call: the same calls through the full app and through the lane.

In process, one event loop, no HTTP: the app is built as `ikoma serve` builds it (SQLite in a temp
dir) and driven with bare ASGI messages, so the difference between the two paths is the admin
middleware stack a runner call no longer passes (RequestContext → PolicyMiddleware → RequestGuard →
FastAPI's error and telemetry wrappers → the FastAPI router), not the client or the network.
Rounds alternate (full app, lane, full app, …); the figure is process CPU per call, median of the
rounds (on PostgreSQL also the CPU of the run database's backends, from /proc). Three cases:

- `claim-empty`: `POST /v1/runner/orders/claim-next` by a runner with nothing queued (204; one write
  transaction: the runner read, the claim's UPDATE finding nothing);
- `refused`: the same without credentials (401 in the one error shape; no database);
- `order`: one order's three runner calls, claim → start → complete (SUCCEEDED, the drain's minimal
  v2 report, ingestion included), per order; `--orders` are queued before each round (not timed).

Run it with `PYTHONPATH=<other tree>/src` to compare two versions of the code call for call.

    .venv/bin/python bench/lane.py --backend postgresql --calls 3000 --orders 300 --rounds 5

One JSON document on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


REPORT = orjson.dumps({"version": "v2", "summary": "bench", "durationMs": 0, "steps": [], "errors": []})
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
COUNTED_ORDERS = 20


async def call(
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    answer: list[bytes] | None = None,
) -> int:
    """One request as uvicorn hands it over; the answer's status (its body appended to `answer`)."""
    query = b""
    if "?" in path:
        path, raw = path.split("?", 1)
        query = raw.encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode()), (b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif answer is not None and message.get("body"):
            answer.append(message["body"])

    await app(scope, receive, send)
    return status


async def measure(app: Any, request: tuple[str, str, dict[str, str]], calls: int, expected: int) -> float:
    """Process CPU µs per call of `calls` sequential calls."""
    method, path, headers = request
    started = time.process_time()
    for _ in range(calls):
        status = await call(app, method, path, headers)
        if status != expected:
            raise RuntimeError(f"{method} {path} answered {status}, expected {expected}")
    return (time.process_time() - started) / calls * 1e6


async def cycle(app: Any, runner: dict[str, str], orders: int) -> float:
    """Process CPU µs per order of claim → start → complete for `orders` queued orders."""
    json_runner = {**runner, "content-type": "application/json"}
    started = time.process_time()
    for _ in range(orders):
        answer: list[bytes] = []
        status = await call(app, "POST", "/v1/runner/orders/claim-next?wait=0", runner, answer=answer)
        if status != 200:
            raise RuntimeError(f"claim-next answered {status}: {b''.join(answer)[:200]!r}")
        order = orjson.loads(b"".join(answer))
        lease = orjson.dumps({"leaseToken": order["leaseToken"]})
        base = f"/v1/runner/orders/{order['id']}"
        if (status := await call(app, "POST", f"{base}/start", json_runner, lease)) != 200:
            raise RuntimeError(f"start answered {status}")
        done = (
            b'{"status": "SUCCEEDED", "report": '
            + REPORT
            + b', "leaseToken": "'
            + order["leaseToken"].encode()
            + b'"}'
        )
        if (status := await call(app, "POST", f"{base}/complete", json_runner, done)) != 200:
            raise RuntimeError(f"complete answered {status}")
    return (time.process_time() - started) / orders * 1e6


async def queue(admin: Any, server_id: str, orders: int) -> None:
    for _ in range(orders):
        created = await admin.post(
            "/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping"}
        )
        created.raise_for_status()


class Statements:
    """What one order costs the database in requests, counted in this process (not timed): on SQLite
    the statements the sqlite3 library runs (BEGIN and COMMIT included), on PostgreSQL the calls into
    asyncpg that each make one round trip (execute, fetch*, executemany, on a connection or a prepared
    statement; BEGIN and COMMIT included; statement preparation, cached per connection, is not)."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        import sqlite3
        import sqlite3.dbapi2

        import asyncpg.connection
        import asyncpg.prepared_stmt

        def count(*_: Any) -> None:
            self.count += 1

        connect = sqlite3.connect

        def counted_connect(*args: Any, **kwargs: Any) -> Any:
            connection = connect(*args, **kwargs)
            connection.set_trace_callback(count)
            return connection

        sqlite3.connect = counted_connect
        sqlite3.dbapi2.connect = counted_connect  # what SQLAlchemy's pysqlite dialect calls
        methods = ("execute", "executemany", "fetch", "fetchrow", "fetchval")
        for cls in (asyncpg.connection.Connection, asyncpg.prepared_stmt.PreparedStatement):
            for name in methods:
                if hasattr(cls, name):
                    setattr(cls, name, self._counted(getattr(cls, name)))

    def _counted(self, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return method(*args, **kwargs)

        return counted


STATEMENTS = Statements()


class Backends:
    """CPU jiffies of the run database's PostgreSQL backends (nothing on SQLite)."""

    def __init__(self, database: str | None) -> None:
        self.database = database
        self.hz = os.sysconf("SC_CLK_TCK")

    def ticks(self) -> int:
        if self.database is None:
            return 0
        from meters import pg_backend_ticks

        return sum(pg_backend_ticks(self.database).values())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.count_statements:
        STATEMENTS.install()  # before the app opens its first connection
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "sqlite":
            return await run_on(args, f"sqlite:///{Path(tmp) / 'lane.db'}", None)
        import asyncpg

        name = f"ikoma_bench_lane_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                return await run_on(args, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", name)
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def run_on(args: argparse.Namespace, url: str, pg_database: str | None) -> dict[str, Any]:
    import httpx

    from ikoma import logs
    from ikoma.api.app import create_app, served
    from ikoma.settings import Settings
    from ikoma.storage import migrate

    logs.configure("warning")  # as `ikoma serve` does; stdout keeps the one JSON document
    await migrate.upgrade(url)
    admin_key = "ika_bench_" + secrets.token_urlsafe(24)
    settings = Settings(DATABASE_URL=url, IKOMA_ADMIN_KEY=admin_key, IKOMA_SSH_EXECUTOR=False)
    app = create_app(settings, run_migrations=False, run_reconciler=False)
    lane = served(app)
    async with app.router.lifespan_context(app):
        runner, server_id = await _runner(app, admin_key)
        claim = ("POST", "/v1/runner/orders/claim-next?wait=0", runner)
        refused = ("POST", "/v1/runner/orders/claim-next", {})
        cases = {"claim-empty": (claim, 204), "refused": (refused, 401)} if args.calls else {}
        for request, expected in cases.values():  # warm both paths (plans, caches)
            await measure(app, request, 200, expected)
            await measure(lane, request, 200, expected)
        results: dict[str, Any] = {}
        for name, (request, expected) in cases.items():
            full: list[float] = []
            by_lane: list[float] = []
            for round_ in range(args.rounds):
                full.append(await measure(app, request, args.calls, expected))
                by_lane.append(await measure(lane, request, args.calls, expected))
                log(f"{name} round {round_ + 1}: full app {full[-1]:.1f} µs, lane {by_lane[-1]:.1f} µs")
            f, la = statistics.median(full), statistics.median(by_lane)
            results[name] = {
                "fullAppUsPerCall": round(f, 1),
                "laneUsPerCall": round(la, 1),
                "savedUsPerCall": round(f - la, 1),
                "laneVsFullApp": round(la / f, 3),
                "fullAppRounds": [round(x, 1) for x in full],
                "laneRounds": [round(x, 1) for x in by_lane],
            }
        if args.orders:
            backends = Backends(pg_database)
            transport = httpx.ASGITransport(app=app)
            headers = {"x-ikoma-admin-key": admin_key}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as admin:
                per_order: dict[str, list[float]] = {"fullApp": [], "lane": []}
                database_per_order: dict[str, list[float]] = {"fullApp": [], "lane": []}
                for round_ in range(args.rounds):
                    for path, target in (("fullApp", app), ("lane", lane)):
                        await queue(admin, server_id, args.orders)
                        before = backends.ticks()
                        per_order[path].append(await cycle(target, runner, args.orders))
                        spent = (backends.ticks() - before) / backends.hz
                        database_per_order[path].append(spent / args.orders * 1e6)
                    log(
                        f"order round {round_ + 1}: full app {per_order['fullApp'][-1]:.0f} µs, "
                        f"lane {per_order['lane'][-1]:.0f} µs per order"
                    )
                statements = None
                if args.count_statements:  # after the timed rounds: counting costs a little
                    await queue(admin, server_id, COUNTED_ORDERS)
                    before_count = STATEMENTS.count
                    await cycle(lane, runner, COUNTED_ORDERS)
                    statements = round((STATEMENTS.count - before_count) / COUNTED_ORDERS, 2)
            results["order"] = {
                "statementsPerOrder": statements,
                "fullAppUsPerOrder": round(statistics.median(per_order["fullApp"]), 1),
                "laneUsPerOrder": round(statistics.median(per_order["lane"]), 1),
                "databaseUsPerOrder": round(statistics.median(database_per_order["lane"]), 1)
                if pg_database
                else None,
                "fullAppRounds": [round(x, 1) for x in per_order["fullApp"]],
                "laneRounds": [round(x, 1) for x in per_order["lane"]],
            }
    config = {"calls": args.calls, "orders": args.orders, "rounds": args.rounds, "backend": args.backend}
    return {"config": config, "results": results}


async def _runner(app: Any, admin_key: str) -> tuple[dict[str, str], str]:
    """A runner attached to a server, created through the admin API: its credential headers, the server."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    headers = {"x-ikoma-admin-key": admin_key}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as admin:
        runner = (await admin.post("/v1/runners", json={"name": "lane-bench"})).raise_for_status().json()
        server = (
            await admin.post("/v1/servers", json={"name": "lane-bench", "hostname": "lane.example.net"})
        ).raise_for_status()
        attached = await admin.patch(f"/v1/servers/{server.json()['id']}", json={"runnerId": runner["id"]})
        attached.raise_for_status()
    return {"x-runner-id": runner["id"], "x-runner-token": runner["token"]}, server.json()["id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", type=int, default=3000, help="calls per round and path (default 3000; 0: skip those cases)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument(
        "--orders", type=int, default=300, help="orders per round of the `order` case (0: skip)"
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--count-statements", action="store_true", help="also count the database requests of an order"
    )
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(run(args)), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
