"""The SSE answer (sse-starlette): a comment heartbeat, and a stalled peer dropped quietly.

Its own module because sse-starlette imports uvicorn: api/event_stream.py imports it on the first
stream, so that importing the API stays cheap (tests/unit/test_api_import.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

log = structlog.get_logger("ikoma.sse")

# a peer that takes no bytes for this long is gone (or stuck): its stream is closed and freed
SEND_TIMEOUT_SECONDS = 60.0


class EventStreamResponse(EventSourceResponse):
    """An SSE answer whose heartbeat is a comment line, and whose stalled peer is dropped quietly."""

    def __init__(self, content: AsyncIterator[bytes], *, heartbeat: float) -> None:
        super().__init__(
            content,
            ping=heartbeat,
            sep="\n",
            ping_message_factory=lambda: ServerSentEvent(comment="heartbeat", sep="\n"),
            send_timeout=SEND_TIMEOUT_SECONDS,
            headers={"Cache-Control": "no-cache"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.info("sse_send_timeout", path=scope["path"], seconds=SEND_TIMEOUT_SECONDS)
