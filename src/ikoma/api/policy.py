"""Who may call what: one table, checked before any route runs. A path not in the table is denied.

Admin routes need `x-ikoma-admin-key`; runner routes authenticate in their handler (the token is checked
against the database); a handful of read-only routes are public.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ikoma.api.errors import error_response
from ikoma.domain.errors import Unauthorized
from ikoma.services.admin_keys import AdminKeyring

PUBLIC = frozenset(
    {"/health", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)
RUNNER_PREFIX = "/v1/runner/"
ADMIN_PREFIX = "/v1/"


def identity_for(path: str) -> str:
    """'public', 'runner', 'admin' or 'deny'."""
    if path in PUBLIC:
        return "public"
    if path.startswith(RUNNER_PREFIX):
        return "runner"
    if path.startswith(ADMIN_PREFIX):
        return "admin"
    return "deny"


class PolicyMiddleware:
    def __init__(self, app: ASGIApp, keyring: Callable[[], AdminKeyring]) -> None:
        self.app = app
        self.keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        who = identity_for(scope["path"])
        refusal: Any = None
        if who == "admin":
            presented = None
            for name, value in scope["headers"]:
                if name == b"x-ikoma-admin-key":
                    presented = value.decode("latin-1")
                    break
            try:
                self.keyring().verify(presented)
            except Unauthorized as exc:
                refusal = error_response(401, exc.reason, exc.message)
        elif who == "deny":
            refusal = error_response(404, "route_not_found", "no such route")
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)
