"""The stdio MCP server behind `ikoma mcp`: IKOMA's tools for a desktop assistant.

A proxy to the REST API: `tools/list` is `GET /v1/tools`, `tools/call` is `POST /execute/<tool>` with
the call's arguments as the body, both with the configured API key. Roles, confirmation, validation
and the audit log are the API's, exactly as for curl or `/mcp`; this process decides nothing.
stdout carries the protocol, so everything else (logs, errors) goes to stderr, and the key is never
written anywhere.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from ikoma import __version__
from ikoma.contracts import mcp as contract

# MCP tool names (SEP-986); anything else cannot be a catalog key and is not sent as a URL path
TOOL_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
LIST_TIMEOUT = httpx.Timeout(30.0)
# the API bounds how long a call waits (`wait`, capped by IKOMA_EXECUTE_MAX_WAIT): no read timeout here
EXECUTE_TIMEOUT = httpx.Timeout(30.0, read=None)

RequestContext = ServerRequestContext[Any, Any]


class RestProxy:
    """The MCP handlers of `ikoma mcp`, answered by the IKOMA API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    def server(self) -> Server[Any]:
        return Server(
            "ikoma",
            version=__version__,
            title="IKOMA",
            instructions=contract.INSTRUCTIONS,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
        )

    async def list_tools(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        entries = await self._get_json("/v1/tools")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "key" in e for e in entries):
            raise MCPError(types.INTERNAL_ERROR, f"{self._http.base_url}/v1/tools is not IKOMA's tool list")
        return types.ListToolsResult(tools=[contract.tool_from_entry(entry) for entry in entries])

    async def call_tool(
        self, rctx: RequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if not TOOL_NAME.fullmatch(params.name):
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}")
        try:
            response = await self._http.post(
                f"/execute/{quote(params.name, safe='')}",
                json=dict(params.arguments or {}),
                timeout=EXECUTE_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            return contract.tool_result(503, contract.error_body("api_unreachable", self._unreachable(exc)))
        if response.status_code >= 400:
            return contract.tool_result(response.status_code, _error_body(response))
        try:
            return contract.tool_result(response.status_code, response.json())
        except ValueError:
            body = contract.error_body(
                "not_ikoma", f"{response.url} answered {response.status_code} without JSON"
            )
            return contract.tool_result(502, body)

    async def list_resources(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        servers = await self._get_json("/v1/servers")
        if not isinstance(servers, list) or not all(isinstance(s, dict) and "id" in s for s in servers):
            raise MCPError(
                types.INTERNAL_ERROR, f"{self._http.base_url}/v1/servers is not IKOMA's server list"
            )
        return contract.resources(servers)

    async def list_resource_templates(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return contract.resource_templates()

    async def read_resource(
        self, rctx: RequestContext, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        server_id = contract.server_of_state_uri(uri)
        if uri == contract.FLEET_SUMMARY_URI:
            path = "/v1/fleet/summary"
        elif server_id is not None:
            path = f"/v1/servers/{server_id}/state"
        else:
            raise MCPError(types.INVALID_PARAMS, "resource not found: no such resource", {"uri": uri})
        return contract.resource_contents(uri, await self._get_json(path, missing_uri=uri))

    async def _get_json(self, path: str, *, missing_uri: str | None = None) -> Any:
        try:
            response = await self._http.get(path, timeout=LIST_TIMEOUT)
        except httpx.HTTPError as exc:
            raise MCPError(types.INTERNAL_ERROR, self._unreachable(exc)) from None
        if response.status_code == 404 and missing_uri is not None:
            message = f"resource not found: {_error_body(response).get('message')}"
            raise MCPError(types.INVALID_PARAMS, message, {"uri": missing_uri})
        if response.status_code != 200:
            raise MCPError(types.INTERNAL_ERROR, contract.refusal_text(_error_body(response)))
        try:
            return response.json()
        except ValueError:
            raise MCPError(types.INTERNAL_ERROR, f"{response.url} answered without JSON") from None

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        return f"the IKOMA API at {self._http.base_url} did not answer: {type(exc).__name__}: {exc}"


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """The API's error body, or one in its shape when something else answered (a proxy, not IKOMA)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return body
    text = response.text.strip()[:200] or response.reason_phrase
    return contract.error_body(f"http_{response.status_code}", text)


def http_client(
    api_url: str,
    api_key: str,
    role: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}", "User-Agent": f"ikoma-mcp/{__version__}"}
    if role:
        headers["X-Role"] = role
    return httpx.AsyncClient(base_url=api_url.rstrip("/"), headers=headers, transport=transport)


async def serve_stdio(api_url: str, api_key: str, role: str | None) -> None:
    async with http_client(api_url, api_key, role) as http:
        server = RestProxy(http).server()
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
