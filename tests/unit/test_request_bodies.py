"""Request bodies and error echoes (api/bodies.py, api/errors.py), without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from ikoma.api import bodies
from ikoma.api.errors import clip, validation_errors
from ikoma.api.schemas import ServerUpdate
from ikoma.domain.errors import DomainError
from ikoma.services.servers import has_labels, parse_label_filters


def refusal(call: Any) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"name": "a\\u0000b"}', "name"),
        (b'{"labels": {"k\\u0000": "v"}}', "labels.k\\u0000"),
        (b'{"params": {"list": ["ok", {"deep": "\\u0000"}]}}', "params.list.1.deep"),
        (b'["\\u0000"]', "0"),
    ],
)
def test_nul_anywhere_in_a_json_body_is_422_nul_character_with_its_path(raw: bytes, path: str) -> None:
    error = refusal(lambda: bodies.parse_json(raw))
    assert (error.status_code, error.reason) == (422, "nul_character")
    assert [e["path"] for e in error.details["errors"]] == [path]


def test_an_escaped_backslash_before_u0000_is_text_not_nul() -> None:
    assert bodies.parse_json(b'{"name": "a\\\\u0000"}') == {"name": "a\\u0000"}


def test_invalid_json_is_400_invalid_json_naming_where_and_the_form_type() -> None:
    error = refusal(lambda: bodies.parse_json(b"name=web", content_type="application/x-www-form-urlencoded"))
    assert (error.status_code, error.reason) == (400, "invalid_json")
    assert "application/x-www-form-urlencoded" in error.message
    assert error.details == {"line": 1, "column": 1}


def test_a_blank_body_is_the_empty_value() -> None:
    assert bodies.parse_json(b"  \n", empty={}) == {}


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "application/merge-patch+json",
    ],
)
def test_json_form_or_no_media_type_is_read_as_json(content_type: str | None) -> None:
    bodies.check_media_type(content_type)


@pytest.mark.parametrize("content_type", ["text/xml", "multipart/form-data; boundary=x", "text/plain"])
def test_another_media_type_is_415_unsupported_media_type(content_type: str) -> None:
    error = refusal(lambda: bodies.check_media_type(content_type))
    assert (error.status_code, error.reason) == (415, "unsupported_media_type")


def receiver(chunks: list[bytes]) -> tuple[Any, list[int]]:
    """An ASGI receive over `chunks`, and the number of chunks handed out so far."""
    given = [0]

    async def receive() -> dict[str, Any]:
        index = given[0]
        given[0] += 1
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    return receive, given


def read(chunks: list[bytes], declared: int | None, limit: int = 10) -> tuple[bytes | DomainError, list[str]]:
    receive, _ = receiver(chunks)
    calls: list[str] = []

    async def authenticate() -> None:
        calls.append("authenticated")

    async def run() -> bytes:
        return await bodies.read(
            receive, limit=limit, setting="LIMIT", declared=declared, before_waiting=authenticate
        )

    try:
        return asyncio.run(run()), calls
    except DomainError as error:
        return error, calls


def test_a_body_that_came_with_the_headers_is_read_without_waiting_to_authenticate() -> None:
    assert read([b"0123456789"], declared=10) == (b"0123456789", [])


def test_a_body_still_streaming_is_waited_for_only_after_authentication() -> None:
    assert read([b"01234", b"56789"], declared=None) == (b"0123456789", ["authenticated"])


def test_a_declared_length_past_the_limit_is_413_after_authentication_without_reading() -> None:
    receive, given = receiver([b"x" * 11])

    async def authenticate() -> None:
        pass

    with pytest.raises(bodies.PayloadTooLarge) as caught:
        asyncio.run(bodies.read(receive, limit=10, setting="LIMIT", declared=11, before_waiting=authenticate))
    assert caught.value.details == {"limitBytes": 10, "setting": "LIMIT"}
    assert given == [0]


def test_a_streamed_body_past_the_limit_is_413_before_the_rest_is_read() -> None:
    receive, given = receiver([b"x" * 6, b"x" * 6, b"x" * 6])
    with pytest.raises(bodies.PayloadTooLarge):
        asyncio.run(bodies.read(receive, limit=10, setting="LIMIT", declared=None))
    assert given == [2]


def test_a_bad_credential_stops_a_streamed_body_before_it_is_read() -> None:
    receive, given = receiver([b"x" * 5, b"x" * 5])

    async def refuse() -> None:
        raise DomainError("no", reason="unauthorized")

    with pytest.raises(DomainError, match="no"):
        asyncio.run(bodies.read(receive, limit=100, setting="LIMIT", declared=None, before_waiting=refuse))
    assert given == [1]


def test_a_long_echo_is_clipped_keeping_its_start_and_end() -> None:
    text = "'" + "x" * 1_500_000 + "' is too long"
    clipped = clip(text)
    assert len(clipped) < 260
    assert clipped.startswith("'xxx")
    assert clipped.endswith("is too long")
    assert "characters cut" in clipped
    assert clip("short") == "short"


def test_path_parameter_errors_are_named_in_camel_case() -> None:
    errors = [{"loc": ("path", "server_id"), "msg": "bad", "type": "uuid_parsing"}]
    assert validation_errors(errors)[0]["path"] == "serverId"


@pytest.mark.parametrize("field", ["name", "hostname", "port", "labels", "osFamily"])
def test_null_for_a_server_field_that_cannot_be_empty_is_refused_at_its_path(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ServerUpdate.model_validate({field: None})
    assert [e["loc"] for e in caught.value.errors()] == [(field,)]


def test_null_for_a_nullable_server_field_clears_it() -> None:
    update = ServerUpdate.model_validate({"osVersion": None, "runnerId": None})
    assert update.model_dump(exclude_unset=True) == {"os_version": None, "runner_id": None}


def test_label_filters_are_key_value_or_key_and_all_must_hold() -> None:
    wanted = parse_label_filters(["env=prod", "team", "expr=a=b"])
    assert wanted == [("env", "prod"), ("team", None), ("expr", "a=b")]
    assert has_labels({"env": "prod", "team": "", "expr": "a=b"}, wanted)
    assert not has_labels({"env": "prod", "expr": "a=b"}, wanted)
    assert not has_labels({"env": "dev", "team": "x", "expr": "a=b"}, wanted)
    assert has_labels(None, [])


def test_a_label_filter_without_a_key_is_422() -> None:
    error = refusal(lambda: parse_label_filters(["=prod"]))
    assert (error.status_code, error.reason) == (422, "validation_error")
