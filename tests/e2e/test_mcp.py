"""MCP against a real server and runner, through the SDK's own clients: streamable HTTP at /mcp, and
`ikoma mcp` over stdio. Tools are the catalog; calls take the /execute path (same answer, same roles,
same audit log)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import orjson
import pytest
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ikoma.domain import tokens
from tests import processes, support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = pytest.mark.e2e

# a tool every runner answers without an app; the same call gives the same answer twice
PROBE = "platform.check"
CATALOG_OBSERVER = {
    "apps.env.example",
    "apps.validate",
    "apps.status",
    "apps.health",
    "apps.list",
    "apps.logs",
    "db.status",
    "artifact.verify_release",
    "platform.check",
}
CATALOG = CATALOG_OBSERVER | {
    "apps.init",
    "db.create",
    "db.migrate",
    "deploy.up",
    "deploy.down",
    "deploy.restart",
    "deploy.rollback",
    "db.backup",
    "db.restore",
    "apps.remove",
}


@pytest.fixture
def server_database_url(tmp_path: Path) -> str:
    """SQLite only here: MCP is a translation layer over /execute
    (the tool path's integration tests run on both backends)."""
    return f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def fleet(live_server: support.LiveServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = attach_fleet(live_server, tmp_path)
    fleet.start_runner()
    yield fleet
    fleet.stop_runners()


def api_key(server: support.LiveServer, role: str, server_ids: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": f"assistant-{role}", "role": role}
    if server_ids is not None:
        body["serverIds"] = server_ids
    with server.admin() as admin:
        created = admin.post("/v1/api-clients", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


@asynccontextmanager
async def mcp_over_http(
    server: support.LiveServer, key: str, *, mode: str = "legacy", role: str | None = None
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    if role:
        headers["X-Role"] = role
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        async with Client(transport, mode=mode) as client:
            yield client


@asynccontextmanager
async def mcp_over_stdio(server: support.LiveServer, key: str) -> AsyncIterator[Client]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env.update({"IKOMA_API_URL": server.url, "IKOMA_API_KEY": key})
    params = StdioServerParameters(command=sys.executable, args=["-m", "ikoma", "mcp"], env=env)
    async with Client(stdio_client(params), mode="legacy") as client:
        yield client


def rest_get(server: support.LiveServer, key: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": key}, timeout=30) as http:
        return http.get(path)


def resource_json(result: types.ReadResourceResult) -> Any:
    [content] = result.contents
    assert isinstance(content, types.TextResourceContents)
    assert content.mime_type == "application/json"
    return orjson.loads(content.text)


def execute(server: support.LiveServer, key: str, tool: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": key}, timeout=60) as http:
        return http.post(f"/execute/{tool}", json=body)


def steady(check: dict[str, Any]) -> dict[str, Any]:
    """A platform.check answer without the disk figures, which move between two calls."""
    disk = {k: v for k, v in check["details"]["disk"].items() if k not in ("freeBytes", "usedPercent")}
    return {**check, "details": {**check["details"], "disk": disk}}


def by_name(tools: list[types.Tool]) -> dict[str, types.Tool]:
    return {tool.name: tool for tool in tools}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_http_lists_every_catalog_tool_with_schema_and_hints(
    live_server: support.LiveServer, mode: str
) -> None:
    key = api_key(live_server, "operator")
    async with mcp_over_http(live_server, key, mode=mode) as client:
        tools = by_name((await client.list_tools()).tools)
    assert set(tools) >= CATALOG  # plus the built-in playbooks: every playbook is a tool
    health = tools["apps.health"]
    assert health.title == "App health"
    assert health.input_schema["required"] == ["appName"]
    assert {"appName", "serverId", "wait"} <= set(health.input_schema["properties"])
    assert health.annotations is not None
    assert (health.annotations.read_only_hint, health.annotations.destructive_hint) == (True, False)
    remove = tools["apps.remove"].annotations
    assert remove is not None
    assert (remove.read_only_hint, remove.destructive_hint) == (False, True)
    up = tools["deploy.up"].annotations
    assert up is not None
    assert up.read_only_hint is False


async def test_http_call_answers_what_execute_answers(fleet: Fleet) -> None:
    key = api_key(fleet.server, "observer")
    async with mcp_over_http(fleet.server, key) as client:
        result = await client.call_tool(PROBE, {"serverId": fleet.server_id, "wait": 60})
    rest = execute(fleet.server, key, PROBE, {"serverId": fleet.server_id, "wait": 60})
    assert rest.status_code == 200, rest.text
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    assert steady(result.structured_content) == steady(rest.json())
    assert set(result.structured_content["checks"]) == {"docker", "postgres", "appsRoot", "disk"}


async def test_observer_calling_deploy_is_refused_with_the_role_needed_and_audited(fleet: Fleet) -> None:
    key = api_key(fleet.server, "observer")
    async with mcp_over_http(fleet.server, key) as client:
        result = await client.call_tool("deploy.up", {"appName": "myapp", "serverId": fleet.server_id})
    assert result.is_error is True
    assert result.structured_content is not None
    assert result.structured_content["reason"] == "forbidden"
    assert result.structured_content["details"]["required"] == "operator"
    [text] = result.content
    assert isinstance(text, types.TextContent)
    assert "operator" in text.text

    with fleet.server.admin() as admin:
        audit = admin.get("/v1/audit", params={"action": "mcp:deploy.up", "outcome": "denied"})
        orders = admin.get("/v1/orders", params={"playbookKey": "deploy.up"})
    assert audit.status_code == 200, audit.text
    [entry] = audit.json()["items"]
    assert (entry["channel"], entry["role"], entry["statusCode"]) == ("mcp", "observer", 403)
    assert entry["params"] == {"appName": "myapp"}
    assert orders.status_code == 200
    assert orders.json()["items"] == []


async def test_concurrent_callers_each_act_with_their_own_key(fleet: Fleet) -> None:
    observer, operator = api_key(fleet.server, "observer"), api_key(fleet.server, "operator")
    reasons: dict[str, list[str]] = {"observer": [], "operator": []}

    async def call(role: str, key: str) -> None:
        async with mcp_over_http(fleet.server, key) as client:
            for _ in range(3):
                args = {"appName": "ghost", "serverId": fleet.server_id, "wait": 30}
                result = await client.call_tool("deploy.restart", args)
                assert result.structured_content is not None
                reasons[role].append(result.structured_content.get("reason", "ok"))

    async with anyio.create_task_group() as group:
        for _ in range(2):
            group.start_soon(call, "observer", observer)
            group.start_soon(call, "operator", operator)
    assert reasons["observer"] == ["forbidden"] * 6
    # the operator's calls ran (the app does not exist on the runner): never refused for its role
    assert len(reasons["operator"]) == 6
    assert "forbidden" not in reasons["operator"]


async def test_x_role_lowers_what_an_mcp_caller_may_do(fleet: Fleet) -> None:
    key = api_key(fleet.server, "operator")
    async with mcp_over_http(fleet.server, key, role="observer") as client:
        result = await client.call_tool("deploy.down", {"appName": "myapp", "serverId": fleet.server_id})
    assert result.is_error is True
    assert result.structured_content is not None
    assert result.structured_content["details"] == {
        "tool": "deploy.down",
        "required": "operator",
        "role": "observer",
    }


async def test_http_resources_are_the_fleet_summary_and_the_state_of_each_visible_server(
    live_server: support.LiveServer, tmp_path: Path
) -> None:
    web1 = attach_fleet(live_server, tmp_path, "web-1")  # no runner started: nothing moves meanwhile
    web2 = attach_fleet(live_server, tmp_path, "web-2")
    key = api_key(live_server, "observer", server_ids=[web1.server_id])
    state_uri = f"ikoma://servers/{web1.server_id}/state"
    async with mcp_over_http(live_server, key) as client:
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
        summary = resource_json(await client.read_resource("ikoma://fleet/summary"))
        state = resource_json(await client.read_resource(state_uri))
        with pytest.raises(MCPError, match="resource not found"):
            await client.read_resource(f"ikoma://servers/{web2.server_id}/state")
    assert listed == {"ikoma://fleet/summary", state_uri}  # web-2 is outside this key's scope
    assert templates == ["ikoma://servers/{serverId}/state"]
    assert summary == rest_get(live_server, key, "/v1/fleet/summary").json()
    assert summary["servers"] == 1
    assert state == rest_get(live_server, key, f"/v1/servers/{web1.server_id}/state").json()
    assert state["serverName"] == "web-1"


def test_http_without_a_valid_key_is_401(live_server: support.LiveServer) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    unknown = tokens.issue_api_client_token().secret  # well formed, checksum right, never issued
    for credential in ({}, {"Authorization": f"Bearer {unknown}"}, {"Authorization": "Bearer ikoma_x"}):
        response = httpx.post(
            f"{live_server.url}/mcp", json=initialize, headers={**accept, **credential}, timeout=10
        )
        assert response.status_code == 401, (credential, response.text)
        assert response.json()["reason"] == "unauthorized"
    with_key = httpx.post(
        f"{live_server.url}/mcp",
        json=initialize,
        headers={**accept, "Authorization": f"Bearer {api_key(live_server, 'observer')}"},
        timeout=10,
    )
    assert with_key.status_code == 200, with_key.text
    assert with_key.json()["result"]["serverInfo"]["name"] == "ikoma"
    assert "mcp-session-id" not in with_key.headers  # stateless: nothing about the caller is kept
    # no session, so no GET stream to open: 405, as the transport spec says for a server without one
    assert httpx.get(f"{live_server.url}/mcp", timeout=10).status_code == 405


async def test_stdio_server_lists_the_tools_and_calls_one_through_the_api(fleet: Fleet) -> None:
    key = api_key(fleet.server, "observer")
    async with mcp_over_stdio(fleet.server, key) as client:
        tools = by_name((await client.list_tools()).tools)
        result = await client.call_tool(PROBE, {"serverId": fleet.server_id, "wait": 60})
        refused = await client.call_tool("deploy.up", {"appName": "myapp", "serverId": fleet.server_id})
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        summary = resource_json(await client.read_resource("ikoma://fleet/summary"))
    assert resources == {"ikoma://fleet/summary", f"ikoma://servers/{fleet.server_id}/state"}
    assert summary["servers"] == 1
    assert summary["items"][0]["serverId"] == fleet.server_id
    assert set(tools) >= CATALOG  # plus the built-in playbooks: every playbook is a tool
    assert tools["apps.health"].annotations is not None
    assert tools["apps.health"].annotations.read_only_hint is True
    assert result.is_error is False, result.content
    assert set(result.structured_content or {}) >= {"healthy", "checks"}
    assert refused.is_error is True
    assert refused.structured_content is not None
    assert refused.structured_content["details"]["required"] == "operator"
    with fleet.server.admin() as admin:
        audit = admin.get("/v1/audit", params={"action": "execute:"})
    # the stdio proxy goes through /execute: the API audits it as such, with the caller's key
    outcomes = {(e["action"], e["outcome"], e["role"]) for e in audit.json()["items"]}
    assert ("execute:deploy.up", "denied", "observer") in outcomes
    assert (f"execute:{PROBE}", "allowed", "observer") in outcomes


def test_stdio_server_without_a_key_says_so_on_stderr_and_nothing_on_stdout() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    done = processes.run([sys.executable, "-m", "ikoma", "mcp"], env=env, input=b"", timeout=60)
    assert done.returncode == 2
    assert done.stdout == b""  # stdout is the protocol: an error there would be read as a message
    assert b"IKOMA_API_KEY" in done.stderr
