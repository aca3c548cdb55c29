"""A tool name of 193 to 200 characters over HTTP, for every role, on SQLite and PostgreSQL (issue 10
item 8): `execute:<name>` no longer fits the audit's 200-character action column, which PostgreSQL
refused with a 500 and no audit entry. Each call answers 404 `tool_not_found` and is audited, cut short.
tests/integration/test_tool_audit_limits.py covers the service; this covers the wire, /execute and MCP.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests import support

pytestmark = [pytest.mark.e2e]

ROLES = ("observer", "builder", "operator", "admin")
LENGTHS = range(193, 201)
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    yield from support.live_server_per_module(request, tmp_path_factory)


def _key(server: support.LiveServer, role: str) -> str:
    with server.admin() as admin:
        created = admin.post(
            "/v1/api-clients", json={"name": f"names-{role}-{uuid.uuid4().hex[:6]}", "role": role}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def _audited(server: support.LiveServer, prefix: str) -> list[dict[str, object]]:
    with server.admin() as admin:
        page = admin.get("/v1/audit", params={"action": prefix, "limit": 1000})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


@pytest.mark.parametrize("role", ROLES)
def test_a_193_to_200_character_tool_name_is_refused_and_audited_for_every_role(
    server: support.LiveServer, role: str
) -> None:
    key = _key(server, role)
    stem = f"n{uuid.uuid4().hex[:8]}"
    names = [stem + "x" * (length - len(stem)) for length in LENGTHS]
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": key}, timeout=60) as http:
        for name in names:
            executed = http.post(f"/execute/{name}", json={})
            assert (executed.status_code, executed.json()["reason"]) == (404, "tool_not_found"), executed.text
            called = http.post(
                "/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": name, "arguments": {}},
                },
                headers=ACCEPT,
            )
            assert called.status_code == 200, called.text
            result = called.json()["result"]
            assert result["isError"] is True
            assert result["structuredContent"]["reason"] == "tool_not_found"

    for channel in ("execute", "mcp"):
        entries = _audited(server, f"{channel}:{stem}")
        assert len(entries) == len(names), entries
        assert {(e["outcome"], e["reason"]) for e in entries} == {("denied", "tool_not_found")}
        assert all(len(str(e["action"])) <= 200 for e in entries)
