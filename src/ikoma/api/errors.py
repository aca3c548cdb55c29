"""One JSON error shape everywhere: `{"reason", "message", "details"?, "errors"?}`, never a traceback."""

from __future__ import annotations

import socket
import sqlite3
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ikoma.domain.errors import DomainError

log = structlog.get_logger("ikoma.api")

JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=JSON_OPTIONS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


# An error echoes what the client sent (a path, a value inside a message); never all of it.
ECHO_LIMIT = 200
MESSAGE_LIMIT = 500
MAX_ERRORS = 50


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text`, or its start and end around a marker saying how much was cut (the end often says why)."""
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head
    return f"{text[:head]}…[{len(text) - limit} characters cut]…{text[-tail:]}"


def _clipped(value: Any) -> Any:
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, dict):
        return {clip(str(k)): _clipped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clipped(v) for v in value[:MAX_ERRORS]]
    return value


def _clipped_errors(errors: list[Any]) -> list[Any]:
    shown = [
        {**e, "message": clip(str(e.get("message", "")), MESSAGE_LIMIT), "path": clip(str(e.get("path", "")))}
        if isinstance(e, dict)
        else _clipped(e)
        for e in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        more = len(errors) - MAX_ERRORS
        shown.append({"path": "", "message": f"{more} more errors not shown", "type": "too_many_errors"})
    return shown


def error_response(status: int, reason: str, message: str, **extra: Any) -> Response:
    """The one error shape; echoed input is clipped (a huge value never comes back whole)."""
    body: dict[str, Any] = {"reason": reason, "message": clip(message, MESSAGE_LIMIT)}
    for key, value in extra.items():
        if value:
            body[key] = _clipped_errors(value) if key == "errors" else _clipped(value)
    return json_response(body, status)


def refusal_response(refusal: DomainError) -> Response:
    """A DomainError as its error response (`details.errors` becomes the top-level `errors`)."""
    extra: dict[str, Any] = {}
    details = dict(refusal.details)
    if "errors" in details:
        extra["errors"] = details.pop("errors")
    return error_response(refusal.status_code, refusal.reason, refusal.message, details=details, **extra)


def validation_errors(errors: list[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """pydantic errors → [{path, message, type}] with dotted camelCase paths (`report.steps.0.name`)."""
    out = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        # FastAPI prefixes where the value came from; keep the field path only. Body and query
        # locations already carry the wire name (the alias); a path parameter is named by its
        # template (`server_id`), so it is given the wire's camelCase too.
        if loc and loc[0] in ("body", "query", "path", "header"):
            source, loc = loc[0], loc[1:]
            if source == "path" and loc:
                loc[0] = to_camel(loc[0])
        out.append(
            {
                "path": ".".join([*prefix, *loc]),
                "message": err.get("msg", "invalid"),
                "type": err.get("type", ""),
            }
        )
    return out


HTTP_REASONS = {
    404: "route_not_found",
    405: "method_not_allowed",
    400: "bad_request",
    413: "payload_too_large",
}


# PostgreSQL SQLSTATEs of a server that cannot serve now: class 08 (connection exception), 57P01-57P05
# (admin/crash shutdown, cannot connect now: starting up, shutting down, in recovery; idle timeouts), 53300
# (too many connections). The query was not refused for what it is: a retry later may work.
_OUTAGE_SQLSTATE_PREFIXES = ("08", "57P", "53300")
# SQLite's OperationalError also means "no such table" or a syntax error (a bug, a 500): only these
# result codes (and their extended forms, SQLITE_IOERR_WRITE…) say the file cannot serve now.
_SQLITE_OUTAGES = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_NOMEM",
)


def _sqlstate(exc: BaseException) -> str | None:
    for name in ("sqlstate", "pgcode"):
        value = getattr(exc, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, the DBAPI error SQLAlchemy wrapped (`.orig`), and what each was raised from (`from`)."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending and len(seen) < 10:
        current = pending.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        pending += [orig if isinstance(orig, BaseException) else None, current.__cause__]
    return seen


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot answer now (lost, refusing, starting, stopping, full of
    connections), as opposed to refusing this query: a 503 the caller may retry, not a 500."""
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, sqlite3.Error):  # the driver's own result code decides
            name = getattr(cause, "sqlite_errorname", None) or ""
            return name.startswith(_SQLITE_OUTAGES) or "database is locked" in str(cause)
    for cause in causes:
        if isinstance(
            cause, OperationalError | InterfaceError | PoolTimeout | DisconnectionError | ConnectionError
        ):
            return True
        if isinstance(cause, TimeoutError | socket.gaierror):
            return True
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        state = _sqlstate(cause)
        if state is not None and state.startswith(_OUTAGE_SQLSTATE_PREFIXES):
            return True
        kind = type(cause)
        if kind.__module__.startswith("asyncpg") and (
            "Connect" in kind.__name__ or "Shutdown" in kind.__name__ or kind.__name__ == "InterfaceError"
        ):
            return True
    return False


def short_error(exc: BaseException) -> str:
    """One line about `exc` that is safe to log: a database error without its SQL and parameters."""
    shown: BaseException = exc
    orig = getattr(exc, "orig", None)
    if isinstance(exc, DBAPIError) and isinstance(orig, BaseException):
        shown = orig  # SQLAlchemy's own text repeats the statement and its parameters
    lines = str(shown).strip().splitlines()
    return clip(lines[0] if lines else "", 200)


def error_fields(exc: BaseException) -> dict[str, str]:
    """The exception's type for a log line, and the driver's own error under it when it wrapped one."""
    fields = {"error": type(exc).__name__}
    root = type(_causes(exc)[-1]).__name__
    if root != fields["error"]:
        fields["cause"] = root
    return fields


OUTAGE_MESSAGE = "the database is not answering; retry shortly"
INTERNAL_MESSAGE = "unexpected server error; it was logged"


def failure_response(exc: BaseException, *, path: str, method: str, request_id: str | None) -> Response:
    """The answer to an exception no handler took, logged as ONE structured line (no traceback).

    A database outage is 503 `database_unavailable` at warning; anything else is 500 `internal_error` at
    error, with the exception's type and first line; the traceback only at debug level.
    """
    fields = {"path": path, "method": method, "request_id": request_id, **error_fields(exc)}
    if is_database_outage(exc):
        log.warning("request_failed", reason="database_unavailable", status=503, **fields)
        return error_response(503, "database_unavailable", OUTAGE_MESSAGE)
    log.error("request_failed", reason="internal_error", status=500, detail=short_error(exc), **fields)
    log.debug("request_failed_traceback", exc_info=exc, **fields)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def install(app: FastAPI) -> None:
    async def domain_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return refusal_response(exc)

    async def request_invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        json_invalid = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if json_invalid:
            return error_response(400, "invalid_json", "request body is not valid JSON")
        return error_response(
            422, "validation_error", "request is invalid", errors=validation_errors(list(exc.errors()))
        )

    async def model_invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return error_response(
            422, "validation_error", "request is invalid", errors=validation_errors(list(exc.errors()))
        )

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        reason = HTTP_REASONS.get(exc.status_code, "http_error")
        return error_response(exc.status_code, reason, str(exc.detail))

    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(ValidationError, model_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # Exceptions no handler above takes are answered by api/request_context.py (outside every
    # middleware): Starlette's catch-all handler re-raises after answering, and uvicorn then logs a
    # traceback and closes the keep-alive connection.


class FastJSONResponse(JSONResponse):
    """FastAPI's default response class, rendered by orjson.

    A JSONResponse, so that FastAPI documents each route's response model as the body (for any other
    response class it documents the body as a plain string).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=JSON_OPTIONS)
