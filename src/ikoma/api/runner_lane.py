"""The runner lane: runner calls go straight to their routes, ahead of the admin middleware stack.

`RunnerLane` is the outermost ASGI callable `ikoma serve` listens with. An HTTP request under
`/v1/runner/` goes to a small Starlette router of the runner routes (api/runner.py); everything else
(admin routes, probes, lifespan, MCP) goes to the full FastAPI app. A runner call is the hot path
(three per order, plus a long-poll per idle runner) and none of the admin layers does anything for it:
the policy table lists the runner routes as RUNNER (their handlers check the token), the guard leaves
their bodies to the handlers (each reads its own under IKOMA_BODY_LIMIT_RUNNER / _LOGS), and FastAPI's
error and telemetry wrappers only re-raise. So the lane keeps what those layers give a runner call,
inline (docs/performance.md, "The runner lane"):

- the request id on every answer and in every log line (`RequestContext`, the same middleware);
- every exception answered in the one error shape: the full app's own exception handlers
  (api/errors.py: DomainError, pydantic's ValidationError, 404/405), then `RequestContext` for the
  rest (a database outage → 503 `database_unavailable`, anything else → 500 `internal_error`);
- NUL in the URL and query parameters the route does not take refused (`guard.check_url`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Router
from starlette.types import Receive, Scope, Send

from ikoma.api.guard import RUNNER_PREFIX, check_url
from ikoma.api.request_context import RequestContext

# keys of the last-resort handler, which the full app runs outside its middlewares (never reached:
# RequestContext answers every exception first); the lane leaves those to RequestContext too
_LAST_RESORT = (500, Exception)


class RunnerLane:
    def __init__(self, app: Starlette, routes: Sequence[BaseRoute], *, prefix: str = RUNNER_PREFIX) -> None:
        self.app = app
        self.prefix = prefix
        self.router = Router(routes=list(routes))
        self.lane = RequestContext(self._route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            scope["app"] = self.app  # the handlers find the context on `request.app.state`
            await self.lane(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            check_url(scope)
            await self.router(scope, receive, send)
        except Exception as exc:
            # The handlers answer with a built Response, so an exception comes before any byte of the
            # answer was sent: answering it here can never make a second response start.
            handler = self._handler_for(exc)
            if handler is None:
                raise  # RequestContext: 503 database_unavailable or 500 internal_error, one log line
            answer = handler(Request(scope, receive), exc)
            if inspect.isawaitable(answer):
                answer = await answer
            response: Response = answer
            await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        """The full app's handler for `exc`, looked up as Starlette's ExceptionMiddleware does."""
        handlers = self.app.exception_handlers
        if isinstance(exc, HTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for kind in type(exc).__mro__:
            if kind in handlers and kind not in _LAST_RESORT:
                return handlers[kind]
        return None
