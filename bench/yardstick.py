"""The yardstick of `make bench`: a bare prototype of the runner's three calls, to measure IKOMA against.

Issue 11 sets IKOMA's targets as ratios to this: the same HTTP routes and JSON shapes the benchmark
drives (`claim-next` → `start` → `complete`, plus the few admin routes its set-up uses), on Starlette
and uvicorn like IKOMA, but with nothing else: no authentication, no validation, no events, no
attempts, no ingestion, no audit. Each runner call is one SQL statement in its own transaction:

* SQLite: the standard library's `sqlite3`, one connection, WAL + synchronous=NORMAL (IKOMA's
  pragmas), called from the event loop (the statement is shorter than a thread hop);
* PostgreSQL: an `asyncpg` pool (8 connections), `FOR UPDATE SKIP LOCKED` for the claim.

Run by bench/dispatch.py as `python bench/yardstick.py --backend sqlite|postgresql --database URL
--port N`; it answers `GET /readyz` once its tables exist. Not a product: it trusts every caller.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS servers (id TEXT PRIMARY KEY, name TEXT, hostname TEXT, runner_id TEXT);
CREATE TABLE IF NOT EXISTS runners (id TEXT PRIMARY KEY, name TEXT, token TEXT);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, server_id TEXT NOT NULL, playbook_key TEXT NOT NULL, params TEXT NOT NULL,
    status TEXT NOT NULL, runner_id TEXT, lease_token TEXT, report TEXT,
    created_at REAL NOT NULL, claimed_at REAL, started_at REAL, finished_at REAL
);
CREATE INDEX IF NOT EXISTS ix_orders_claim ON orders (server_id, status, created_at);
CREATE INDEX IF NOT EXISTS ix_orders_status ON orders (status, created_at);
"""
PG_SCHEMA = SQLITE_SCHEMA.replace("REAL", "DOUBLE PRECISION")

CLAIM_SQLITE = """
UPDATE orders SET status = 'CLAIMED', runner_id = ?1, lease_token = ?2, claimed_at = ?3
WHERE id = (SELECT o.id FROM orders o JOIN servers s ON s.id = o.server_id
            WHERE s.runner_id = ?1 AND o.status = 'QUEUED' ORDER BY o.created_at LIMIT 1)
RETURNING id, server_id, playbook_key, params, status, lease_token
"""
CLAIM_PG = """
UPDATE orders SET status = 'CLAIMED', runner_id = $1, lease_token = $2, claimed_at = $3
WHERE id = (SELECT o.id FROM orders o JOIN servers s ON s.id = o.server_id
            WHERE s.runner_id = $1 AND o.status = 'QUEUED' ORDER BY o.created_at LIMIT 1
            FOR UPDATE OF o SKIP LOCKED)
RETURNING id, server_id, playbook_key, params, status, lease_token
"""
START = """
UPDATE orders SET status = 'RUNNING', started_at = {0}
WHERE id = {1} AND status = 'CLAIMED' AND lease_token = {2}
RETURNING id, server_id, playbook_key, params, status, lease_token
"""
COMPLETE = """
UPDATE orders SET status = {0}, report = {1}, finished_at = {2}
WHERE id = {3} AND status = 'RUNNING' AND lease_token = {4}
RETURNING id, server_id, playbook_key, params, status, lease_token
"""
COLUMNS = ("id", "serverId", "playbookKey", "params", "status", "leaseToken")


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _order(row: Any) -> dict[str, Any]:
    order = dict(zip(COLUMNS, row, strict=True))
    order["params"] = orjson.loads(order["params"])
    return order


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SQLITE_SCHEMA)

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        return self.db.execute(sql, args).fetchall()

    def statement(self, template: str, count: int) -> str:
        return template.format(*(["?"] * count))


class PostgresStore:
    def __init__(self) -> None:
        self.pool: Any = None

    async def open(self, url: str) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(url, min_size=8, max_size=8)
        async with self.pool.acquire() as conn:
            await conn.execute(PG_SCHEMA)

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    def statement(self, template: str, count: int) -> str:
        return template.format(*(f"${i}" for i in range(1, count + 1)))


