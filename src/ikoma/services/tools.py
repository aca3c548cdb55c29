"""Operations tools: playbooks run for a caller who waits for the answer (`/execute/<tool>` and MCP).

`execute_tool` is the one code path both entry points share, so a tool is authorized, confirmed,
validated, audited and run the same way whoever calls it: refusals are audited `denied` before they
are raised; an accepted call writes its `allowed` audit entry and its order in one transaction (no
audit entry, no order); a call whose order ends badly is audited once more as `error`.

An audit entry that cannot be written refuses the call with 503 `audit_unavailable` and a fixed
sentence: the database's own message (the statement and its parameters, masked or not) never reaches
the caller, and the log line names only the error's type.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy import select

from ikoma.domain.errors import DomainError, Forbidden, Invalid, NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.roles import Role
from ikoma.domain.secret_params import hide_secrets
from ikoma.services import audit, orders
from ikoma.services.audit import Channel
from ikoma.services.identity import Principal
from ikoma.services.playbooks import find_playbook
from ikoma.storage.tables import audit_log, playbooks, servers
from ikoma.storage.tables import orders as orders_table

if TYPE_CHECKING:
    from ikoma.bootstrap import Context
    from ikoma.storage.database import Tx


log = structlog.get_logger("ikoma.tools")


class AuditUnavailable(DomainError):
    """503: the call's audit entry could not be written, so the call was not made."""

    status_code = 503
    reason = "audit_unavailable"


AUDIT_UNAVAILABLE = "the audit log cannot be written; nothing was done"


def _audit_failed(exc: Exception, action: str) -> AuditUnavailable:
    log.warning("audit_write_failed", action=action, error=type(exc).__name__)
    return AuditUnavailable(AUDIT_UNAVAILABLE)


# The catalog's JSON schemas say `^[a-z][a-z0-9-]{0,62}$`, which Python's `re.search` (jsonschema's
# engine) also matches with a trailing newline. App names become paths and process names, so the API
# checks the whole string itself before an order can exist; the runner checks again before any disk.
APP_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")

# A tool is a playbook key: a longer name is no tool, refused before it is looked up. The audit records
# every call under `<channel>:<tool>`, with a name that does not fit its column cut short (and marked).
MAX_TOOL_NAME: int = playbooks.c.key.type.length  # type: ignore[attr-defined]
_ACTION_CHARS: int = audit_log.c.action.type.length  # type: ignore[attr-defined]
_REASON_CHARS: int = audit_log.c.reason.type.length  # type: ignore[attr-defined]
CUT = "…"


def audit_action(channel: Channel, tool: str) -> str:
    """How the audit names a call to `tool` (allowed or refused, whatever refused it): `execute:<tool>`."""
    prefix = f"{channel}:"
    room = _ACTION_CHARS - len(prefix)
    return prefix + (tool if len(tool) <= room else tool[: room - len(CUT)] + CUT)


def _shown(tool: str) -> str:
    """A tool name as an error body repeats it (a name of megabytes is not sent back)."""
    return tool if len(tool) <= MAX_TOOL_NAME else tool[:MAX_TOOL_NAME] + CUT


# Waiting for an order: short first polls so fast tools answer fast, then at most 5 reads a second.
# Polling the row (not an in-process wake-up) also sees orders completed through another API process.
FIRST_POLL = 0.02
MAX_POLL = 0.2

# How an order that ended without success is answered (status code, reason); FAILED with a tool error
# code answers 422 with that code instead, as the caller's input or the app's state is what failed.
FAILURE_ANSWERS: dict[str, tuple[int, str, str]] = {
    OrderStatus.FAILED.value: (502, "tool_failed", "the tool failed on the runner"),
    OrderStatus.TIMEOUT.value: (504, "tool_timeout", "the tool ran past its time limit and was stopped"),
    OrderStatus.CANCELLED.value: (409, "order_cancelled", "the tool's order was cancelled"),
    OrderStatus.STALE.value: (503, "runner_lost", "the runner stopped answering while running the tool"),
}


@dataclass(frozen=True)
class ToolOutcome:
    """The answer to a tool call once an order exists: HTTP status, JSON body, and the order."""

    status_code: int
    body: dict[str, Any]
    order_id: str | None = None
    order_status: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _role(playbook: dict[str, Any]) -> Role:
    return Role.parse(str(playbook["min_role"]))


