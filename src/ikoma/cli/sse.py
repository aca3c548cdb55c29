"""Reading Server-Sent Events for the CLI: parse the stream, and follow it across disconnects.

`follow` reconnects after a network cut, a server restart or a `stream.lagging` notice, sending the
last id it saw as `Last-Event-ID`, so the caller gets every message once, in order. Waits between
attempts grow from `FIRST_DELAY` to `MAX_DELAY` (with jitter) and start over once messages flow again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import httpx

from ikoma.cli.client import AdminClient, ApiError

FIRST_DELAY = 0.5
MAX_DELAY = 10.0
LAGGING = "stream.lagging"
# answers worth another try: no answer at all (0), a proxy or server restarting, the database away
RETRIED_STATUSES = frozenset({0, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Message:
    event: str
    data: str
    id: str | None = None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """SSE messages from the stream's lines (the WHATWG rules: comments and `retry:` are skipped)."""
    event, last_id, seen = "", None, False
    data: list[str] = []
    for line in lines:
        if line == "":
            if seen and data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data, last_id, seen = "", [], None, False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen = True
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value


def follow(
    client: AdminClient,
    path: str,
    params: Mapping[str, str | int | list[str]],
    *,
    last_id: str | None = None,
    on_retry: Callable[[str, float, str | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Message]:
    """Every message of the stream at `path`, resuming after the last id seen whenever it breaks.

    Ends when the server ends the stream on purpose (any event but `stream.lagging`, i.e. a log
    stream's `end`, is the caller's to stop on); an error answer other than a temporary one raises
    `ApiError`. `on_retry(why, delay, last_id)` is told before each wait.
    """
    delay = FIRST_DELAY
    while True:
        why: str
        try:
            for message in client.stream_sse(path, params, last_event_id=last_id):
                delay = FIRST_DELAY
                if message.event == LAGGING:
                    why = "the stream fell behind and was closed by the server"
                    break
                if message.id is not None:
                    last_id = message.id
                yield message
            else:
                why = "the server closed the stream"
        except ApiError as error:
            if error.status not in RETRIED_STATUSES:
                raise
            why = f"{error.reason}: {error.message}"
        except httpx.TransportError as error:
            why = f"connection lost: {type(error).__name__}"
        wait = 0.0 if why.startswith("the stream fell behind") else delay * random.uniform(0.8, 1.2)  # noqa: S311
        if on_retry is not None:
            on_retry(why, wait, last_id)
        if wait:
            sleep(wait)
            delay = min(delay * 2, MAX_DELAY)
