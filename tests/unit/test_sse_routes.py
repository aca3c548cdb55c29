"""The SSE routes' own rules (api/event_stream.py): where a stream resumes, and a failure mid-stream
ends it quietly instead of a traceback."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from ikoma.api.event_stream import ended_quietly, resume_point
from ikoma.domain.errors import Invalid


def test_last_event_id_wins_over_after_because_an_eventsource_reconnects_to_its_first_url() -> None:
    assert resume_point("42", 0) == 42
    assert resume_point(None, 7) == 7
    assert resume_point(" ", 7) == 7
    assert resume_point(None, None) is None


@pytest.mark.parametrize("header", ["seven", "-1", "1.5", str(2**63)])
def test_a_last_event_id_that_is_no_event_id_is_refused_with_a_reason(header: str) -> None:
    with pytest.raises(Invalid) as refused:
        resume_point(header, None)
    assert refused.value.reason == "invalid_last_event_id"


async def test_a_failure_mid_stream_ends_it_after_what_was_sent_and_closes_the_source() -> None:
    closed = False

    async def frames() -> AsyncGenerator[bytes, None]:
        nonlocal closed
        try:
            yield b"id: 1\n\n"
            raise ConnectionError("the database went away")
        finally:
            closed = True

    assert [chunk async for chunk in ended_quietly(frames())] == [b"id: 1\n\n"]
    assert closed


async def test_a_stream_closed_by_its_client_closes_its_source_at_once() -> None:
    closed = False

    async def frames() -> AsyncGenerator[bytes, None]:
        nonlocal closed
        try:
            while True:
                yield b": heartbeat\n\n"
        finally:
            closed = True

    stream = ended_quietly(frames())
    await anext(stream)
    await stream.aclose()
    assert closed
