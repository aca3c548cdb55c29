"""Input checks every route gets before its handler runs, so no route can forget them.

`RequestGuard` (pure ASGI, inside PolicyMiddleware: the caller is authenticated first) refuses NUL in
the URL, unknown query parameters on the runner routes, and reads admin bodies once under their size
limit: not JSON → 400 `invalid_json`, another media type → 415, NUL in any string or key → 422
`nul_character`. The body is then handed on as `application/json` (curl's default form type
included); a POST to `/mcp` must say `application/json` itself (415). Runner bodies are read by their
handlers, after the runner authenticated (`api/runner.py`).

Sign-in and sign-out (`POST /auth/login`, `POST /auth/logout`) also take an HTML form
(`application/x-www-form-urlencoded`, the console's pages work without script): read under the same
limit, NUL refused, handed on as a form. Every other route stays JSON-only.

`known_query_parameters` is an app-wide dependency: a query parameter the route does not declare is
refused (422 `unknown_query_parameter`) instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikoma.api import bodies
from ikoma.api.errors import refusal_response
from ikoma.domain.errors import DomainError, Invalid
from ikoma.settings import Settings

RUNNER_PREFIX = "/v1/runner/"
MCP_PATH = "/mcp"
# tool calls read and parse their own body, so that every refusal of one is audited with the tool
EXECUTE_PREFIX = "/execute/"
LIMIT_SETTING = "IKOMA_BODY_LIMIT_ADMIN"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# the only routes whose form bodies are read as forms (elsewhere curl's default form type means JSON)
FORM_ROUTES = frozenset({("POST", "/auth/login"), ("POST", "/auth/logout")})
# the runner routes are plain Starlette routes: their query parameters are listed here
RUNNER_QUERY: dict[str, frozenset[str]] = {"/v1/runner/orders/claim-next": frozenset({"wait"})}


def unknown_query(name: str, allowed: frozenset[str]) -> Invalid:
    shown = ", ".join(sorted(allowed)) or "none"
    message = f"unknown query parameter {name!r} (this route takes: {shown})"
    return Invalid(
        message,
        reason="unknown_query_parameter",
        parameter=name,
        errors=[{"path": name, "message": message, "type": "unknown_query_parameter"}],
    )


def check_url(scope: Scope) -> None:
    """NUL in the path or query refused; on a runner route, a query parameter it does not take too."""
    if "\x00" in scope["path"]:
        raise bodies.nul_error("<url path>")
    query: bytes = scope.get("query_string", b"")
    if not query:
        return
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                raise bodies.nul_error(name.replace("\x00", "\\u0000"))
    path: str = scope["path"]
    if path.startswith(RUNNER_PREFIX):
        allowed = RUNNER_QUERY.get(path, frozenset())
        for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name not in allowed:
                raise unknown_query(name, allowed)


def _check_mcp_media_type(content_type: str | None) -> None:
    """MCP's transport takes `application/json` only, and would refuse any other type (or none) with a
    bare-text 400: refuse it first, as every route does (415 in the one error shape)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != bodies.JSON_TYPE:
        raise bodies.UnsupportedMediaType(
            f"MCP messages are JSON (Content-Type: {bodies.JSON_TYPE}), not {media[:100] or 'untyped'}",
            contentType=media[:100] or None,
        )


def _is_form(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == bodies.FORM_TYPE


def _refuse_nul_in_form(raw: bytes) -> None:
    if b"\x00" in raw or b"%00" in raw:
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                raise bodies.nul_error(name.replace("\x00", "\\u0000"))


def _with_json_type(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
    headers.append((b"content-type", bodies.JSON_TYPE.encode()))
    return {**scope, "headers": headers}


def _replay(raw: bytes, receive: Receive) -> Receive:
    """`receive` that hands the already read body on once, then waits on the connection as before."""
    pending = [raw]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.body_limit_admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            check_url(scope)
            path: str = scope["path"]
            if path == MCP_PATH and scope["method"] == "POST":
                _check_mcp_media_type(bodies.header(scope, b"content-type"))
            if (
                scope["method"] in BODY_METHODS
                and not path.startswith(RUNNER_PREFIX)  # read by their handlers, after authentication
                and bodies.has_body(scope)
            ):
                scope, receive = await self._admin_body(scope, receive)
        except DomainError as refusal:
            await refusal_response(refusal)(scope, receive, send)
            return
        except ClientDisconnect:
            return
        await self.app(scope, receive, send)

    async def _admin_body(self, scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
        declared = bodies.declared_length(scope)
        if scope["path"].startswith(EXECUTE_PREFIX):
            return scope, bodies.limited(receive, limit=self.limit, setting=LIMIT_SETTING, declared=declared)
        mcp = scope["path"] == MCP_PATH
        content_type = bodies.header(scope, b"content-type")
        if (scope["method"], scope["path"]) in FORM_ROUTES and _is_form(content_type):
            raw = await bodies.read(receive, limit=self.limit, setting=LIMIT_SETTING, declared=declared)
            _refuse_nul_in_form(raw)
            return scope, _replay(raw, receive)
        if not mcp:  # MCP answers its own protocol errors (JSON-RPC parse error); its type is checked above
            bodies.check_media_type(content_type)
        raw = await bodies.read(receive, limit=self.limit, setting=LIMIT_SETTING, declared=declared)
        if mcp:
            if bodies.NUL_ESCAPE in raw:
                try:
                    data = bodies.parse_json(raw)
                except DomainError:
                    data = None
                bodies.refuse_nul(data)
            bodies.refuse_huge_integers(raw)  # the MCP SDK would read it as an int nothing can write
            return scope, _replay(raw, receive)
        if not raw.strip():
            return scope, _replay(b"", receive)
        bodies.parse_json(raw, content_type=content_type)
        return _with_json_type(scope), _replay(raw, receive)


def _query_names(dependant: Any) -> set[str]:
    """The wire names of the query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def _declared_query(route: Any) -> frozenset[str] | None:
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    found: frozenset[str] | None = getattr(route, "_ikoma_query_names", None)
    if found is None:  # computed on the route's first request with a query string, kept on the route
        found = frozenset(_query_names(dependant))
        route._ikoma_query_names = found
    return found


async def known_query_parameters(request: Request) -> None:
    """Refuse a query parameter the matched route does not declare (a typo must not widen a list)."""
    if not request.scope.get("query_string"):
        return
    allowed = _declared_query(request.scope.get("route"))
    if allowed is None:
        return
    for name in request.query_params:
        if name not in allowed:
            raise unknown_query(name, allowed)
