"""The CLI's SSE reader (cli/sse.py): parsing the wire format, and following a stream across cuts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from ikoma.cli import sse
from ikoma.cli.client import ApiError


def test_messages_are_parsed_with_their_id_and_kind_and_comments_and_retry_are_skipped() -> None:
    lines = [
        "retry: 3000",
        "",
        ": live",
        "",
        "id: 7",
        "event: order.created",
        'data: {"id": 7}',
        "",
        ": heartbeat",
        "",
        "event: stream.lagging",
        "data: one",
        "data: two",
        "",
    ]
    assert list(sse.parse(lines)) == [
        sse.Message("order.created", '{"id": 7}', "7"),
        sse.Message("stream.lagging", "one\ntwo", None),
    ]


def test_a_message_cut_off_before_its_blank_line_is_not_delivered() -> None:
    assert list(sse.parse(["id: 1", "event: x.y", "data: {}"])) == []


class Script:
    """A fake client: each call to stream_sse plays the next scripted answer (messages, then an error)."""

    def __init__(self, *answers: tuple[list[sse.Message], Exception | None]) -> None:
        self.answers = list(answers)
        self.resumed_from: list[str | None] = []

    def stream_sse(
        self, path: str, params: Mapping[str, Any], *, last_event_id: str | None = None
    ) -> Iterator[sse.Message]:
        self.resumed_from.append(last_event_id)
        messages, error = self.answers.pop(0)
        yield from messages
        if error is not None:
            raise error


def event(n: int) -> sse.Message:
    return sse.Message("order.created", f'{{"id": {n}}}', str(n))


def test_follow_resumes_after_the_last_id_seen_whatever_broke_the_stream() -> None:
    client = Script(
        ([event(1), event(2)], httpx.ReadTimeout("silent")),
        ([], ApiError(0, "api_unreachable", "refused")),
        ([event(3), sse.Message("stream.lagging", "{}")], None),
        ([event(4)], ApiError(503, "database_unavailable", "down")),
        ([event(5)], ApiError(401, "unauthorized", "revoked")),
    )
    got: list[str | None] = []
    retries: list[tuple[str, float]] = []
    messages = sse.follow(
        client,  # type: ignore[arg-type]
        "/v1/events/stream",
        {},
        on_retry=lambda why, delay, _last: retries.append((why, delay)),
        sleep=lambda _s: None,
    )
    with pytest.raises(ApiError) as refused:
        got.extend(message.id for message in messages)
    assert refused.value.status == 401  # not a temporary failure: given up, not retried
    assert got == ["1", "2", "3", "4", "5"]
    assert client.resumed_from == [None, "2", "2", "3", "4"]
    assert [delay == 0 for _, delay in retries] == [False, False, True, False]  # lagging: at once
