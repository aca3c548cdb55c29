"""The REST audit of a route that writes its `allowed` entry in the transaction of its action.

`api/policy.py` audits every mutating request; for the routes it lists in `AUDITED_IN_TRANSACTION`
(`POST /v1/orders`) the entry is not written in a transaction of its own before the route runs:
the route finds an `audit.InTransaction` in the request state (`request.state.audit`) and joins it to
its write transaction, so the action and its entry commit together (one commit instead of two, the
chain's lock held only from the append to the commit) and an entry that cannot be written rolls the
action back (503 `audit_unavailable`).

A call that committed nothing (refused by validation or by the playbook's role, an idempotent replay,
an audit that could not be written) is audited here as it was before (`allowed`, then `error` for a
4xx/5xx answer), and its answer is held until those entries are written: if they cannot be, the
answer is 503 `audit_unavailable` instead. So no answer leaves without its entry, as before.
"""

from __future__ import annotations

from dataclasses import replace

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikoma.api.errors import error_response, is_database_outage
from ikoma.bootstrap import Context
from ikoma.services import audit
from ikoma.services.tools import AUDIT_UNAVAILABLE, AuditUnavailable

log = structlog.get_logger("ikoma.policy")


def audit_failure(exc: Exception, action: str) -> Exception:
    """What a route raises when its in-transaction entry cannot be written: a database outage as it
    is (503 `database_unavailable`), anything else 503 `audit_unavailable` (nothing was done)."""
    if is_database_outage(exc):
        return exc
    log.warning("audit_write_failed", action=action, error=type(exc).__name__)
    return AuditUnavailable(AUDIT_UNAVAILABLE)


async def audited_in_transaction(
    app: ASGIApp,
    ctx: Context,
    scope: Scope,
    receive: Receive,
    send: Send,
    allowed: audit.AuditEntry,
    failed: audit.AuditEntry,
) -> None:
    """Run `app` with `allowed` to be written by its transaction; `failed` is the `error` entry for a
    failed answer (its status code filled in here)."""
    action = allowed.action
    mirror = ctx.settings.audit_log
    joined = audit.InTransaction(allowed, mirror=mirror, failure=lambda exc: audit_failure(exc, action))
    scope.setdefault("state", {})["audit"] = joined
    held: list[Message] = []
    status: dict[str, int] = {}

    async def hold(message: Message) -> None:
        if message["type"] == "http.response.start":
            status["code"] = message["status"]
        if joined.written:  # committed with its entry: answered at once
            await send(message)
        else:
            held.append(message)

    try:
        await app(scope, receive, hold)
    except Exception:
        if not joined.written:  # as when the entry was written first: `allowed`, the failure unanswered
            try:
                await audit.record(ctx.db, allowed, mirror=mirror)
            except Exception as exc:
                log.warning("audit_write_failed", action=action, error=type(exc).__name__)
        raise
    code = status.get("code", 500)
    failed = replace(failed, status_code=code)
    if joined.written:
        if code >= 400:
            try:
                await audit.record(ctx.db, failed, mirror=mirror)
            except Exception as exc:
                log.warning("audit_write_failed", action=action, error=type(exc).__name__)
        return
    try:
        async with ctx.db.write() as tx:
            await audit.append(tx, allowed, mirror=mirror)
            if code >= 400:
                await audit.append(tx, failed, mirror=mirror)
    except Exception as exc:
        if is_database_outage(exc):
            raise  # answered 503 database_unavailable by api/request_context.py
        log.warning("audit_write_failed", action=action, error=type(exc).__name__)
        await error_response(503, "audit_unavailable", AUDIT_UNAVAILABLE)(scope, receive, send)
        return
    for message in held:
        await send(message)