def describe(playbook: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """A catalog entry as callers see it (`GET /v1/tools`, MCP `tools/list`)."""
    role = _role(playbook)
    return {
        "key": playbook["key"],
        "name": playbook["name"],
        "description": playbook["description"],
        "paramsSchema": playbook["params_schema"],
        "minRole": role.label,
        "destructive": bool(playbook["destructive"]),
        "readOnly": role == Role.OBSERVER and not playbook["destructive"],
        "allowed": principal.allows(role),
    }


async def list_tools(ctx: Context, principal: Principal) -> list[dict[str, Any]]:
    """Every playbook of the catalog is a tool; `allowed` says whether this caller may run it."""
    async with ctx.db.read() as tx:
        rows = (await tx.execute(select(playbooks).order_by(playbooks.c.key))).mappings()
        return [describe(dict(row), principal) for row in rows]


# --- execute ---------------------------------------------------------------------------------------
async def execute_tool(
    ctx: Context,
    principal: Principal,
    *,
    tool: str,
    params: dict[str, Any],
    server_id: str | None = None,
    wait: float | None = None,
    channel: Channel = "execute",
) -> ToolOutcome:
    """Run `tool` on a server for `principal` and wait up to `wait` seconds for its answer.

    Refusals raise a `DomainError` (404 tool_not_found, 403 forbidden, 422 confirmation_required or
    validation_error, 404 server_not_found, 422 server_required), each audited as `denied`. Once the
    order exists the answer is a `ToolOutcome`: 200 with the tool's result, an error status with
    `{reason, message, details: {orderId, errors}}`, or 202 with the order's location.
    """
    call = _Call(ctx, principal, tool, params, channel)
    try:
        playbook = await call.find_playbook()
        # the audit entry shows the schema's secret params as a placeholder too (names are masked anyway)
        call.params = hide_secrets(playbook["params_schema"], params)
        call.target = _target(params)
        call.authorize(playbook)
        check_confirmation(playbook, params)
        check_params(playbook, params)
        server = await call.resolve_server(server_id)
        call.target = _target(params, server)
    except DomainError as refusal:
        await call.refused(refusal)
        raise

    async with ctx.db.write() as tx:
        order = await orders.insert_order(
            tx,
            ctx.wakeups,
            {"server_id": str(server["id"]), "playbook_key": tool, "params": params, "action": "run"},
            default_timeout=ctx.settings.order_timeout,
            actor=principal.actor,
            vault=ctx.vault,
        )
        # in the order's transaction: if the audit entry cannot be written, the order does not exist
        allowed = call.entry("allowed", order_id=str(order["id"]))
        try:
            await audit.append(tx, allowed, mirror=ctx.settings.audit_log)
        except Exception as exc:
            raise _audit_failed(exc, allowed.action) from None
    order_id = str(order["id"])

    limit = ctx.settings.execute_max_wait
    seconds = limit if wait is None else max(0.0, min(float(wait), limit))
    last, finished = await _wait_for_end(ctx, order_id, seconds)
    status = str(last["status"])
    if not finished:
        location = {"orderId": order_id, "status": status, "location": f"/v1/orders/{order_id}"}
        return _outcome(202, location, order_id, status)
    if status == OrderStatus.SUCCEEDED.value:
        return _outcome(200, result_of(last.get("report")), order_id, status)
    status_code, body = failure_answer(last)
    failed = call.entry("error", order_id=order_id, status_code=status_code, reason=body["reason"])
    try:
        await audit.record(ctx.db, failed, mirror=ctx.settings.audit_log)
    except Exception as exc:  # the order ran (its `allowed` entry is written): its answer stands
        log.warning("audit_write_failed", action=failed.action, error=type(exc).__name__)
    return _outcome(status_code, body, order_id, status)


async def audit_refusal(
    ctx: Context,
    principal: Principal,
    *,
    tool: str,
    refusal: DomainError,
    params: dict[str, Any] | None = None,
    channel: Channel = "execute",
) -> None:
    """Audit a call refused by its entry point before `execute_tool` ran (a body that is not JSON)."""
    await _Call(ctx, principal, tool, params or {}, channel).refused(refusal)


def _outcome(status_code: int, body: dict[str, Any], order_id: str, status: str) -> ToolOutcome:
    return ToolOutcome(status_code, body, order_id, status, {"X-Order-Id": order_id})


class _Call:
    """One tool call's identity and arguments, to audit whatever happens to it the same way."""

    def __init__(
        self, ctx: Context, principal: Principal, tool: str, params: dict[str, Any], channel: Channel
    ) -> None:
        self.ctx = ctx
        self.principal = principal
        self.tool = tool
        self.params = params
        self.channel = channel
        self.target: str | None = None

    def entry(
        self,
        outcome: Literal["allowed", "denied", "error"],
        *,
        order_id: str | None = None,
        status_code: int | None = None,
        reason: str | None = None,
    ) -> audit.AuditEntry:
        return audit.AuditEntry(
            actor_kind=self.principal.kind,
            actor_id=self.principal.id,
            token_prefix=self.principal.token_prefix,
            role=self.principal.role.label,
            action=audit_action(self.channel, self.tool),
            target=self.target,
            params=_storable(self.params),
            outcome=outcome,
            channel=self.channel,
            order_id=order_id,
            status_code=status_code,
            # a tool error code comes from the runner's report: free text, cut to what the column holds
            reason=None if reason is None else reason[:_REASON_CHARS],
        )

    async def refused(self, refusal: DomainError) -> None:
        # recorded in its own transaction: the refusal is the action, and it must leave a trace (or the
        # caller learns that none could be left)
        entry = self.entry("denied", status_code=refusal.status_code, reason=refusal.reason)
        try:
            await audit.record(self.ctx.db, entry, mirror=self.ctx.settings.audit_log)
        except Exception as exc:
            raise _audit_failed(exc, entry.action) from None

    async def find_playbook(self) -> dict[str, Any]:
        playbook = None
        if 0 < len(self.tool) <= MAX_TOOL_NAME:  # a longer name is no playbook key: not looked up
            async with self.ctx.db.read() as tx:
                playbook = await find_playbook(tx, self.tool)
        if playbook is None:
            raise NotFound("no tool with this name", reason="tool_not_found", tool=_shown(self.tool))
        return playbook

    def authorize(self, playbook: dict[str, Any]) -> None:
        needed = _role(playbook)
        if not self.principal.allows(needed):
            acting = self.principal.role.label
            raise Forbidden(
                f"tool {self.tool} needs role {needed.label}; this request acts as {acting}",
                reason="forbidden",
                tool=self.tool,
                required=needed.label,
                role=acting,
            )

    async def resolve_server(self, requested: str | None) -> dict[str, Any]:
        """`serverId` (an id or a name), else IKOMA_DEFAULT_SERVER, else the `ikoma up` local server."""
        async with self.ctx.db.read() as tx:
            if requested is not None:
                server = await _server_named(tx, requested)
                if server is None:
                    raise NotFound("server not found", reason="server_not_found", serverId=requested)
                # a scoped client gets the same answer for a server outside its scope: it learns nothing
                self.principal.require_server(str(server["id"]))
                return server
            configured = self.ctx.settings.default_server
            if configured:
                server = await _server_named(tx, configured)
                if server is None:
                    raise Invalid(
                        f"the default server {configured!r} (IKOMA_DEFAULT_SERVER) does not exist",
                        reason="server_required",
                        field="serverId",
                    )
                self.principal.require_server(str(server["id"]))
                return server
            server = await _local_server(tx)
        if server is None:
            raise Invalid(
                "name the server with serverId: there is no default server (IKOMA_DEFAULT_SERVER) "
                "and no local server started by `ikoma up`",
                reason="server_required",
                field="serverId",
            )
        self.principal.require_server(str(server["id"]))
        return server


def check_confirmation(playbook: dict[str, Any], params: dict[str, Any]) -> None:
    """A destructive tool acting on an app runs only when the caller typed the app's name again."""
    properties = (playbook["params_schema"] or {}).get("properties") or {}
    if not playbook["destructive"] or "confirm" not in properties:
        return
    app = params.get("appName")
    if not isinstance(app, str) or params.get("confirm") != app:
        raise Invalid(
            f"{playbook['key']} is destructive: pass confirm equal to appName to run it",
            reason="confirmation_required",
            field="confirm",
            tool=playbook["key"],
        )


def check_params(playbook: dict[str, Any], params: dict[str, Any]) -> None:
    app = params.get("appName")
    if app is not None and not (isinstance(app, str) and APP_NAME.fullmatch(app)):
        raise Invalid(
            "params do not match the tool's schema",
            errors=[
                {
                    "path": "appName",
                    "message": "an app name is 1 to 63 characters: a lower-case letter, then lower-case "
                    "letters, digits or '-'",
                    "type": "pattern",
                }
            ],
        )
    try:
        orders.validate_params(
            playbook["params_schema"], orders.with_defaults(playbook["params_schema"], params)
        )
    except Invalid as exc:
        # the params sit at the top level of an /execute body: report their paths as the caller wrote them
        for error in exc.details.get("errors", []):
            error["path"] = error["path"].removeprefix("params").removeprefix(".") or "<body>"
        exc.message = "params do not match the tool's schema"
        raise


async def _server_named(tx: Tx, name_or_id: str) -> dict[str, Any] | None:
    live = servers.c.deleted_at.is_(None)
    try:
        server_id = str(uuid.UUID(name_or_id))
    except ValueError:
        query = select(servers).where(servers.c.name == name_or_id, live)
    else:
        query = select(servers).where(servers.c.id == server_id, live)
    row = (await tx.execute(query)).mappings().first()
    return None if row is None else dict(row)


async def _local_server(tx: Tx) -> dict[str, Any] | None:
    """The server `ikoma up` made for this machine (label ikoma=local), the one with a runner first."""
    rows = (
        await tx.execute(
            select(servers)
            .where(servers.c.deleted_at.is_(None), servers.c.labels["ikoma"].as_string() == "local")
            .order_by(servers.c.runner_id.is_(None), servers.c.created_at)
        )
    ).mappings()
    first = rows.first()
    return None if first is None else dict(first)


def _target(params: dict[str, Any], server: dict[str, Any] | None = None) -> str | None:
    """What a call acts on, for the audit log's `target` filter: `<server name>/<app>`, or either."""
    app = params.get("appName")
    app_part = app if isinstance(app, str) and APP_NAME.fullmatch(app) else None
    if server is None:
        return app_part
    return f"{server['name']}/{app_part}" if app_part else str(server["name"])


def _storable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as the audit log can store them: PostgreSQL's JSONB refuses NUL in text, and a refused
    call (an app name with a NUL is exactly what gets refused) must still be recorded, so NUL is
    written as the visible escape `\\u0000`. Secrets are masked by the audit service."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\\u0000")
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    cleaned: dict[str, Any] = clean(params)
    return cleaned


