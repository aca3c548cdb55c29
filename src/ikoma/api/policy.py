"""Who may call what: one table, checked before any route runs. A route not in the table is refused.

Every route is listed with the least role that may call it (observer < builder < operator < admin), or
as RUNNER (the handler checks the runner token against the database) or PUBLIC. Credentials: the admin
key or an API client token, in `X-Api-Key`, `Authorization: Bearer` or `x-ikoma-admin-key`; without
one, the console's session cookie `ikoma_session` (a user: services/sessions.py). `X-Role` may lower
the role a request acts with, never raise it. Finer rules (a playbook's own role, a client's
server scope) are checked by the route with the Principal this middleware puts in the request state.

Every mutating request is audited here before it runs (if the entry cannot be written, the request is
refused) and again if it fails — or, for the routes in AUDITED_IN_TRANSACTION, in the transaction of
its action (api/audit_in_transaction.py); `/execute` and `/mcp` are audited by the tool path itself,
with the tool, and a tool call refused here (no credential, an X-Role above it) is audited under its
tool too.

A cookie-authenticated mutation must carry the session's CSRF token in `X-CSRF-Token` (or, for a form
posted to `/auth/logout`, in its `csrf_token` field): else 403 `csrf_failed`. A header credential never
needs one: a browser does not send it by itself. A browser's page request (a GET accepting text/html)
without a valid credential is sent to `/login?next=...` (303) instead of getting the JSON 401; a dead
session cookie is cleared in the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Literal
from urllib.parse import parse_qs

import structlog
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikoma.api import bodies, session_cookie
from ikoma.api.audit_in_transaction import audited_in_transaction
from ikoma.api.errors import error_response, is_database_outage
from ikoma.api.mcp import called_tool
from ikoma.bootstrap import Context
from ikoma.domain.errors import DomainError, Forbidden, Unauthorized
from ikoma.domain.roles import Role, lowered
from ikoma.services import api_clients, audit, sessions, tools
from ikoma.services.identity import Principal
from ikoma.services.tools import AUDIT_UNAVAILABLE

log = structlog.get_logger("ikoma.policy")

PUBLIC: Literal["public"] = "public"
RUNNER: Literal["runner"] = "runner"
Access = Role | Literal["public", "runner"]

OBSERVER, BUILDER, OPERATOR, ADMIN = Role.OBSERVER, Role.BUILDER, Role.OPERATOR, Role.ADMIN

POLICY: dict[tuple[str, str], Access] = {
    # --- public: probes, metrics, the API description -----------------------------------------------
    ("GET", "/health"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # --- runners (token checked by the handler, in the call's transaction) ---------------------------
    ("POST", "/v1/runner/register"): RUNNER,
    ("POST", "/v1/runner/heartbeat"): RUNNER,
    ("POST", "/v1/runner/orders/claim-next"): RUNNER,
    ("POST", "/v1/runner/orders/{order_id}/start"): RUNNER,
    ("POST", "/v1/runner/orders/{order_id}/heartbeat"): RUNNER,
    ("POST", "/v1/runner/orders/{order_id}/complete"): RUNNER,
    ("POST", "/v1/runner/orders/{order_id}/logs"): RUNNER,
    # --- fleet inventory -----------------------------------------------------------------------------
    ("GET", "/v1/servers"): OBSERVER,
    ("POST", "/v1/servers"): ADMIN,
    ("GET", "/v1/servers/{server_id}"): OBSERVER,
    ("PATCH", "/v1/servers/{server_id}"): ADMIN,
    ("DELETE", "/v1/servers/{server_id}"): ADMIN,
    ("POST", "/v1/servers/{server_id}/attach-runner"): ADMIN,
    ("PATCH", "/v1/servers/{server_id}/attach-runner"): ADMIN,
    # issue 14: connecting with a server's credentials, and trusting a new host key, are the admin's
    ("POST", "/v1/servers/{server_id}/test-connection"): ADMIN,
    ("POST", "/v1/servers/{server_id}/trust-host-key"): ADMIN,
    ("GET", "/v1/runners"): OBSERVER,
    ("POST", "/v1/runners"): ADMIN,
    ("GET", "/v1/runners/{runner}"): ADMIN,
    ("DELETE", "/v1/runners/{runner}"): ADMIN,
    ("POST", "/v1/runners/{runner}/revoke"): ADMIN,
    ("POST", "/v1/runners/{runner}/rotate-token"): ADMIN,
    ("POST", "/v1/runner-bootstrap-tokens"): ADMIN,
    # --- playbooks and orders (creating an order also needs the playbook's own role) ------------------
    ("GET", "/v1/playbooks"): OBSERVER,
    ("POST", "/v1/playbooks"): ADMIN,
    ("PUT", "/v1/playbooks/{key}"): ADMIN,
    ("GET", "/v1/orders"): OBSERVER,
    ("POST", "/v1/orders"): OBSERVER,
    ("GET", "/v1/orders/{order_id}"): OBSERVER,
    ("POST", "/v1/orders/{order_id}/cancel"): OPERATOR,
    ("POST", "/v1/orders/{order_id}/rerun"): OBSERVER,  # as creating one: the playbook's role applies too
    ("GET", "/v1/orders/{order_id}/logs"): OBSERVER,
    ("GET", "/v1/orders/{order_id}/events"): OBSERVER,
    ("GET", "/v1/orders/{order_id}/logs/stream"): OBSERVER,  # SSE (api/event_stream.py)
    # --- API clients ----------------------------------------------------------------------------------
    ("GET", "/v1/api-clients"): ADMIN,
    ("POST", "/v1/api-clients"): ADMIN,
    ("GET", "/v1/api-clients/{client_id}"): ADMIN,
    ("DELETE", "/v1/api-clients/{client_id}"): ADMIN,
    # --- webhooks (issue 12): registering an endpoint that receives every event is the admin's call -
    ("GET", "/v1/webhooks"): ADMIN,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/disable"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/enable"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ADMIN,
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): ADMIN,
    # --- machine state (issue 4) ----------------------------------------------------------------------
    ("GET", "/v1/servers/{server_id}/state"): OBSERVER,
    ("GET", "/v1/servers/{server_id}/hardware"): OBSERVER,
    ("GET", "/v1/servers/{server_id}/metrics"): OBSERVER,
    ("GET", "/v1/servers/{server_id}/timeline"): OBSERVER,
    ("GET", "/v1/servers/{server_id}/important-messages"): OBSERVER,
    ("POST", "/v1/servers/{server_id}/important-messages/{message_id}/ack"): OPERATOR,
    ("GET", "/v1/servers/{server_id}/reports"): OBSERVER,
    ("GET", "/v1/servers/{server_id}/schedules"): OBSERVER,
    ("PUT", "/v1/servers/{server_id}/schedules"): OPERATOR,
    ("GET", "/v1/reports/{report_id}"): OBSERVER,
    ("GET", "/v1/artifacts/{artifact_id}"): OBSERVER,
    ("POST", "/v1/artifacts/{artifact_id}/pin"): OPERATOR,
    ("DELETE", "/v1/artifacts/{artifact_id}/pin"): OPERATOR,
    ("GET", "/v1/fleet/summary"): OBSERVER,
    ("POST", "/v1/state/rebuild"): ADMIN,
    # --- tools / audit / mcp (issue 5): each tool's own role is checked (and audited) by the tool path -
    ("POST", "/execute/{tool}"): OBSERVER,
    ("GET", "/v1/tools"): OBSERVER,
    ("GET", "/v1/audit"): ADMIN,
    # the action log (issue 13, seed 002): the audit log searched, same least role as /v1/audit
    ("GET", "/action_logs"): ADMIN,
    ("GET", "/action_logs/search"): ADMIN,
    ("POST", "/mcp"): OBSERVER,
    # --- the event log (issue 12): what each caller sees is cut to its server scope ------------------
    ("GET", "/v1/events"): OBSERVER,
    ("GET", "/v1/events/stream"): OBSERVER,
    # --- the web console (issue 13): pages only read; their buttons call the routes of this table ------
    ("GET", "/login"): PUBLIC,
    ("GET", "/static/{path:path}"): PUBLIC,  # CSS, our script, vendored assets: the sign-in page needs them
    ("GET", "/"): OBSERVER,  # the fleet overview (the API documentation stays at /docs, public)
    ("GET", "/machines/{server_id}"): OBSERVER,
    ("GET", "/run"): OBSERVER,  # observers get the page without a form: they run nothing from it
    ("GET", "/orders"): OBSERVER,
    ("GET", "/orders/{order_id}"): OBSERVER,
    ("GET", "/action-log"): ADMIN,  # as GET /action_logs, which it shows
    ("GET", "/users/manage"): ADMIN,
    ("GET", "/api-clients/manage"): ADMIN,
    ("GET", "/runners/manage"): ADMIN,
    ("GET", "/instances/manage"): OBSERVER,  # issue 16: its buttons are the operator's (the API decides)
    ("GET", "/catalog/manage"): OBSERVER,  # issue 16: its Enable/Disable and Sync buttons are the admin's
    # --- users and sessions (issue 13, seed 002): sign-in checks its own credentials ------------------
    ("POST", "/auth/login"): PUBLIC,
    ("POST", "/auth/logout"): OBSERVER,
    ("GET", "/auth/me"): OBSERVER,  # any signed-in user; a key that is no user gets 400 not_a_user
    ("PUT", "/auth/me"): OBSERVER,
    ("PUT", "/auth/me/password"): OBSERVER,
    ("POST", "/auth/me/totp"): OBSERVER,
    ("POST", "/auth/me/totp/confirm"): OBSERVER,
    ("POST", "/auth/me/totp/disable"): OBSERVER,
    ("GET", "/users"): ADMIN,
    ("POST", "/users"): ADMIN,
    ("GET", "/users/{user_id}"): ADMIN,
    ("PUT", "/users/{user_id}"): ADMIN,
    ("DELETE", "/users/{user_id}"): ADMIN,
    # --- the catalog (issue 16, seed 002): everyone reads it, the admin changes it and syncs it -------
    ("GET", "/providers"): OBSERVER,
    ("PUT", "/providers/{provider_id}"): ADMIN,
    ("GET", "/regions"): OBSERVER,
    ("PUT", "/regions/{region_id}"): ADMIN,
    ("GET", "/zones"): OBSERVER,
    ("PUT", "/zones/{zone_id}"): ADMIN,
    ("GET", "/zones/{zone_id}/instance_types"): OBSERVER,
    ("GET", "/instance_types"): OBSERVER,
    ("GET", "/instance_types/{instance_type_id}"): OBSERVER,
    ("PUT", "/instance_types/{instance_type_id}"): ADMIN,
    ("GET", "/instance_types/{instance_type_id}/zones"): OBSERVER,
    ("PUT", "/instance_types/{instance_type_id}/zones"): ADMIN,
    ("GET", "/models"): OBSERVER,
    ("POST", "/models"): ADMIN,
    ("GET", "/models/{model_id}"): OBSERVER,
    ("POST", "/catalog/sync"): ADMIN,
    # --- instances (issue 16, seed 002): everyone reads them, operators deploy, terminate, reconcile ----
    ("POST", "/deployments"): OPERATOR,
    ("GET", "/instances"): OBSERVER,
    ("GET", "/instances/{instance_id}"): OBSERVER,
    ("DELETE", "/instances/{instance_id}"): OPERATOR,
    ("PUT", "/instances/{instance_id}/archive"): OPERATOR,
    ("POST", "/reconcile"): OPERATOR,
    ("GET", "/action_types"): OBSERVER,
    # the seed's worker enrolment: each handler checks its own bearer token (bootstrap, then runner)
    ("POST", "/internal/worker/register"): RUNNER,
    ("POST", "/internal/worker/heartbeat"): RUNNER,
}

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# routes whose action writes its `allowed` entry in its own transaction (api/audit_in_transaction.py):
# one commit per call instead of two, the chain's lock held only at commit
AUDITED_IN_TRANSACTION = frozenset({("POST", "/v1/orders"), ("POST", "/v1/orders/{order_id}/rerun")})
# audited by the tool path (with the tool's name and order), not as plain requests
SELF_AUDITED_PREFIXES = ("/execute/", "/mcp")
RUNNER_PREFIX = "/v1/runner/"
TARGET_CHARS = 300  # audit_log.target: a longer path is cut, not refused by the database
# an MCP message read to name the tool of a refused call; a bigger one is audited as `POST /mcp`
MCP_PEEK_BYTES = 64 * 1024
LOGOUT_PATH = "/auth/logout"
CSRF_FIELD = "csrf_token"
LOGOUT_FORM_LIMIT = 16 * 1024  # a sign-out form holds one hidden field


def csrf_failed() -> Forbidden:
    return Forbidden(
        "this request needs the session's CSRF token (header X-CSRF-Token)", reason="csrf_failed"
    )


def _replay(raw: bytes, receive: Receive) -> Receive:
    pending = [raw]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


async def checked_csrf(scope: Scope, receive: Receive, raw_id: str) -> Receive:
    """`receive` once the request carries the session's CSRF token, else 403 `csrf_failed`.

    The form field is read only for a form posted to `/auth/logout` (the console's sign-out button
    works without script); its body is handed on unchanged.
    """
    header = _header(scope, b"x-csrf-token")
    if header is not None:
        if sessions.csrf_matches(raw_id, header):
            return receive
        raise csrf_failed()
    content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
    if scope["path"] == LOGOUT_PATH and content_type == bodies.FORM_TYPE:
        declared = bodies.declared_length(scope)
        raw = await bodies.read(
            receive, limit=LOGOUT_FORM_LIMIT, setting="(sign-out form)", declared=declared
        )
        fields = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
        if sessions.csrf_matches(raw_id, (fields.get(CSRF_FIELD) or [""])[0]):
            return _replay(raw, receive)
    raise csrf_failed()


async def refused_tool_action(scope: Scope, receive: Receive) -> str | None:
    """`execute:<tool>` / `mcp:<tool>` for a tool call refused before its route ran, else None.

    Only called on a refusal: the body read here is never handed on to the route.
    """
    path: str = scope["path"]
    if path.startswith("/execute/"):
        return tools.audit_action("execute", path.removeprefix("/execute/"))
    if not path.startswith("/mcp"):
        return None
    body = b""
    while len(body) <= MCP_PEEK_BYTES:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    name = called_tool(body) if len(body) <= MCP_PEEK_BYTES else None
    return None if name is None else tools.audit_action("mcp", name)


def leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route the app answers, with included routers expanded to their effective routes."""
    for route in routes:
        expand = getattr(route, "effective_candidates", None)
        if expand is not None:
            yield from leaf_routes(expand())
        else:
            yield route


