"""`ikoma mcp` forwards MCP to the REST API with its key, and maps the API's answers, decisions included.

The proxy's MCP server is driven in process by the SDK's own client; the API is an httpx mock that
records what it was sent. The real round trip (a subprocess against a live server) is in
tests/e2e/test_mcp.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import mcp_types as types
import orjson
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from ikoma.cli.mcp_proxy import RestProxy, http_client

API = "http://ikoma.test"
KEY = "ikc_test_secret_key"

CATALOG = [
    {
        "key": "apps.health",
        "name": "App health",
        "description": "Health of every process of the app.",
        "paramsSchema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["appName"],
            "properties": {"appName": {"type": "string"}},
        },
        "minRole": "observer",
        "destructive": False,
        "readOnly": True,
        "allowed": True,
    },
    {
        "key": "deploy.up",
        "name": "Deploy",
        "description": "Validate, start the app and record a release.",
        "paramsSchema": {"type": "object", "properties": {"appName": {"type": "string"}}},
        "minRole": "operator",
        "destructive": False,
        "readOnly": False,
        "allowed": False,
    },
]

Handler = Callable[[httpx.Request], httpx.Response]
MODES = ["legacy", "auto"]


class FakeApi:
    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def proxy_client(api: FakeApi, mode: str, role: str | None = None) -> tuple[Client, httpx.AsyncClient]:
    http = http_client(API, KEY, role, transport=httpx.MockTransport(api))  # a fake network
    return Client(RestProxy(http).server(), mode=mode), http


def json_answer(status: int, body: Any) -> Handler:
    """`body` for the call; the catalog for `GET /v1/tools` (the SDK's client lists the tools to check a
    result against the tool's output schema)."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/tools" and status < 400:
            return httpx.Response(200, content=orjson.dumps(CATALOG))
        return httpx.Response(status, content=orjson.dumps(body))

    return answer


def posts(api: FakeApi) -> list[httpx.Request]:
    return [r for r in api.requests if r.method == "POST"]


@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_the_api_catalog_fetched_with_the_key(mode: str) -> None:
    api = FakeApi(json_answer(200, {}))
    client, http = proxy_client(api, mode)
    async with http, client:
        listed = await client.list_tools()
    assert [t.name for t in listed.tools] == ["apps.health", "deploy.up"]
    health = listed.tools[0]
    assert health.annotations is not None
    assert health.annotations.read_only_hint is True
    assert set(health.input_schema["properties"]) == {"appName", "serverId", "wait"}
    [request] = api.requests
    assert (request.method, request.url.path) == ("GET", "/v1/tools")
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("mode", MODES)
async def test_a_call_posts_its_arguments_as_the_execute_body(mode: str) -> None:
    answer = {"health": "healthy", "processes": [{"name": "web", "healthy": True}]}
    api = FakeApi(json_answer(200, answer))
    client, http = proxy_client(api, mode, role="observer")
    async with http, client:
        result = await client.call_tool("apps.health", {"appName": "myapp", "serverId": "web-1", "wait": 30})
    assert result.is_error is False
    assert result.structured_content == answer
    [request] = posts(api)
    assert request.url.path == "/execute/apps.health"
    assert orjson.loads(request.content) == {"appName": "myapp", "serverId": "web-1", "wait": 30}
    assert request.headers["x-role"] == "observer"


@pytest.mark.parametrize("mode", MODES)
async def test_a_refusal_by_the_api_is_a_tool_error_naming_the_role_needed(mode: str) -> None:
    refusal = {
        "reason": "forbidden",
        "message": "tool deploy.up needs role operator; this request acts as observer",
        "details": {"tool": "deploy.up", "required": "operator", "role": "observer"},
    }
    api = FakeApi(json_answer(403, refusal))
    client, http = proxy_client(api, mode)
    async with http, client:
        result = await client.call_tool("deploy.up", {"appName": "myapp"})
    assert result.is_error is True
    assert result.structured_content == refusal
    [text] = result.content
    assert isinstance(text, types.TextContent)
    assert "needs role operator" in text.text


@pytest.mark.parametrize("mode", MODES)
async def test_an_answer_that_is_not_the_api_error_shape_is_still_a_readable_tool_error(mode: str) -> None:
    api = FakeApi(lambda _r: httpx.Response(502, text="<html>Bad Gateway</html>"))
    client, http = proxy_client(api, mode)
    async with http, client:
        result = await client.call_tool("apps.health", {"appName": "myapp"})
    assert result.is_error is True
    assert result.structured_content == {"reason": "http_502", "message": "<html>Bad Gateway</html>"}


@pytest.mark.parametrize("mode", MODES)
async def test_an_api_that_does_not_answer_is_a_tool_error_not_a_crash(mode: str) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, http = proxy_client(FakeApi(down), mode)
    async with http, client:
        result = await client.call_tool("apps.health", {"appName": "myapp"})
    assert result.is_error is True
    assert result.structured_content["reason"] == "api_unreachable"
    assert KEY not in str(result.structured_content)


@pytest.mark.parametrize("mode", MODES)
async def test_a_refused_key_makes_the_tool_list_fail_with_the_api_reason(mode: str) -> None:
    api = FakeApi(json_answer(401, {"reason": "unauthorized", "message": "credential is missing or invalid"}))
    client, http = proxy_client(api, mode)
    async with http, client:
        with pytest.raises(MCPError, match="unauthorized: credential is missing or invalid"):
            await client.list_tools()


@pytest.mark.parametrize("name", ["..", "a/../../v1/api-clients", "apps health", ""])
async def test_a_name_that_cannot_be_a_tool_never_becomes_a_url(name: str) -> None:
    api = FakeApi(json_answer(200, {}))
    client, http = proxy_client(api, "legacy")
    async with http, client:
        with pytest.raises(MCPError, match="unknown tool"):
            await client.call_tool(name, {})
    assert posts(api) == []