# --- waiting and answering -------------------------------------------------------------------------
async def _wait_for_end(ctx: Context, order_id: str, seconds: float) -> tuple[dict[str, Any], bool]:
    """The order's last state read, and whether it reached a final status within `seconds`."""
    deadline = time.monotonic() + seconds
    pause = FIRST_POLL
    query = select(
        orders_table.c.id, orders_table.c.status, orders_table.c.report, orders_table.c.report_summary
    ).where(orders_table.c.id == order_id)
    while True:
        async with ctx.db.read() as tx:
            row = dict((await tx.execute(query)).mappings().one())
        if OrderStatus(row["status"]).is_terminal:
            return row, True
        left = deadline - time.monotonic()
        if left <= 0:
            return row, False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, MAX_POLL)


def _result_step(report: Any) -> dict[str, Any] | None:
    """The tool's structured answer: the `result` step's data (else the last step with data)."""
    if not isinstance(report, dict):
        return None
    if isinstance(report.get("data"), dict):  # a v1 report carries its data at the top
        return dict(report["data"])
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict) and isinstance(s.get("data"), dict)]
    named = [s for s in steps if s.get("name") == "result"]
    chosen = (named or steps)[-1:] if (named or steps) else []
    return dict(chosen[0]["data"]) if chosen else None


