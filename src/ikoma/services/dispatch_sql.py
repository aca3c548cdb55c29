"""The runner calls' SQL: each one compare-and-set statement, built once at import.

SQLAlchemy memoizes a statement's cache key and compiled form; building them per call cost more than
running them (profiled). The dispatcher binds parameters (`p_order_id`, `p_runner_id`, `p_lease_token`,
…) and, when a guard does not match, asks `diagnose_runner_refusal` why. A statement keyed by a bool
(`START[True]`) has a variant for a caller that presents its lease token and a tokenless one
(seed-style clients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, and_, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB

from ikoma.domain.lifecycle import (
    COMPLETE_FROM,
    HEARTBEAT_FROM,
    LATE_COMPLETE_FROM,
    LOGS_FROM,
    START_FROM,
    OrderStatus,
    Reason,
)
from ikoma.storage.clock import db_now
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import order_attempts, orders, runners, servers

# The hot-path statements are built once, with bind parameters: SQLAlchemy then memoizes each one's
# cache key and compiled form, where building them per call cost more than running them (profiled).
_AUTH = (
    select(runners.c.token_hash, runners.c.revoked_at, servers.c.id.label("server_id"))
    .select_from(
        runners.outerjoin(servers, and_(servers.c.runner_id == runners.c.id, servers.c.deleted_at.is_(None)))
    )
    .where(runners.c.id == bindparam("runner_id"))
)
AUTH = Prepared(_AUTH)
# A claim's own authentication: the runner's row read FOR SHARE (PostgreSQL) to the claim's commit, which
# is what LIVE_RUNNER below checks, so a claim that authenticated this way skips it (one statement less).
AUTH_HELD = Prepared(_AUTH.with_for_update(read=True, of=runners))


# Checked again by every claim, in the claim's transaction: a long-poll that began before the runner was
# revoked (or its token rotated) must not be handed an order after. On PostgreSQL the row is read FOR
# SHARE, so a revocation committing meanwhile is waited for and seen, and a revocation that comes after
# waits for this claim and then releases the order it took (SQLite serialises writers anyway).
def _live_runner(*, with_token: bool) -> Any:
    live = [runners.c.id == bindparam("p_runner_id"), runners.c.revoked_at.is_(None)]
    if with_token:
        live.append(runners.c.token_hash == bindparam("p_token_hash"))
    return select(runners.c.id).where(*live).with_for_update(read=True)


LIVE_RUNNER = {with_token: Prepared(_live_runner(with_token=with_token)) for with_token in (False, True)}
# None must bind as SQL NULL (not JSON `null`) so COALESCE keeps the stored list: a heartbeat without
# capabilities once stored `null` and broke every runner listing.
NULL_AS_SQL_NULL = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


_CLAIMABLE_NOW = or_(orders.c.not_before.is_(None), orders.c.not_before <= db_now())


def _eligible(*, by_server: bool) -> list[Any]:
    mine = orders.c.runner_id == bindparam("p_runner_id")
    if by_server:
        mine = or_(mine, orders.c.server_id == bindparam("p_server_id"))
    return [orders.c.status == OrderStatus.QUEUED.value, mine, _CLAIMABLE_NOW]


def _claim(*, by_server: bool) -> Any:
    oldest = (
        select(orders.c.id)
        .where(*_eligible(by_server=by_server))
        .order_by(orders.c.created_at, orders.c.id)
        .limit(1)
        # PostgreSQL: concurrent claimers skip each other's row instead of queueing on it.
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return (
        update(orders)
        .where(orders.c.id == oldest, orders.c.status == OrderStatus.QUEUED.value)
        .values(
            status=OrderStatus.CLAIMED.value,
            runner_id=bindparam("p_runner_id"),
            lease_token=bindparam("p_lease_token"),
            lease_expires_at=db_now(bindparam("p_lease_seconds")),
            claimed_at=db_now(),
            attempt=orders.c.attempt + 1,
            status_reason=Reason.CLAIMED.value,
            updated_at=db_now(),
        )
        .returning(*orders.c)
    )


CLAIM_BY_RUNNER = Prepared(_claim(by_server=False))
CLAIM_BY_RUNNER_OR_SERVER = Prepared(_claim(by_server=True))


def _with_attempt(transition: Any, attempt_write: Callable[[Any], Any]) -> Any:
    """PostgreSQL: the transition and the write of its attempt row as one statement (a data-modifying
    CTE), one round trip instead of two; it answers the transition's RETURNING row. The attempt write
    sees the order's new values through the CTE (`changed`); nothing else in the statement reads it."""
    changed = transition.cte("changed")
    return select(changed).add_cte(attempt_write(changed).cte("attempt_row"))