def route_keys(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path template) of every route: what the policy table must cover."""
    keys: set[tuple[str, str]] = set()
    for route in leaf_routes(routes):
        path = getattr(route, "path", None)
        if path is None:
            continue
        methods = getattr(route, "methods", None) or {"GET", "POST", "DELETE"}  # mounts take any method
        keys.update((m, path) for m in methods if m != "HEAD")
    return keys


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def presented_credential(scope: Scope) -> str | None:
    found = _header(scope, b"x-api-key") or _header(scope, b"x-ikoma-admin-key")
    if found:
        return found.strip()
    authorization = _header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


class PolicyMiddleware:
    def __init__(
        self, app: ASGIApp, ctx: Callable[[], Context], routes: Callable[[], list[BaseRoute]]
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.routes = routes
        self._leaves: list[BaseRoute] | None = None

    def _match(self, scope: Scope) -> tuple[str | None, bool]:
        """The matched route's path template, and whether some route has this path (another method)."""
        if self._leaves is None:
            self._leaves = list(leaf_routes(self.routes()))
        partial = False
        for route in self._leaves:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                template: str | None = getattr(route, "path", None)
                return template, True
            partial = partial or match == Match.PARTIAL
        return None, partial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        # the runner hot path: its handlers authenticate; skip the table walk (the table lists them)
        if path.startswith(RUNNER_PREFIX):
            await self.app(scope, receive, send)
            return
        template, known = self._match(scope)
        if template is None:
            if known:  # wrong method: let the router answer 405
                await self.app(scope, receive, send)
            else:
                await error_response(404, "route_not_found", "no such route")(scope, receive, send)
            return
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        access = POLICY.get((method, template))
        if access is None:
            # deny by default: a route someone forgot to put in the table answers nothing
            log.error("route_not_in_policy", method=method, path=template)
            await error_response(403, "not_in_policy", "this route is not in the policy table")(
                scope, receive, send
            )
            return
        if not isinstance(access, Role):  # PUBLIC, or RUNNER (whose handlers check the token)
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send, method, template, access)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, method: str, template: str, needed: Role
    ) -> None:
        ctx = self.ctx()
        action = f"{method} {template}"
        audited = method in MUTATING and not scope["path"].startswith(SELF_AUDITED_PREFIXES)
        presented = presented_credential(scope)
        # the console's cookie counts only when no credential header is presented
        cookie = None if presented else session_cookie.read(scope)
        session: sessions.SessionPrincipal | None = None
        principal: Principal | None = None
        try:
            if cookie is None:
                principal = await self._authenticate(ctx, presented)
            else:
                session = await sessions.authenticate(
                    ctx.db, cookie, idle_timeout_s=ctx.settings.session_idle_timeout
                )
                principal = session.principal
            acting = lowered(principal.granted_role, _header(scope, b"x-role"))
            principal = replace(principal, role=acting)
            principal.require(needed, action)
            if session is not None and cookie is not None and method in MUTATING:
                receive = await checked_csrf(scope, receive, cookie)
        except DomainError as refusal:
            # refusals of mutations and tool calls are audited too (who tried what, with which key)
            if audited or scope["path"].startswith(SELF_AUDITED_PREFIXES):
                denied = self._entry(
                    principal, presented, action, scope, "denied", refusal.status_code, refusal.reason
                )
                # a refused tool call is filed under its tool, as the allowed calls are
                tool_action = await refused_tool_action(scope, receive)
                if tool_action is not None:
                    denied = replace(denied, action=tool_action, target=None)
                try:
                    await audit.record(ctx.db, denied, mirror=ctx.settings.audit_log)
                except Exception as exc:  # the refusal stands either way
                    log.warning("audit_write_failed", action=action, error=type(exc).__name__)
            await self._refuse(scope, receive, send, refusal, cookie)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        if session is not None:
            state["csrf_token"] = session.csrf_token
        if not audited:
            await self.app(scope, receive, send)
            return
        allowed = self._entry(principal, presented, action, scope, "allowed", None, None)
        if (method, template) in AUDITED_IN_TRANSACTION:
            failed = self._entry(principal, presented, action, scope, "error", 0, None)
            await audited_in_transaction(self.app, ctx, scope, receive, send, allowed, failed)
            return
        try:
            await audit.record(ctx.db, allowed, mirror=ctx.settings.audit_log)
        except Exception as exc:
            if is_database_outage(exc):
                raise  # answered 503 database_unavailable by api/request_context.py
            log.warning("audit_write_failed", action=action, error=type(exc).__name__)
            await error_response(503, "audit_unavailable", AUDIT_UNAVAILABLE)(scope, receive, send)
            return
        status: dict[str, int] = {}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        code = status.get("code", 500)
        if code >= 400:
            try:
                failed = self._entry(principal, presented, action, scope, "error", code, None)
                await audit.record(ctx.db, failed, mirror=ctx.settings.audit_log)
            except Exception as exc:
                log.warning("audit_write_failed", action=action, error=type(exc).__name__)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, refusal: DomainError, cookie: str | None
    ) -> None:
        """The refusal's error answer; a browser without a valid session is sent to sign in instead."""
        unauthenticated = isinstance(refusal, Unauthorized)
        signing_out = scope["path"] == LOGOUT_PATH and "text/html" in (_header(scope, b"accept") or "")
        if unauthenticated and (session_cookie.wants_html(scope) or signing_out):
            response = session_cookie.login_redirect(
                None if signing_out else session_cookie.requested_path(scope),
                error="session_expired" if cookie is not None else None,
            )
        else:
            details = refusal.details or None
            response = error_response(refusal.status_code, refusal.reason, refusal.message, details=details)
        if unauthenticated and cookie is not None:  # a dead session: the browser forgets it
            secure = self.ctx().settings.cookie_secure
            response.headers.append("set-cookie", session_cookie.clear_header(secure=secure))
        await response(scope, receive, send)

    async def _authenticate(self, ctx: Context, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("credential is missing or invalid")
        try:
            ctx.keyring.verify(presented)
        except Unauthorized:
            return await api_clients.authenticate(ctx.db, presented)
        return Principal(
            kind="admin",
            id="admin",
            name="admin",
            role=Role.ADMIN,
            granted_role=Role.ADMIN,
            token_prefix=presented[:8],
        )

    @staticmethod
    def _entry(
        principal: Principal | None,
        presented: str | None,
        action: str,
        scope: Scope,
        outcome: audit.Outcome,
        status_code: int | None,
        reason: str | None,
    ) -> audit.AuditEntry:
        channel: audit.Channel = "rest"
        if scope["path"].startswith("/execute/"):
            channel = "execute"
        elif scope["path"].startswith("/mcp"):
            channel = "mcp"
        prefix = principal.token_prefix if principal else (presented[:8] if presented else None)
        return audit.AuditEntry(
            channel=channel,
            actor_kind=principal.kind if principal else "anonymous",
            actor_id=principal.id if principal else None,
            token_prefix=prefix,
            role=principal.role.label if principal else None,
            action=action,
            target=scope["path"][:TARGET_CHARS],
            params=None,  # bodies are not read here: they may hold secrets; tools log masked params
            outcome=outcome,
            status_code=status_code,
            reason=reason,
        )