def build(store: SqliteStore | PostgresStore, claim_sql: str, lifespan: Any = None) -> Starlette:
    start_sql = store.statement(START, 3)
    complete_sql = store.statement(COMPLETE, 5)
    insert_sql = store.statement(
        "INSERT INTO orders (id, server_id, playbook_key, params, status, created_at) "
        "VALUES ({0}, {1}, {2}, {3}, 'QUEUED', {4})",
        5,
    )

    async def ready(_: Request) -> Response:
        return _json({"status": "ready"})

    async def create_server(request: Request) -> Response:
        body = orjson.loads(await request.body())
        server_id = str(uuid.uuid4())
        sql = store.statement("INSERT INTO servers (id, name, hostname) VALUES ({0}, {1}, {2})", 3)
        await store.execute(sql, server_id, body["name"], body["hostname"])
        return _json({"id": server_id}, 201)

    async def create_runner(request: Request) -> Response:
        body = orjson.loads(await request.body())
        runner_id, token = str(uuid.uuid4()), uuid.uuid4().hex
        sql = store.statement("INSERT INTO runners (id, name, token) VALUES ({0}, {1}, {2})", 3)
        await store.execute(sql, runner_id, body["name"], token)
        return _json({"id": runner_id, "token": token}, 201)

    async def attach(request: Request) -> Response:
        body = orjson.loads(await request.body())
        server_id = request.path_params["server_id"]
        sql = store.statement("UPDATE servers SET runner_id = {0} WHERE id = {1}", 2)
        await store.execute(sql, body["runnerId"], server_id)
        return _json({"id": server_id, "runnerId": body["runnerId"]})

    async def create_order(request: Request) -> Response:
        body = orjson.loads(await request.body())
        order_id = str(uuid.uuid4())
        params = orjson.dumps(body.get("params") or {}).decode()
        await store.execute(insert_sql, order_id, body["serverId"], body["playbookKey"], params, time.time())
        return _json({"order": {"id": order_id, "status": "QUEUED"}}, 201)

    async def list_orders(request: Request) -> Response:
        sql = store.statement("SELECT id FROM orders WHERE status = {0}", 1)
        rows = await store.execute(sql, request.query_params.get("status", "QUEUED"))
        return _json({"items": [{"id": row[0]} for row in rows], "nextCursor": None})

    async def claim_next(request: Request) -> Response:
        runner_id = request.headers["x-runner-id"]
        rows = await store.execute(claim_sql, runner_id, str(uuid.uuid4()), time.time())
        return _json(_order(rows[0])) if rows else Response(status_code=204)

    async def start(request: Request) -> Response:
        body = orjson.loads(await request.body())
        rows = await store.execute(
            start_sql, time.time(), request.path_params["order_id"], body["leaseToken"]
        )
        return _json(_order(rows[0])) if rows else _json({"reason": "invalid_status"}, 409)

    async def complete(request: Request) -> Response:
        body = orjson.loads(await request.body())
        report = orjson.dumps(body["report"]).decode()
        rows = await store.execute(
            complete_sql,
            body["status"],
            report,
            time.time(),
            request.path_params["order_id"],
            body["leaseToken"],
        )
        return _json(_order(rows[0])) if rows else _json({"reason": "invalid_status"}, 409)

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/readyz", ready),
            Route("/v1/servers", create_server, methods=["POST"]),
            Route("/v1/runners", create_runner, methods=["POST"]),
            Route("/v1/servers/{server_id}", attach, methods=["PATCH"]),
            Route("/v1/orders", create_order, methods=["POST"]),
            Route("/v1/orders", list_orders, methods=["GET"]),
            Route("/v1/runner/orders/claim-next", claim_next, methods=["POST"]),
            Route("/v1/runner/orders/{order_id}/start", start, methods=["POST"]),
            Route("/v1/runner/orders/{order_id}/complete", complete, methods=["POST"]),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="bare prototype of the runner calls (benchmark yardstick)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--database", required=True, help="SQLite file path, or a postgresql:// URL")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.backend == "sqlite":
        app = build(SqliteStore(args.database), CLAIM_SQLITE)
    else:
        store = PostgresStore()

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            await store.open(args.database)
            yield
            await store.pool.close()

        app = build(store, CLAIM_PG, lifespan)
    # the same server stack as `ikoma serve` (uvicorn, uvloop + httptools when installed), no access log
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
