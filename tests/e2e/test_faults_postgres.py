"""PostgreSQL stopped, started in recovery, and started again under a running API and runner
(RELIABILITY.md scenario 10; issue 10 items 8 and 10).

A private cluster (tests/pgcluster.py) the test stops and starts itself: while it is down, and while it
refuses connections in recovery (SQLSTATE 57P03), every route answers 503 `database_unavailable` (never
500) with the caller's `X-Request-Id`, and the API logs one line per failure, no traceback; once it is
back the API serves again without a restart, the order that ran through the outage ends SUCCEEDED once,
and no order is left CLAIMED without a lease.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests import pgcluster, support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = [pytest.mark.e2e]

ACCEPT = {"Accept": "application/json, text/event-stream"}


def _calls(fleet: Fleet, request_id: str) -> dict[str, httpx.Response]:
    """One call of each kind: admin read, audited admin mutation, runner call, /execute, MCP tool call."""
    server = fleet.server
    admin = {"X-Api-Key": server.admin_key, "X-Request-Id": request_id}
    runner = {"X-Runner-Id": fleet.runner_id, "X-Runner-Token": fleet.token, "X-Request-Id": request_id}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "apps.status", "arguments": {"appName": "shop", "serverId": fleet.server_id}},
    }
    connections = set()

    def seen(response: httpx.Response) -> None:
        connections.add(response.extensions["network_stream"].get_extra_info("client_addr"))

    with httpx.Client(base_url=server.url, timeout=60, event_hooks={"response": [seen]}) as http:
        answers = {
            "admin read": http.get("/v1/orders", headers=admin),
            "admin mutation": http.post("/v1/servers", json={"name": "late", "hostname": "x"}, headers=admin),
            "runner claim": http.post("/v1/runner/orders/claim-next", headers=runner, json={}),
            "execute": http.post("/execute/apps.status", json={"serverId": fleet.server_id}, headers=admin),
            "mcp": http.post("/mcp", json=call, headers={**admin, **ACCEPT}),
        }
    # every 503 is a regular answer: the keep-alive connection carried them all
    assert len(connections) == 1, connections
    return answers


def _assert_unavailable(answers: dict[str, httpx.Response], request_id: str) -> None:
    for name, answer in answers.items():
        assert answer.headers.get("x-request-id") == request_id, name
        if name == "mcp":  # the JSON-RPC exchange worked; the tool call failed (isError) with the reason
            assert answer.status_code == 200, answer.text
            result = answer.json()["result"]
            assert result["isError"] is True, result
            assert result["structuredContent"]["reason"] == "database_unavailable", result
            continue
        assert (name, answer.status_code) == (name, 503), answer.text
        assert answer.json()["reason"] == "database_unavailable", (name, answer.text)


def _log_lines(server: support.LiveServer) -> list[dict[str, Any]]:
    lines = []
    for raw in server.read_log().splitlines():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def _wait_serving(server: support.LiveServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with server.admin() as admin:
            answer = admin.get("/v1/orders")
        if answer.status_code == 200:
            return
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, f"API still answers {answer.text}\n{server.log_tail()}"
        time.sleep(0.2)


def _claimed_without_lease(url: str) -> list[str]:
    async def query() -> list[str]:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT id FROM orders WHERE status = 'CLAIMED' "
                "AND (lease_token IS NULL OR lease_expires_at IS NULL)"
            )
        finally:
            await conn.close()
        return [str(r["id"]) for r in rows]

    return asyncio.run(query())


def test_postgresql_down_then_in_recovery_answers_503_and_the_api_recovers_without_restart(
    tmp_path: Path,
) -> None:
    with pgcluster.private_cluster() as pg:
        pg.execute("CREATE DATABASE ikoma")
        server = support.LiveServer(database_url=pg.url("ikoma"), data_dir=tmp_path / "data")
        server.start()
        fleet: Fleet | None = None
        try:
            fleet = attach_fleet(server, tmp_path)
            fleet.start_runner()
            warm = fleet.order("shell.exec", {"argv": ["true"]})
            assert fleet.wait_done(warm)["status"] == "SUCCEEDED"
            # runs through the outage: its end is spooled by the runner and delivered once the API can
            long = fleet.order("shell.exec", {"argv": ["sleep", "3"]})
            fleet.wait_status(long, {"RUNNING"})
            queued = [fleet.order("shell.exec", {"argv": ["true"]}) for _ in range(3)]

            pg.stop("fast")
            _assert_unavailable(_calls(fleet, "outage-stopped"), "outage-stopped")

            pg.start(standby=True)  # up, in recovery: connections refused with 57P03
            _assert_unavailable(_calls(fleet, "outage-recovering"), "outage-recovering")

            pg.stop("fast")
            pg.start()
            _wait_serving(server)  # the same API process: no restart

            done = fleet.wait_done(long, timeout=120)
            assert done["status"] == "SUCCEEDED", fleet.logs_tail()
            assert done["attempt"] == 1, done
            assert [e["toStatus"] for e in fleet.events(long)].count("RUNNING") == 1
            for order_id in queued:
                assert fleet.wait_done(order_id, timeout=120)["status"] == "SUCCEEDED", fleet.logs_tail()
            assert _claimed_without_lease(pg.url("ikoma")) == []
        finally:
            if fleet is not None:
                fleet.stop_runners()
            server.stop()

        log = server.read_log()
        assert "Traceback" not in log, server.log_tail()
        failures = [line for line in _log_lines(server) if line.get("event") == "request_failed"]
        by_request = {line["request_id"] for line in failures}
        assert {"outage-stopped", "outage-recovering"} <= by_request, failures
        assert {line["reason"] for line in failures} == {"database_unavailable"}, failures
        assert all(line["status"] == 503 and line["path"] and line["method"] for line in failures)
        # in recovery, the driver's own error says 57P03
        recovering = [line for line in failures if line["request_id"] == "outage-recovering"]
        assert {line.get("cause") for line in recovering} == {"CannotConnectNowError"}, recovering


def _terminate_backends(database: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(support.PG_ADMIN_URL, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        finally:
            await conn.close()
        return len(rows)

    return asyncio.run(run())


@pytest.mark.postgres
def test_connections_killed_by_pg_terminate_backend_answer_503_and_a_keyed_retry_makes_one_order(
    tmp_path: Path,
) -> None:
    """Scenario 9: the API's connections are killed (57P01) under it: 503, never 500; retrying with the
    same Idempotency-Key until it is answered gives one order, created once."""
    with support.running_server("postgresql", tmp_path) as server:
        fleet = attach_fleet(server, tmp_path)
        database = server.database_url.rsplit("/", 1)[1]
        body = {"serverId": fleet.server_id, "playbookKey": "shell.exec", "params": {"argv": ["true"]}}
        headers = {"X-Api-Key": server.admin_key, "Idempotency-Key": "terminated-1"}
        statuses: list[int] = []
        created: set[str] = set()
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(3):
                assert http.get("/v1/orders", headers=headers).status_code == 200  # connections pooled
                assert _terminate_backends(database) > 0
                for _ in range(20):  # the caller's retries, same key
                    answer = http.post("/v1/orders", json=body, headers=headers)
                    statuses.append(answer.status_code)
                    if answer.status_code != 503:
                        break
                    assert answer.json()["reason"] == "database_unavailable", answer.text
                assert answer.status_code in (200, 201), answer.text
                created.add(answer.json()["order"]["id"])
        assert 503 in statuses, statuses  # the killed connection was met, and answered 503
        assert 500 not in statuses
        [order_id] = created
        assert [e["toStatus"] for e in fleet.events(order_id)] == ["QUEUED"]
        log = server.read_log()
        assert "Traceback" not in log, server.log_tail()
