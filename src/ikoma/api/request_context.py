"""Every request gets an id, every answer carries it, and no exception escapes to the server.

`RequestContext` is the outermost middleware (pure ASGI). It takes the caller's `X-Request-Id` when it
is 1 to 64 characters of `[A-Za-z0-9._-]` (anything else is replaced, never echoed), else makes one;
binds it to structlog's context, so every line logged while the request runs names it; and sends it
back in the `X-Request-Id` header of every answer, errors included.

An exception nothing else answered becomes a regular response here (`errors.failure_response`: 503
`database_unavailable` or 500 `internal_error`, one log line). Nothing is re-raised: Starlette's own
catch-all re-raises after answering, and uvicorn then logs a traceback and closes the keep-alive
connection; a client retrying through an outage would reconnect for every call.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikoma.api import errors

HEADER = b"x-request-id"
VALID_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

log = structlog.get_logger("ikoma.api")


def request_id_of(scope: Scope) -> str:
    """The caller's valid `X-Request-Id`, else a new one (32 hex digits)."""
    for key, value in scope.get("headers", ()):
        if key == HEADER:
            if VALID_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except ClientDisconnect:
                # the caller left before its body was read (a runner's call timing out in an outage):
                # nobody to answer, and nothing went wrong here
                log.info("client_disconnected", path=scope["path"], method=scope["method"])
            except Exception as exc:
                if started:
                    # half an answer is on the wire: only closing the connection can tell the client
                    log.error(
                        "response_interrupted",
                        path=scope["path"],
                        method=scope["method"],
                        error=type(exc).__name__,
                        detail=errors.short_error(exc),
                    )
                    raise
                answer = errors.failure_response(
                    exc, path=scope["path"], method=scope["method"], request_id=request_id
                )
                await answer(scope, receive, send_with_id)