def result_of(report: Any) -> dict[str, Any]:
    """The 200 body of a tool that succeeded; a playbook without structured data answers its summary."""
    data = _result_step(report)
    if data is not None:
        return data
    summary = report.get("summary") if isinstance(report, dict) else None
    return {"summary": summary}


def failure_answer(order: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status code and error body of an order that ended without success."""
    status = str(order["status"])
    report = order.get("report") if isinstance(order.get("report"), dict) else {}
    errors = [e for e in (report or {}).get("errors") or [] if isinstance(e, dict)]
    data = _result_step(report) or {}
    tool_error = data.get("error") if isinstance(data.get("error"), dict) else None
    coded = next((e for e in errors if e.get("code")), None) or (
        tool_error if tool_error and tool_error.get("code") else None
    )
    status_code, reason, message = FAILURE_ANSWERS.get(
        status, (502, "tool_failed", f"the tool's order ended {status}")
    )
    if status == OrderStatus.FAILED.value and coded is not None:
        status_code, reason = 422, str(coded["code"])
        message = str(coded.get("message") or message)
    elif status == OrderStatus.FAILED.value and errors and errors[0].get("message"):
        message = str(errors[0]["message"])
    if not errors and tool_error is not None:
        errors = [tool_error]
    details = {"orderId": order.get("id"), "status": status, "errors": errors}
    return status_code, {"reason": reason, "message": message, "details": details}
