"""Log streaming: batching, seq order across retries, masking, a missing route tolerated."""

from __future__ import annotations

from typing import Any

from ikoma.runner import logs as logs_module
from ikoma.runner.client import ApiUnreachable, NotFound
from ikoma.runner.logs import MAX_CHUNK_BYTES, LogStream, Masker, secret_values, split_text


class Sink:
    def __init__(self) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.fail_next = 0
        self.error: Exception = ApiUnreachable("refused")

    async def __call__(self, chunks: list[dict[str, Any]]) -> None:
        self.calls.append([dict(c) for c in chunks])
        if self.fail_next:
            self.fail_next -= 1
            raise self.error


def test_secret_values_match_key_names_at_any_depth() -> None:
    params = {"password": "p4ss", "nested": {"ApiKey": "k3y", "list": [{"x_token": "t0k"}]}, "name": "web"}
    assert set(secret_values(params)) == {"p4ss", "k3y", "t0k"}
    masker = Masker.for_params(params)
    assert masker("p4ss k3y t0k web") == "*** *** *** web"


async def test_lines_are_batched_into_chunks_with_increasing_seq() -> None:
    sink = Sink()
    stream = LogStream(sink)
    stream.write("stdout", "a\nb\n")
    stream.write("stdout", "c\n")
    stream.write("stderr", "oops\n")
    stream.write("stdout", "partial")
    assert await stream.flush()
    chunks = sink.calls[0]
    assert [c["seq"] for c in chunks] == [0, 1, 2]
    assert [(c["stream"], c["data"]) for c in chunks] == [
        ("stdout", "a\nb\nc\n"),
        ("stderr", "oops\n"),
        ("stdout", "partial"),
    ]
    stream.write("stdout", "more\n")
    await stream.flush()
    assert sink.calls[1] == [{"seq": 3, "stream": "stdout", "data": "more\n"}]


async def test_a_failed_send_is_retried_with_the_same_seq() -> None:
    sink = Sink()
    sink.fail_next = 1
    stream = LogStream(sink)
    stream.write("stdout", "one\n")
    assert not await stream.flush()
    stream.write("stdout", "two\n")
    assert await stream.flush()
    assert sink.calls[0] == [{"seq": 0, "stream": "stdout", "data": "one\n"}]
    assert sink.calls[1] == [
        {"seq": 0, "stream": "stdout", "data": "one\n"},
        {"seq": 1, "stream": "stdout", "data": "two\n"},
    ]


async def test_secrets_are_masked_even_when_split_across_writes() -> None:
    sink = Sink()
    stream = LogStream(sink, Masker(["hunter2"]))
    stream.write("stdout", "the password is hun")
    stream.write("stdout", "ter2 ok\n")
    await stream.close()
    assert sink.calls[0][0]["data"] == "the password is *** ok\n"


def test_long_text_is_split_under_the_chunk_limit() -> None:
    text = ("x" * 1000 + "\n") * 200 + "é" * (MAX_CHUNK_BYTES * 2)
    pieces = split_text(text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= MAX_CHUNK_BYTES for p in pieces)


async def test_missing_route_is_tolerated_and_warned_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(logs_module, "_warned_missing_route", False)
    sink = Sink()
    sink.fail_next = 5
    sink.error = NotFound(404, "route_not_found", "no route")
    stream = LogStream(sink)
    stream.write("stdout", "x\n")
    assert await stream.close()
    assert stream.disabled
    stream.write("stdout", "y\n")
    assert await stream.flush()
    assert len(sink.calls) == 1  # no further attempt once the API said it has no such route


async def test_ticker_ships_lines_within_about_a_second() -> None:
    import asyncio

    sink = Sink()
    stream = LogStream(sink, max_age=0.1)
    stream.start()
    stream.write("stdout", "hello\n")
    await asyncio.sleep(0.35)
    assert sink.calls
    assert sink.calls[0][0]["data"] == "hello\n"
    await stream.close()
