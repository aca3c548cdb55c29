"""MCP over streamable HTTP at `/mcp`: the tool catalog as MCP tools, each call run by `execute_tool`.

Built on the first request by `api/mcp.py` (the SDK is slow to import).

Who calls is the Principal that PolicyMiddleware put on the HTTP request carrying the MCP message
(`Authorization: Bearer <API key>` or `X-Api-Key`, `X-Role` to act with a lower role); the SDK hands
that request to each handler as `ServerRequestContext.request`. Nothing about the caller is kept
between requests: the endpoint is stateless (no MCP session, every POST answered with one JSON
response), so a call can never act with another request's identity, and any API process can answer
any request. Authorization, confirmation, validation and audit are `services.tools.execute_tool`'s,
with channel "mcp": this module only translates.

Failures never reach the SDK, which would answer an exception's own text (a database error's SQL and
parameters): a tool call that fails is a tool error result (`isError`, the `/execute` error body as
`structuredContent`: 503 `audit_unavailable` when its audit entry cannot be written, 503
`database_unavailable` in an outage, 500 `internal_error`); any other request that fails is a JSON-RPC
error (-32603) whose message is the fixed sentence and whose `data.reason` is the same reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import mcp_types as types
import structlog
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel
from starlette.requests import Request

from ikoma import __version__
from ikoma.api import errors
from ikoma.api import state as state_routes
from ikoma.api.state_schemas import FleetSummary, MachineStatePublic
from ikoma.bootstrap import Context
from ikoma.contracts import mcp as contract
from ikoma.domain.errors import DomainError, Invalid, NotFound
from ikoma.services import servers, tools
from ikoma.services.identity import Principal

RequestContext = ServerRequestContext[Any, Any]
R = TypeVar("R")

log = structlog.get_logger("ikoma.mcp")


def _failure(exc: Exception, what: str) -> tuple[int, str, str]:
    """(status, reason, fixed message) for an exception nothing answered; one log line, no traceback."""
    if errors.is_database_outage(exc):
        log.warning("mcp_failed", reason="database_unavailable", call=what, **errors.error_fields(exc))
        return 503, "database_unavailable", errors.OUTAGE_MESSAGE
    log.error(
        "mcp_failed",
        reason="internal_error",
        call=what,
        detail=errors.short_error(exc),
        **errors.error_fields(exc),
    )
    log.debug("mcp_failed_traceback", call=what, exc_info=exc)
    return 500, "internal_error", errors.INTERNAL_MESSAGE


async def _answered(what: str, handler: Awaitable[R]) -> R:
    """`handler`'s answer; an exception becomes a JSON-RPC error that names its reason and nothing else."""
    try:
        return await handler
    except (MCPError, DomainError):
        raise
    except Exception as exc:
        _, reason, message = _failure(exc, what)
        raise MCPError(types.INTERNAL_ERROR, message, {"reason": reason}) from None