def _open_attempt(changed: Any) -> Any:
    columns = ["order_id", "attempt", "runner_id", "lease_token", "claimed_at"]
    claimed = select(changed.c.id, changed.c.attempt, changed.c.runner_id, changed.c.lease_token, db_now())
    return insert(order_attempts).from_select(columns, claimed)


# services/history.open_attempt's row, written by the claim itself
CLAIM_OPENING_ATTEMPT = {
    by_server: Prepared(_with_attempt(_claim(by_server=by_server), _open_attempt))
    for by_server in (False, True)
}
# A long-poll looks (a read) before it claims (a write transaction): an idle runner costs no write.
ANY_ELIGIBLE = {
    by_server: select(orders.c.id).where(*_eligible(by_server=by_server)).limit(1)
    for by_server in (False, True)
}
# The doorbell's one question per second for every waiting claim of the process: who has work now?
# (orders created by another API process, retry delays that ended)
CLAIMABLE_KEYS = (
    select(orders.c.runner_id, orders.c.server_id)
    .where(orders.c.status == OrderStatus.QUEUED.value, _CLAIMABLE_NOW)
    .distinct()
)


def _guard(allowed: frozenset[OrderStatus], *, fenced: bool) -> list[Any]:
    """WHERE id, allowed status, runner [and lease token]: what every runner call checks."""
    guard = [
        orders.c.id == bindparam("p_order_id"),
        orders.c.status.in_(sorted(s.value for s in allowed)),
        orders.c.runner_id == bindparam("p_runner_id"),
    ]
    if fenced:
        guard.append(orders.c.lease_token == bindparam("p_lease_token"))
    else:
        # Without a token the call can only mean the runner's first attempt at this order: once the
        # same runner holds a newer attempt, a tokenless caller may be the zombie of the older one.
        earlier_attempt = (
            select(order_attempts.c.attempt)
            .where(
                order_attempts.c.order_id == orders.c.id,
                order_attempts.c.runner_id == orders.c.runner_id,
                order_attempts.c.attempt < orders.c.attempt,
            )
            .exists()
        )
        guard.append(~earlier_attempt)
    return guard


def _guarded(allowed: frozenset[OrderStatus], *, fenced: bool) -> Any:
    """The compare-and-set UPDATE of a runner call."""
    return update(orders).where(*_guard(allowed, fenced=fenced))


def _both(build: Any) -> dict[bool, Prepared]:
    return {fenced: Prepared(build(fenced)) for fenced in (False, True)}


START = _both(
    lambda fenced: (
        _guarded(START_FROM, fenced=fenced)
        .values(
            status=OrderStatus.RUNNING.value,
            started_at=db_now(),
            last_heartbeat_at=db_now(),
            lease_expires_at=db_now(bindparam("p_lease_seconds")),
            executions=orders.c.executions + 1,
            status_reason=Reason.STARTED.value,
            updated_at=db_now(),
        )
        .returning(*orders.c)
    )
)


def _attempt_of(changed: Any) -> list[Any]:
    return [order_attempts.c.order_id == changed.c.id, order_attempts.c.attempt == changed.c.attempt]


# services/history.mark_attempt_started, written by the start itself (PostgreSQL)
START_MARKING_ATTEMPT = {
    fenced: Prepared(
        _with_attempt(
            START[fenced].statement,
            lambda changed: update(order_attempts).where(*_attempt_of(changed)).values(started_at=db_now()),
        )
    )
    for fenced in (False, True)
}
HEARTBEAT = _both(
    lambda fenced: (
        _guarded(HEARTBEAT_FROM, fenced=fenced)
        .values(last_heartbeat_at=db_now(), lease_expires_at=db_now(bindparam("p_lease_seconds")))
        .returning(orders.c.id, orders.c.status, orders.c.lease_expires_at, orders.c.cancel_requested)
    )
)


