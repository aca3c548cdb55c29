"""The audit table made unwritable under a running API (RELIABILITY.md scenario 20; issue 10 items 9, 10).

A trigger refuses every insert into audit_log (SQLite `RAISE(ABORT)`, a PL/pgSQL `RAISE EXCEPTION`; the
test server's role is a superuser, whom REVOKE would not stop). Then every channel refuses cleanly:
a REST mutation, `/execute` (an accepted call and a refused one) answer 503 `audit_unavailable` with the
fixed sentence and nothing else, no order is created, and an MCP tool call is a tool error with the same
body, never the database's message, SQL or parameters. Each answer keeps the keep-alive connection and
carries an `X-Request-Id`; the log holds no traceback. With the trigger gone, calls work again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from ikoma.services.tools import AUDIT_UNAVAILABLE
from tests import support

pytestmark = [pytest.mark.e2e]

REFUSED = "audit refused by the fault test"
UNAVAILABLE = {"reason": "audit_unavailable", "message": AUDIT_UNAVAILABLE}
ACCEPT = {"Accept": "application/json, text/event-stream"}
# a value that would show if the statement's parameters leaked into an answer
PROBE = "probe-7f3a"


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _pg(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def refuse_audit(url: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(_sqlite_path(url)) as db:
            db.execute(
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
            )
        return
    _pg(
        url,
        "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN RAISE EXCEPTION '{REFUSED}'; END $$; "
        "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_refused()",
    )


def allow_audit(url: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(_sqlite_path(url)) as db:
            db.execute("DROP TRIGGER audit_refused")
        return
    _pg(url, "DROP TRIGGER audit_refused ON audit_log; DROP FUNCTION audit_refused()")


class Connections:
    """An httpx client that records, per answer, the local address of the connection it came on."""

    def __init__(self, server: support.LiveServer) -> None:
        self.ports: list[Any] = []
        self.client = httpx.Client(
            base_url=server.url,
            headers={"X-Api-Key": server.admin_key},
            timeout=60,
            event_hooks={"response": [self._seen]},
        )

    def _seen(self, response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        self.ports.append(stream.get_extra_info("client_addr"))


@pytest.fixture
def http(live_server: support.LiveServer) -> Iterator[Connections]:
    connections = Connections(live_server)
    with connections.client:
        yield connections


def _order_count(server: support.LiveServer) -> int:
    with server.admin() as admin:
        page = admin.get("/v1/orders", params={"limit": 500})
    assert page.status_code == 200, page.text
    return len(page.json()["items"])


def _assert_clean(answer: httpx.Response) -> None:
    for leaked in (REFUSED, "INSERT", "audit_log", PROBE, "Traceback"):
        assert leaked not in answer.text, answer.text


def test_an_unwritable_audit_refuses_every_channel_with_503_audit_unavailable_and_leaks_nothing(
    live_server: support.LiveServer, http: Connections
) -> None:
    created = http.client.post("/v1/servers", json={"name": "web-1", "hostname": "web-1.example.net"})
    assert created.status_code == 201, created.text
    before = _order_count(live_server)
    # a valid call: refused only by its audit entry, written with its order in one transaction
    call = {"appName": "shop", "serverId": "web-1", "wait": 0}
    refuse_audit(live_server.database_url)

    mutation = http.client.post("/v1/servers", json={"name": "web-2", "hostname": "web-2.example.net"})
    execute = http.client.post("/execute/apps.status", json=call, headers={"X-Request-Id": "audit-down-1"})
    unknown = http.client.post("/execute/no.such.tool", json={"probe": PROBE})  # a refusal's audit
    mcp = http.client.post(
        "/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "apps.status", "arguments": call},
        },
        headers=ACCEPT,
    )
    health = http.client.get("/health")

    for answer in (mutation, execute, unknown):
        assert (answer.status_code, answer.json()) == (503, UNAVAILABLE), answer.text
        _assert_clean(answer)
        assert answer.headers["x-request-id"]
    assert execute.headers["x-request-id"] == "audit-down-1"
    assert mcp.status_code == 200, mcp.text
    result = mcp.json()["result"]
    assert result["isError"] is True
    assert result["structuredContent"] == UNAVAILABLE
    _assert_clean(mcp)
    assert health.status_code == 200
    # no order exists without its audit entry
    assert _order_count(live_server) == before
    # every answer, the refusals included, came on the one keep-alive connection
    assert len(set(http.ports)) == 1, http.ports

    allow_audit(live_server.database_url)
    again = http.client.post("/execute/apps.status", json=call)
    assert again.status_code == 202, again.text
    assert _order_count(live_server) == before + 1

    log = live_server.read_log()
    assert "Traceback" not in log, live_server.log_tail()
    assert REFUSED not in log  # the database's message is not logged either: the error type is