class McpServer:
    """The MCP server of one app, and the ASGI app that answers `/mcp` with it."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.server: Server[Any] = Server(
            "ikoma",
            version=__version__,
            title="IKOMA",
            instructions=contract.INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )
        self._sessions = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            json_response=True,
            # The SDK's DNS-rebinding guard (Host/Origin allow-lists) is left off: it protects servers
            # that answer without credentials, and every request here carries an API key a rebinding
            # page does not have; IKOMA also runs behind names and proxies the SDK cannot know.
            security_settings=None,
        )
        self.asgi = StreamableHTTPASGIApp(self._sessions)

    def run(self) -> AbstractAsyncContextManager[None]:
        """The session manager's task group, which every request's server runs in."""
        return self._sessions.run()

    async def _list_tools(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        entries = await _answered("tools/list", tools.list_tools(self._ctx, principal_of(rctx)))
        return types.ListToolsResult(tools=[contract.tool_from_entry(entry) for entry in entries])

    async def _call_tool(
        self, rctx: RequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal = principal_of(rctx)
        tool_params, server_id, wait = contract.split_arguments(params.arguments)
        try:
            try:
                call_server, call_wait = _server_id(server_id), _wait(wait)
            except DomainError as refusal:
                # refused before execute_tool, as /execute refuses its body: audited here, with the tool
                await tools.audit_refusal(
                    self._ctx, principal, tool=params.name, refusal=refusal, params=tool_params, channel="mcp"
                )
                raise
            outcome = await tools.execute_tool(
                self._ctx,
                principal,
                tool=params.name,
                params=tool_params,
                server_id=call_server,
                wait=call_wait,
                channel="mcp",
            )
        except DomainError as refusal:
            # audited as denied (by execute_tool, or above), or 503 audit_unavailable when that audit
            # entry could not be written; the assistant gets /execute's error body
            return contract.tool_result(
                refusal.status_code, contract.error_body(refusal.reason, refusal.message, refusal.details)
            )
        except Exception as exc:  # as /execute answers it: a fixed sentence, never the exception's text
            status, reason, message = _failure(exc, "tools/call")
            return contract.tool_result(status, contract.error_body(reason, message))
        return contract.tool_result(outcome.status_code, outcome.body)

    async def _list_resources(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        principal = principal_of(rctx)
        listed = await _answered("resources/list", servers.list_servers(self._ctx.db))
        visible = [s for s in listed if principal.can_see_server(str(s["id"]))]
        return contract.resources(visible)

    async def _list_resource_templates(
        self, rctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        principal_of(rctx)
        return contract.resource_templates()

    async def _read_resource(
        self, rctx: RequestContext, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        """The JSON `GET /v1/fleet/summary` or `GET /v1/servers/{id}/state` answers, by the same route
        functions and response models, so scope rules and shape cannot drift apart."""
        return await _answered("resources/read", self._read(principal_of(rctx), str(params.uri)))

    async def _read(self, principal: Principal, uri: str) -> types.ReadResourceResult:
        try:
            if uri == contract.FLEET_SUMMARY_URI:
                found = await state_routes.fleet_summary(self._ctx, principal)
                return contract.resource_contents(uri, _wire(FleetSummary, found))
            server_id = contract.server_of_state_uri(uri)
            if server_id is not None:
                found = await state_routes.get_state(uuid.UUID(server_id), self._ctx, principal)
                return contract.resource_contents(uri, _wire(MachineStatePublic, found))
        except NotFound as missing:
            # a server outside the caller's scope is not found either, exactly as over REST
            raise MCPError(
                types.INVALID_PARAMS, f"resource not found: {missing.message}", {"uri": uri}
            ) from None
        raise MCPError(types.INVALID_PARAMS, "resource not found: no such resource", {"uri": uri})


def _wire(model: type[BaseModel], found: Any) -> Any:
    """What FastAPI sends for a route with this response model."""
    return model.model_validate(found).model_dump(mode="json", by_alias=True)


def principal_of(rctx: RequestContext) -> Principal:
    """The caller, from the HTTP request that carries this MCP message."""
    request = rctx.request
    principal = request.scope.get("state", {}).get("principal") if isinstance(request, Request) else None
    if not isinstance(principal, Principal):
        # PolicyMiddleware authenticates every request to /mcp before it gets here; without a Principal
        # the route escaped the policy table, and nothing runs as nobody
        raise MCPError(types.INVALID_REQUEST, "unauthenticated: send Authorization: Bearer <API key>")
    return principal


# The /execute body's own fields, refused as its route refuses them (422, before any order or audit).
def _server_id(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 200):
        raise Invalid("serverId must be a server id or name", field=contract.SERVER_ID)
    return None if value is None else str(value)


def _wait(value: Any) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
        raise Invalid("wait must be a number of seconds, 0 or more", field=contract.WAIT)
    return None if value is None else float(value)