def _completion(allowed: frozenset[OrderStatus], *, fenced: bool, reason: Reason) -> Any:
    """Record the runner's outcome and report: the UPDATE of complete and of a late completion."""
    return (
        _guarded(allowed, fenced=fenced)
        .values(
            status=bindparam("p_outcome"),
            finished_at=db_now(),
            report=bindparam("p_report", type_=orders.c.report.type),
            report_version=bindparam("p_report_version"),
            report_summary=bindparam("p_report_summary"),
            status_reason=reason.value,
            updated_at=db_now(),
        )
        .returning(*orders.c)
    )


COMPLETE = _both(lambda fenced: _completion(COMPLETE_FROM, fenced=fenced, reason=Reason.COMPLETED))
# services/history.close_attempts (outcome: the order's new status), written by the completion itself
# (PostgreSQL); an attempt is closed once and never rewritten
COMPLETE_CLOSING_ATTEMPT = {
    fenced: Prepared(
        _with_attempt(
            COMPLETE[fenced].statement,
            lambda changed: (
                update(order_attempts)
                .where(*_attempt_of(changed), order_attempts.c.ended_at.is_(None))
                .values(ended_at=db_now(), outcome=changed.c.status, reason=literal(Reason.COMPLETED.value))
            ),
        )
    )
    for fenced in (False, True)
}
# Only a fenced call may complete late: the lease token proves nobody else claimed the order since.
LATE_COMPLETE = Prepared(_completion(LATE_COMPLETE_FROM, fenced=True, reason=Reason.LATE_COMPLETION))
# A late success for a lost run already requeued as a retry, as long as nobody claimed the retry: the
# order's current attempt is still the one this lease held and the reconciler closed as STALE.
LATE_COMPLETE_REQUEUED = Prepared(
    update(orders)
    .where(
        orders.c.id == bindparam("p_order_id"),
        orders.c.status == OrderStatus.QUEUED.value,
        select(order_attempts.c.attempt)
        .where(
            order_attempts.c.order_id == orders.c.id,
            order_attempts.c.attempt == orders.c.attempt,
            order_attempts.c.runner_id == bindparam("p_runner_id"),
            order_attempts.c.lease_token == bindparam("p_lease_token"),
            order_attempts.c.outcome == OrderStatus.STALE.value,
        )
        .exists(),
    )
    .values(
        status=OrderStatus.SUCCEEDED.value,
        finished_at=db_now(),
        not_before=None,
        report=bindparam("p_report", type_=orders.c.report.type),
        report_version=bindparam("p_report_version"),
        report_summary=bindparam("p_report_summary"),
        status_reason=Reason.LATE_COMPLETION.value,
        updated_at=db_now(),
    )
    .returning(*orders.c)
)
LOGS_ALLOWED = _both(lambda fenced: select(orders.c.id).where(*_guard(LOGS_FROM, fenced=fenced)))
REQUEUE_FOR_RETRY = Prepared(
    update(orders)
    .where(orders.c.id == bindparam("p_order_id"), orders.c.status == bindparam("p_from_status"))
    .values(
        status=OrderStatus.QUEUED.value,
        not_before=db_now(bindparam("p_delay_seconds")),
        lease_token=None,
        lease_expires_at=None,
        finished_at=None,
        status_reason=Reason.RETRY.value,
        updated_at=db_now(),
    )
    .returning(*orders.c)
)
ORDER_VIEW = Prepared(
    select(orders.c.id, orders.c.status, orders.c.runner_id, orders.c.lease_token).where(
        orders.c.id == bindparam("p_order_id")
    )
)
RUNNER_HEARTBEAT = Prepared(
    update(runners)
    .where(runners.c.id == bindparam("p_runner_id"))
    .values(
        last_heartbeat_at=db_now(),
        version=func.coalesce(bindparam("p_version", type_=runners.c.version.type), runners.c.version),
        hostname=func.coalesce(bindparam("p_hostname", type_=runners.c.hostname.type), runners.c.hostname),
        capabilities=func.coalesce(
            bindparam("p_capabilities", type_=NULL_AS_SQL_NULL), runners.c.capabilities
        ),
    )
    .returning(runners.c.last_heartbeat_at)
)
