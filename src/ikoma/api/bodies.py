"""Request bodies, one set of rules for every route: size limit, media type, JSON, no NUL character.

Pure functions and a streaming reader over ASGI `receive`; `api/guard.py` applies them to the admin
routes before FastAPI sees the body, and the runner routes call them after the runner authenticated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from ikoma.domain.errors import BadRequest, DomainError, Invalid

# curl -d sends this unless told otherwise; our bodies are JSON whatever the form type says
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
NUL_ESCAPE = b"\\u0000"  # JSON can only carry NUL escaped (a raw one is a parse error)
# orjson (stored JSON, idempotency fingerprints, answers) writes integers within 64 bits only; a longer
# digit run is rare, and only then is the body parsed again to find an integer past that range
LONG_DIGITS = re.compile(rb"\d{19,}")
INTEGER_RANGE = (-(2**63), 2**64 - 1)


class PayloadTooLarge(DomainError):
    status_code = 413
    reason = "payload_too_large"


class UnsupportedMediaType(DomainError):
    status_code = 415
    reason = "unsupported_media_type"


def too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than this route's limit of {limit} bytes ({setting})",
        limitBytes=limit,
        setting=setting,
    )


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def declared_length(scope: Scope) -> int | None:
    """Content-Length as sent (None when absent or chunked); a malformed one is uvicorn's to refuse."""
    value = header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def has_body(scope: Scope) -> bool:
    length = declared_length(scope)
    if length is not None:
        return length > 0
    return header(scope, b"transfer-encoding") is not None


def check_media_type(content_type: str | None) -> None:
    """JSON, or nothing said, or curl's default form type; any other declared type is refused (415)."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("", JSON_TYPE, FORM_TYPE) or media.endswith("+json"):
        return
    raise UnsupportedMediaType(
        f"request body must be JSON (Content-Type: {JSON_TYPE}), not {media[:100]}",
        contentType=media[:100],
    )


async def read(
    receive: Receive,
    *,
    limit: int,
    setting: str,
    declared: int | None,
    before_waiting: Callable[[], Awaitable[None]] | None = None,
) -> bytes:
    """The body, refused with 413 as soon as it is known to pass `limit` (declared or streamed).

    `before_waiting` runs before any wait for more of the body (and before refusing a declared
    over-size one): the runner routes authenticate there, so an unknown caller is answered 401 without
    the server reading its body, and no database transaction is held while a slow body arrives.
    """
    if declared is not None and declared > limit:
        if before_waiting is not None:
            await before_waiting()
        raise too_large(limit, setting)
    message = await receive()
    chunks: list[bytes] = []
    size = 0
    waited = False
    while True:
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if before_waiting is not None and not waited:
                await before_waiting()
            raise too_large(limit, setting)
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the whole body came with the first message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)
        if before_waiting is not None and not waited:
            waited = True
            await before_waiting()
        message = await receive()


def limited(receive: Receive, *, limit: int, setting: str, declared: int | None) -> Receive:
    """`receive` that raises 413 once the body is known to pass `limit`, for a handler that reads its
    body itself and must see the refusal (`/execute` audits every refusal of a tool call)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        if declared is not None and declared > limit:
            raise too_large(limit, setting)
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit, setting)
        return message

    return wrapped


def parse_json(raw: bytes, *, empty: Any = None, content_type: str | None = None) -> Any:
    """The JSON document in `raw` (`empty` for a blank body); 400 invalid_json or 422 nul_character."""
    if not raw.strip():
        return empty
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        sent_as_form = (content_type or "").split(";", 1)[0].strip().lower() == FORM_TYPE
        hint = (
            f" (it was sent as {FORM_TYPE}, curl -d's default; this API reads JSON)" if sent_as_form else ""
        )
        raise BadRequest(
            f"request body is not valid JSON{hint}: {exc}",
            reason="invalid_json",
            line=exc.lineno,
            column=exc.colno,
        ) from None
    if NUL_ESCAPE in raw:  # rare; only then is the document walked (the escape may be `\\u0000` text)
        refuse_nul(data)
    refuse_huge_integers(raw)
    return data


class _HugeInteger(ValueError):
    pass


def _bounded_int(text: str) -> int:
    # past 20 digits it is out of range whatever it is; int() is not asked (it refuses 4300+ digits)
    value = int(text) if len(text.lstrip("-")) <= 20 else None
    if value is None or not INTEGER_RANGE[0] <= value <= INTEGER_RANGE[1]:
        raise _HugeInteger(text)
    return value


def refuse_huge_integers(raw: bytes) -> None:
    """422 for an integer past 64 bits anywhere in the JSON body: it could not be stored or answered
    (orjson reads it as a float, so the check looks at the text; FastAPI reads the body again as ints)."""
    if LONG_DIGITS.search(raw) is None:
        return
    try:
        json.loads(raw, parse_int=_bounded_int)
    except _HugeInteger as exc:
        shown = str(exc)[:40]
        message = f"integers must be within 64 bits ({INTEGER_RANGE[0]} to {INTEGER_RANGE[1]}), not {shown}"
        raise Invalid(
            message, errors=[{"path": "<body>", "message": message, "type": "integer_out_of_range"}]
        ) from None
    except ValueError:
        return  # not JSON for the standard library either: its parse error is answered elsewhere


def nul_path(value: Any, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where the first NUL character is (keys included), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = (*path, _printable(key))
            if "\x00" in key:
                return where
            found = nul_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, (*path, str(index)))
            if found is not None:
                return found
    return None


def _printable(key: str) -> str:
    return key.replace("\x00", "\\u0000")


def nul_error(path: str) -> Invalid:
    message = "text must not contain the NUL character (\\u0000)"
    return Invalid(
        message,
        reason="nul_character",
        errors=[{"path": path, "message": message, "type": "nul_character"}],
    )


def refuse_nul(data: Any) -> None:
    where = nul_path(data)
    if where is not None:
        raise nul_error(".".join(where))
