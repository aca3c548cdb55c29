"""The `/mcp` route: the MCP server (`api/mcp_server.py`) is imported and started on its first request.

The MCP SDK takes about as long to import as the rest of the API together; building it lazily keeps
that cost off every start of the API (and off every test that starts one), and on the first assistant
call instead. Its session manager's task group then lives in a task of its own until the app stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ikoma.bootstrap import Context

MCP_PATH = "/mcp"


def called_tool(body: bytes) -> str | None:
    """The tool a JSON-RPC `tools/call` message names (None for any other message, or no message).

    The policy reads it from a request it refused, to audit the refusal under the tool's name.
    """
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return None
    params = message.get("params")
    name = params.get("name") if isinstance(params, dict) else None
    return name if isinstance(name, str) and name else None


class McpEndpoint:
    """The route, and the lifespan hook that stops the MCP server if it was started."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._app: ASGIApp | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None
        self.route = Route(
            MCP_PATH,
            endpoint=_Lazy(self),
            # stateless: no session to open a GET stream on or to DELETE; POST carries every message
            methods=["POST"],
            name="mcp",
            include_in_schema=False,
        )

    async def app(self) -> ASGIApp:
        if self._app is not None:
            return self._app
        async with self._starting:
            if self._app is None:
                from ikoma.api.mcp_server import McpServer

                server = McpServer(self._ctx)
                ready = asyncio.Event()

                async def hold() -> None:
                    async with server.run():
                        ready.set()
                        await self._stop.wait()

                self._holder = asyncio.create_task(hold(), name="mcp-sessions")
                await ready.wait()
                self._app = server.asgi
        return self._app

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Entered by the app's lifespan: on the way out, the MCP server (if any) stops."""
        try:
            yield
        finally:
            self._stop.set()
            if self._holder is not None:
                await self._holder


class _Lazy:
    """An ASGI callable (not a function, so Starlette does not wrap it as a request handler)."""

    def __init__(self, endpoint: McpEndpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = await self.endpoint.app()
        await app(scope, receive, send)
