"""The runner hot path: claim-next, start, heartbeat and complete.

Every write is a compare-and-set on the state the domain allows (status, runner and, when the runner
presents it, the lease token), so a late or duplicate call can never apply a transition twice; when the
guard does not match, `diagnose_runner_refusal` explains why with seed 000's 409 reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select

from ikoma.domain import tokens
from ikoma.domain.errors import Unauthorized
from ikoma.domain.ids import is_uuid
from ikoma.domain.lifecycle import (
    COMPLETE_FROM,
    HEARTBEAT_FROM,
    LOGS_FROM,
    START_FROM,
    OrderStatus,
    OrderView,
    Reason,
    RetryPolicy,
    diagnose_runner_refusal,
    should_retry,
)
from ikoma.domain.secret_params import is_sealed, unseal_params
from ikoma.metrics import Metrics
from ikoma.services import apt_proxy, history
from ikoma.services import dispatch_sql as sql
from ikoma.services.broadcast import Broadcast
from ikoma.services.doorbell import Doorbell
from ikoma.services.ingest import Ingestor
from ikoma.services.runner_credentials import VerifiedTokens
from ikoma.services.vault import SecretUnreadable, Vault
from ikoma.services.wakeups import Wakeups
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import order_attempts, orders

log = structlog.get_logger("ikoma.dispatch")

MAX_WAIT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class RunnerIdentity:
    runner_id: str
    server_id: str | None
    # the stored hash of the token this call authenticated with: a claim re-checks it (rotation).
    # Not part of who the runner is (equality), and kept out of reprs and logs.
    token_hash: str | None = field(default=None, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return f"runner:{self.runner_id}"


def _rotated(identity: RunnerIdentity, stored_hash: str) -> bool:
    return identity.token_hash is not None and identity.token_hash != stored_hash


def _attempt_in_statement(tx: Tx) -> bool:
    """PostgreSQL writes a transition's attempt row in the transition's own statement (dispatch_sql's
    data-modifying CTEs: one round trip less per call); SQLite, which has none, in a statement of its own."""
    return tx.dialect == "postgresql"


class Dispatcher:
    def __init__(
        self,
        db: Database,
        *,
        claim_lease: float,
        wakeups: Wakeups,
        metrics: Metrics,
        retry: RetryPolicy | None = None,
        ingestor: Ingestor | None = None,
        vault: Vault | None = None,
        broadcast: Broadcast | None = None,
    ) -> None:
        self.db = db
        # opens sealed secret params for the runner that holds the lease, and for nobody else
        self.vault = vault
        # the waiting claims' shared read, and the idle polls' token check without a query (H2)
        self.doorbell = Doorbell(db, wakeups, broadcast)
        self.credentials = VerifiedTokens(broadcast)
        metrics.claims_waiting.set_function(lambda: wakeups.waiting_count)
        self.claim_lease = claim_lease
        self.wakeups = wakeups
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        # turns each completion's report into machine state, timeline, report and artifact (issue 4)
        self.ingestor = ingestor
        # the transactions that read their runner's row held (`authenticate(hold=True)`), and the
        # identity read: a claim there by that very identity is live for as long as the transaction lasts
        self._held: weakref.WeakKeyDictionary[Tx, RunnerIdentity] = weakref.WeakKeyDictionary()

    async def authenticate(
        self, runner_id: str | None, token: str | None, *, tx: Tx | None = None, hold: bool = False
    ) -> RunnerIdentity:
        """Who is calling; 401 for a missing, malformed or unknown id, a wrong token or a revoked runner.

        Without a transaction (an idle long-poll, the check before a body is read) a token verified in
        the last minute is trusted from `self.credentials` (see services/runner_credentials.py for how
        a revoked or rotated token is refused at once); in a transaction the database answers, and with
        `hold` the runner's row stays held to the commit: a claim in `tx` then needs no check of its own.
        """
        if not runner_id or not token or not is_uuid(runner_id):
            raise Unauthorized("runner credentials are missing or invalid")
        runner_id = str(uuid.UUID(runner_id))
        if tx is None:
            known = self.credentials.lookup(runner_id, token)
            if known is not None:
                return RunnerIdentity(runner_id, known.server_id, token_hash=known.token_hash)
        generation = self.credentials.generation
        params = {"runner_id": runner_id}
        if tx is not None:
            row = (await tx.execute(sql.AUTH_HELD if hold else sql.AUTH, params)).first()
        else:
            async with self.db.read() as own:
                row = (await own.execute(sql.AUTH, params)).first()
        if row is None or row.revoked_at is not None or not tokens.matches(token, row.token_hash):
            raise Unauthorized("runner credentials are missing or invalid")
        self.credentials.remember(runner_id, row.token_hash, row.server_id, generation=generation)
        identity = RunnerIdentity(runner_id=runner_id, server_id=row.server_id, token_hash=row.token_hash)
        if hold and tx is not None:
            self._held[tx] = identity
        return identity

    @asynccontextmanager
    async def runner_call(
        self, runner_id: str | None, token: str | None, *, claim: bool = False
    ) -> AsyncIterator[tuple[RunnerIdentity, Tx]]:
        """One runner call, one transaction: authenticate, then act (saves a round trip per call).

        `claim`: the call claims an order, so the runner's row is held from its authentication on.
        """
        if not runner_id or not token or not is_uuid(runner_id):
            raise Unauthorized("runner credentials are missing or invalid")  # before touching the database
        async with self.db.write() as tx:
            yield await self.authenticate(runner_id, token, tx=tx, hold=claim), tx

    @asynccontextmanager
    async def _write(self, tx: Tx | None) -> AsyncIterator[Tx]:
        """The caller's transaction when it has one, else a new one."""
        if tx is not None:
            yield tx
            return
        async with self.db.write() as own:
            yield own

    async def record_heartbeat(
        self,
        identity: RunnerIdentity,
        *,
        version: str | None,
        hostname: str | None,
        capabilities: list[str] | None,
        tx: Tx | None = None,
    ) -> dict[str, Any]:
        """Note the runner alive; facts it leaves out keep their previous value."""
        async with self._write(tx) as tx:
            now = (
                await tx.execute(
                    sql.RUNNER_HEARTBEAT,
                    {
                        "p_runner_id": identity.runner_id,
                        "p_version": version,
                        "p_hostname": hostname,
                        "p_capabilities": capabilities if isinstance(capabilities, list) else None,
                    },
                )
            ).scalar_one()
        return {"ok": True, "runnerId": identity.runner_id, "serverId": identity.server_id, "serverTime": now}

    # --- claim ---------------------------------------------------------------------------------------

    async def claim_once(self, identity: RunnerIdentity, *, tx: Tx | None = None) -> dict[str, Any] | None:
        lease_token = str(uuid.uuid4())
        async with self._write(tx) as tx:
            if self._held.get(tx) is not identity:  # else its row, read in this transaction, is held
                live = {"p_runner_id": identity.runner_id, "p_token_hash": identity.token_hash}
                if (await tx.execute(sql.LIVE_RUNNER[identity.token_hash is not None], live)).first() is None:
                    raise Unauthorized("runner credentials are missing or invalid")  # revoked or rotated
            by_server = identity.server_id is not None
            opened = _attempt_in_statement(tx)
            if opened:
                statement = sql.CLAIM_OPENING_ATTEMPT[by_server]
            else:
                statement = sql.CLAIM_BY_RUNNER_OR_SERVER if by_server else sql.CLAIM_BY_RUNNER
            params = {
                "p_runner_id": identity.runner_id,
                "p_server_id": identity.server_id,
                "p_lease_token": lease_token,
                "p_lease_seconds": self.claim_lease,
            }
            row = (await tx.execute(statement, params)).mappings().first()
            if row is None:
                return None
            if not opened:
                await history.open_attempt(
                    tx,
                    order_id=row["id"],
                    attempt=row["attempt"],
                    runner_id=identity.runner_id,
                    lease_token=lease_token,
                )
            await history.record_events(
                tx,
                [
                    history.event(
                        row["id"],
                        OrderStatus.QUEUED,
                        OrderStatus.CLAIMED,
                        Reason.CLAIMED,
                        attempt=row["attempt"],
                        actor=identity.actor,
                    )
                ],
            )
            claimed = dict(row)
            if any(is_sealed(value) for value in (claimed["params"] or {}).values()):
                if self.vault is None:
                    raise SecretUnreadable("this order has sealed params and no vault is configured")
                # inside the transaction: a secret that cannot be opened leaves the order QUEUED
                claimed["params"] = unseal_params(claimed["params"], self.vault.unseal)
            await apt_proxy.add_to_claim(tx, claimed)  # apt orders only: the others read nothing more
            tx.after_commit(self._count_claim)
        return claimed

    def _count_claim(self) -> None:
        self.metrics.claims.inc()
        self.metrics.count_transition(OrderStatus.CLAIMED)

    async def claim_next(
        self, identity: RunnerIdentity, *, wait: float, disconnected: Any = None
    ) -> dict[str, Any] | None:
        """The oldest eligible order, claimed with a new lease; waits up to `wait` seconds for one.

        A waiting claim queries nothing while it waits: a new or requeued order notifies it (from this
        process or, through the broadcast, another one), and the process's doorbell (one read a second
        for all waiters) rings it for what notifications miss. Its first look is answered from the
        doorbell's last read when that is safe, so an idle poll reads nothing at all.
        """
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        if wait == 0:
            return await self.claim_once(identity)  # the drain's path: one statement, no look first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        with self.wakeups.listen(identity.runner_id, identity.server_id) as waiter:
            while True:
                waiter.clear()
                if await self._has_eligible(identity):
                    order = await self._claim_as_now(identity)
                    if order is not None:
                        return order
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                self.doorbell.ring_while_waiting()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=remaining)
                if not waiter.is_set():
                    return None  # the wait ran out, and nobody rang: there is nothing to claim
                self.metrics.claim_wakeups.labels(source=waiter.source or "unknown").inc()
                # A runner that hung up must not be handed an order it will never see.
                if disconnected is not None and await disconnected():
                    return None

    async def close(self) -> None:
        """Stop the doorbell (at shutdown; it also stops by itself once nobody waits)."""
        await self.doorbell.close()

    async def _has_eligible(self, identity: RunnerIdentity) -> bool:
        known = self.doorbell.claimable(identity.runner_id, identity.server_id)
        if known is not None:
            return known
        statement = sql.ANY_ELIGIBLE[identity.server_id is not None]
        params = {"p_runner_id": identity.runner_id, "p_server_id": identity.server_id}
        async with self.db.read() as tx:
            return (await tx.execute(statement, params)).first() is not None

    async def _claim_as_now(self, identity: RunnerIdentity) -> dict[str, Any] | None:
        """Claim with the runner as the database knows it now: the identity of a long-poll may come from
        the token cache, so its server is read again (attached elsewhere meanwhile?) in the claim's
        transaction, and a revoked runner or a rotated token is refused (401)."""
        async with self.db.write() as tx:
            row = (await tx.execute(sql.AUTH_HELD, {"runner_id": identity.runner_id})).first()
            if row is None or row.revoked_at is not None or _rotated(identity, row.token_hash):
                raise Unauthorized("runner credentials are missing or invalid")
            current = self._held[tx] = RunnerIdentity(
                identity.runner_id, row.server_id, token_hash=row.token_hash
            )
            return await self.claim_once(current, tx=tx)

    # --- start / heartbeat / complete ----------------------------------------------------------------

    async def _refusal(
        self,
        tx: Tx,
        identity: RunnerIdentity,
        order_id: str,
        lease_token: str | None,
        expected: frozenset[OrderStatus],
    ) -> Exception:
        row = (await tx.execute(sql.ORDER_VIEW, {"p_order_id": order_id})).first()
        view = (
            None
            if row is None
            else OrderView(row.id, OrderStatus(row.status), row.runner_id, row.lease_token)
        )
        return diagnose_runner_refusal(
            view, runner_id=identity.runner_id, lease_token=lease_token, expected=expected, order_id=order_id
        )

    def _params(self, identity: RunnerIdentity, order_id: str, lease_token: str | None) -> dict[str, Any]:
        return {
            "p_order_id": order_id,
            "p_runner_id": identity.runner_id,
            "p_lease_token": lease_token,
            "p_lease_seconds": self.claim_lease,
        }

    async def start(
        self, identity: RunnerIdentity, order_id: str, lease_token: str | None, *, tx: Tx | None = None
    ) -> dict[str, Any]:
        async with self._write(tx) as tx:
            fenced = lease_token is not None
            marked = _attempt_in_statement(tx)
            statement = sql.START_MARKING_ATTEMPT[fenced] if marked else sql.START[fenced]
            row = (
                (await tx.execute(statement, self._params(identity, order_id, lease_token)))
                .mappings()
                .first()
            )
            if row is None:
                replayed = await self._replayed_start(tx, identity, order_id, lease_token)
                if replayed is not None:
                    return replayed
                raise await self._refusal(tx, identity, order_id, lease_token, START_FROM)
            if not marked:
                await history.mark_attempt_started(tx, order_id=order_id, attempt=row["attempt"])
            await history.record_events(
                tx,
                [
                    history.event(
                        order_id,
                        OrderStatus.CLAIMED,
                        OrderStatus.RUNNING,
                        Reason.STARTED,
                        attempt=row["attempt"],
                        actor=identity.actor,
                    )
                ],
            )
            waited = (row["started_at"] - row["claimed_at"]).total_seconds() if row["claimed_at"] else 0.0
            tx.after_commit(lambda: self._count_start(waited))
        return dict(row)

    async def _replayed_start(
        self, tx: Tx, identity: RunnerIdentity, order_id: str, lease_token: str | None
    ) -> dict[str, Any] | None:
        """The holder of the lease starting again (the first answer was lost): answer as before.

        Only with the lease token: without it a restarted runner could not be told from the one that
        already runs the step, and answering would run it twice.
        """
        if lease_token is None:
            return None
        row = (await tx.execute(select(orders).where(orders.c.id == order_id))).mappings().first()
        if (
            row is None
            or row["status"] != OrderStatus.RUNNING.value
            or row["runner_id"] != identity.runner_id
            or row["lease_token"] != lease_token
        ):
            return None
        return dict(row)

    def _count_start(self, claim_to_start_seconds: float) -> None:
        self.metrics.count_transition(OrderStatus.RUNNING)
        self.metrics.claim_to_start.observe(max(0.0, claim_to_start_seconds))

    async def heartbeat(
        self, identity: RunnerIdentity, order_id: str, lease_token: str | None, *, tx: Tx | None = None
    ) -> dict[str, Any]:
        """Extend the lease; the answer tells the runner whether a cancel was requested."""
        async with self._write(tx) as tx:
            statement = sql.HEARTBEAT[lease_token is not None]
            row = (await tx.execute(statement, self._params(identity, order_id, lease_token))).first()
            if row is None:
                raise await self._refusal(tx, identity, order_id, lease_token, HEARTBEAT_FROM)
        return {
            "orderId": row.id,
            "status": row.status,
            "leaseExpiresAt": row.lease_expires_at,
            "cancelRequested": bool(row.cancel_requested),
        }

    async def complete(
        self,
        identity: RunnerIdentity,
        order_id: str,
        *,
        outcome: OrderStatus,
        report: dict[str, Any],
        report_version: str,
        report_summary: str,
        lease_token: str | None,
        tx: Tx | None = None,
    ) -> dict[str, Any]:
        """Record the outcome and report; a FAILED run goes back to the queue while attempts remain."""
        requeued = False
        params = {
            **self._params(identity, order_id, lease_token),
            "p_outcome": outcome.value,
            "p_report": report,
            "p_report_version": report_version,
            "p_report_summary": report_summary,
        }
        async with self._write(tx) as tx:
            fenced = lease_token is not None
            closed = _attempt_in_statement(tx)
            statement = sql.COMPLETE_CLOSING_ATTEMPT[fenced] if closed else sql.COMPLETE[fenced]
            row = (await tx.execute(statement, params)).mappings().first()
            if row is None:
                replay = await self._replayed_completion(tx, identity, order_id, outcome, lease_token)
                if replay is not None:
                    return replay
                late = await self._complete_late(tx, identity, order_id, outcome, lease_token, params)
                if late is not None:
                    return late
                raise await self._refusal(tx, identity, order_id, lease_token, COMPLETE_FROM)
            attempt = row["attempt"]
            if self.ingestor is not None:
                # same transaction as the completion: derived data commits with it or not at all
                await self.ingestor.ingest(tx, dict(row))
            if not closed:
                await history.close_attempts(tx, [(order_id, attempt, outcome.value, Reason.COMPLETED.value)])
            events = [
                history.event(
                    order_id,
                    OrderStatus.RUNNING,
                    outcome,
                    Reason.COMPLETED,
                    attempt=attempt,
                    actor=identity.actor,
                )
            ]
            if should_retry(
                outcome=outcome,
                executions=row["executions"],
                max_attempts=row["max_attempts"],
                cancel_requested=bool(row["cancel_requested"]),
            ):
                delay = self.retry.delay_after(row["executions"])
                retry_params = {
                    "p_order_id": order_id,
                    "p_from_status": outcome.value,
                    "p_delay_seconds": delay,
                }
                row = (await tx.execute(sql.REQUEUE_FOR_RETRY, retry_params)).mappings().one()
                events.append(
                    history.event(
                        order_id,
                        outcome,
                        OrderStatus.QUEUED,
                        Reason.RETRY,
                        attempt=attempt,
                        actor="system",
                        details={"delaySeconds": delay, "executions": row["executions"]},
                    )
                )
                requeued = True
            await history.record_events(tx, events)
            tx.after_commit(
                lambda: self._count_completion(outcome, requeued, row["runner_id"], row["server_id"])
            )
        return dict(row)

    def _count_completion(self, outcome: OrderStatus, requeued: bool, runner_id: str, server_id: str) -> None:
        self.metrics.count_transition(outcome)
        if requeued:
            self.metrics.count_transition(OrderStatus.QUEUED)
            self.wakeups.notify(runner_id, server_id)

    async def _complete_late(
        self,
        tx: Tx,
        identity: RunnerIdentity,
        order_id: str,
        outcome: OrderStatus,
        lease_token: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any] | None:
        """A report spooled while the API was unreachable, for an order the reconciler marked STALE
        (and maybe requeued for a retry nobody has claimed yet: a success then ends the order)."""
        if lease_token is None or outcome not in (OrderStatus.SUCCEEDED, OrderStatus.FAILED):
            return None
        was = OrderStatus.STALE
        row = (await tx.execute(sql.LATE_COMPLETE, params)).mappings().first()
        if row is None and outcome is OrderStatus.SUCCEEDED:
            was = OrderStatus.QUEUED
            row = (await tx.execute(sql.LATE_COMPLETE_REQUEUED, params)).mappings().first()
        if row is None:
            return None
        if self.ingestor is not None:
            await self.ingestor.ingest(tx, dict(row))
        # the attempt row keeps what the reconciler saw (STALE); the late outcome is an event
        await history.record_events(
            tx,
            [
                history.event(
                    order_id,
                    was,
                    outcome,
                    Reason.LATE_COMPLETION,
                    attempt=row["attempt"],
                    actor=identity.actor,
                )
            ],
        )
        tx.after_commit(lambda: self.metrics.count_transition(outcome))
        return dict(row)

    async def check_logs_allowed(
        self, identity: RunnerIdentity, order_id: str, lease_token: str | None, *, tx: Tx
    ) -> None:
        """Logs are accepted from the runner holding the order while it is claimed or running."""
        params = self._params(identity, order_id, lease_token)
        if (await tx.execute(sql.LOGS_ALLOWED[lease_token is not None], params)).first() is None:
            raise await self._refusal(tx, identity, order_id, lease_token, LOGS_FROM)

    async def _replayed_completion(
        self, tx: Tx, identity: RunnerIdentity, order_id: str, outcome: OrderStatus, lease_token: str | None
    ) -> dict[str, Any] | None:
        """The same attempt reporting the same outcome again (its first answer was lost): answer as before."""
        attempt_filter = [
            order_attempts.c.order_id == order_id,
            order_attempts.c.runner_id == identity.runner_id,
        ]
        if lease_token is not None:
            attempt_filter.append(order_attempts.c.lease_token == lease_token)
        closed = (
            await tx.execute(
                select(order_attempts.c.attempt, order_attempts.c.outcome, order_attempts.c.reason)
                .where(*attempt_filter)
                .order_by(order_attempts.c.attempt.desc())
                .limit(1)
            )
        ).first()
        row = (await tx.execute(select(orders).where(orders.c.id == order_id))).mappings().first()
        if row is None or closed is None:
            return None
        if closed.outcome == outcome.value and closed.reason == Reason.COMPLETED.value:
            return dict(row)
        # a late completion leaves the attempt as the reconciler closed it; the order tells instead
        late_replay = (
            row["status"] == outcome.value
            and row["status_reason"] == Reason.LATE_COMPLETION.value
            and lease_token is not None
            # the lease is the order's (late after STALE) or its current attempt's (late after a requeue)
            and (row["lease_token"] == lease_token or closed.attempt == row["attempt"])
        )
        return dict(row) if late_replay else None
