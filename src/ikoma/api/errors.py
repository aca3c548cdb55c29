"""One JSON error shape everywhere: `{"reason", "message", "details"?, "errors"?}`, never a traceback."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

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


def _is_database_outage(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    module = type(exc).__module__
    return module.startswith("asyncpg") and "Connection" in type(exc).__name__


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

    async def unexpected(request: Request, exc: Exception) -> Response:
        if _is_database_outage(exc):
            log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
            return error_response(503, "database_unavailable", "the database is not answering; retry shortly")
        log.exception("unhandled_error", path=request.url.path)
        return error_response(500, "internal_error", "unexpected server error; it was logged")

    app.add_exception_handler(DomainError, domain_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(ValidationError, model_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class FastJSONResponse(Response):
    """FastAPI's default response class, rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=JSON_OPTIONS)
