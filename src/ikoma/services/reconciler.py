"""The reconciler: requeues expired claims, ends runs that stopped heartbeating or ran too long.

One tick is one transaction. Every change is a guarded UPDATE that re-checks its condition against the
database clock, so a heartbeat that lands during the tick is never overruled (no false STALE). With
several API processes on one PostgreSQL, a transaction-scoped advisory lock elects the tick's leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select, update

from ikoma.domain.lifecycle import OrderStatus, Reason, RetryPolicy, decide_lost_run
from ikoma.metrics import Metrics
from ikoma.services import audit_anchor, history, timeline
from ikoma.services.audit_anchor import Anchor
from ikoma.services.retention import Sweeper
from ikoma.services.schedules import Scheduler
from ikoma.services.wakeups import Wakeups
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import orders

log = structlog.get_logger("ikoma.reconciler")

ADVISORY_LOCK_KEY = 0x1C0A_0001  # arbitrary, fixed: "the IKOMA reconciler"
BATCH = 500
ACTOR = "reconciler"


@dataclass
class TickSummary:
    leader: bool = True
    requeued: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    scheduled: list[str] = field(default_factory=list)
    presence_changes: int = 0

    @property
    def changed(self) -> int:
        return len(self.requeued) + len(self.stale) + len(self.timed_out) + len(self.cancelled)


class Reconciler:
    def __init__(
        self,
        db: Database,
        *,
        stale_after: float,
        interval: float,
        wakeups: Wakeups,
        metrics: Metrics,
        retry: RetryPolicy | None = None,
        scheduler: Scheduler | None = None,
        sweeper: Sweeper | None = None,
        anchor: Anchor | None = None,
        checkpoint_interval: float = 60.0,
    ) -> None:
        self.db = db
        self.stale_after = stale_after
        self.interval = interval
        self.wakeups = wakeups
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        # issue 4: collection schedules (queued in the tick's transaction) and the retention sweeper
        self.scheduler = scheduler
        self.sweeper = sweeper
        # issue 10: signed checkpoints of the audit chain's head, written by the leader
        self.anchor = anchor
        self.checkpoint_interval = checkpoint_interval
        self._last_checkpoint: float | None = None
        # Set by run_forever: until `stale_after` has passed since this process began reconciling,
        # silence is not judged. Runners could not reach an API that was down; they get the time to
        # heartbeat again before their runs are called lost (no false STALE after an outage).
        self.started_at: float | None = None

    def in_grace(self, now: float | None = None) -> bool:
        """True while runners may still be reconnecting after this process started."""
        if self.started_at is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self.started_at < self.stale_after

    def begin_grace(self) -> None:
        """The API is about to accept requests: runners can reach it from now on, so the grace starts
        now. Start-up (migrations, leader election, other loops) may take seconds after `run_forever`
        began under load; a grace counted from then could end before a runner's first heartbeat landed."""
        self.started_at = time.monotonic()

    async def run_forever(self) -> None:
        self.started_at = time.monotonic()
        while True:
            try:
                summary = await self.tick()
                if summary.changed or summary.scheduled:
                    log.info(
                        "reconciled",
                        requeued=len(summary.requeued),
                        stale=len(summary.stale),
                        timed_out=len(summary.timed_out),
                        cancelled=len(summary.cancelled),
                        retried=len(summary.retried),
                        scheduled=len(summary.scheduled),
                    )
                if summary.leader:
                    await self._sweep()
                    await self._checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must outlive a database outage
                log.warning("reconcile_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await asyncio.sleep(self.interval)

    async def tick(self) -> TickSummary:
        summary = TickSummary()
        async with self.db.write() as tx:
            if tx.dialect == "postgresql":
                got = (
                    await tx.execute(select(func.pg_try_advisory_xact_lock(ADVISORY_LOCK_KEY)))
                ).scalar_one()
                if not got:
                    summary.leader = False
                    return summary
            await self._time_out(tx, summary)
            if not self.in_grace():
                await self._end_lost_runs(tx, summary)
                await self._requeue_expired_claims(tx, summary)
            # after the lost runs: a runner that just went silent is offline on its server's timeline
            summary.presence_changes = await timeline.track_presence(tx, stale_after=self.stale_after)
            if self.scheduler is not None:
                summary.scheduled = await self.scheduler.tick(tx)
        await self.publish(summary)
        return summary

    async def publish(self, summary: TickSummary) -> None:
        """After the commit: count the transitions and wake the runners waiting for requeued orders."""
        for status, ids in (
            (OrderStatus.QUEUED, summary.requeued + summary.retried),
            (OrderStatus.STALE, summary.stale),
            (OrderStatus.TIMEOUT, summary.timed_out),
            (OrderStatus.CANCELLED, summary.cancelled),
        ):
            if ids:
                self.metrics.count_transition(status, len(ids))
        if summary.requeued or summary.retried:
            # a requeued order may be waited for by a long-polling runner right now
            await self._wake(summary.requeued + summary.retried)

    async def release_runner(self, tx: Tx, runner_id: str, *, actor: str) -> TickSummary:
        """The orders a revoked runner holds, in the caller's transaction: never lost, never run twice.

        The same paths as a lost runner: a CLAIMED order (nothing ran) goes back to the queue; a RUNNING
        one ends CANCELLED if a cancel was asked, else STALE, and is requeued while attempts remain.
        Call `publish` with the summary once the transaction has committed.
        """
        summary = TickSummary()
        mine = orders.c.runner_id == runner_id
        while True:  # batches of BATCH rows: loop until the runner holds nothing
            moved = summary.changed
            await self._end_runs(
                tx,
                summary,
                [orders.c.status == OrderStatus.RUNNING.value, mine],
                Reason.RUNNER_REVOKED,
                actor,
                skip_locked=False,
            )
            await self._requeue_claims(
                tx,
                summary,
                [orders.c.status == OrderStatus.CLAIMED.value, mine],
                Reason.RUNNER_REVOKED,
                actor,
                skip_locked=False,
            )
            if summary.changed == moved:
                return summary

    async def _sweep(self) -> None:
        """Retention, every `sweeper.interval`; its own transactions, so the tick's stays short."""
        if self.sweeper is None or not self.sweeper.due():
            return
        try:
            swept = await self.sweeper.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # retention waits for the next round; the reconciler must go on
            log.warning("sweep_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return
        if swept.changed:
            log.info(
                "swept",
                expired=len(swept.expired),
                orphans=len(swept.orphans),
                downsampled=swept.downsampled,
                trimmed=swept.trimmed,
                snapshots_pruned=swept.snapshots_pruned,
                events_pruned=swept.events_pruned,
            )

    async def _checkpoint(self) -> None:
        """Sign the audit chain's head every `checkpoint_interval` (services/audit_anchor.py)."""
        if self.anchor is None or self.checkpoint_interval <= 0:
            return
        now = time.monotonic()
        if self._last_checkpoint is not None and now - self._last_checkpoint < self.checkpoint_interval:
            return
        self._last_checkpoint = now
        try:
            await audit_anchor.checkpoint(self.db, self.anchor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round tries again; reconciling must go on
            log.warning("audit_checkpoint_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _wake(self, order_ids: list[str]) -> None:
        async with self.db.read() as tx:
            rows = await tx.execute(
                select(orders.c.runner_id, orders.c.server_id).where(orders.c.id.in_(order_ids))
            )
            for row in rows:
                self.wakeups.notify(row.runner_id, row.server_id)

    async def _transition(
        self,
        tx: Tx,
        where: list[Any],
        to: OrderStatus,
        reason: Reason,
        extra: dict[str, Any] | None = None,
        *,
        skip_locked: bool = True,
    ) -> list[Any]:
        """Apply one set-based guarded transition; returns the rows that moved (id, attempt, ...).

        The tick skips rows another transaction holds (the next tick sees them); a revocation waits for
        them, so none of the runner's orders is left behind.
        """
        candidates = select(orders.c.id).where(*where).limit(BATCH)
        if tx.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=skip_locked)
        values: dict[str, Any] = {"status": to.value, "status_reason": reason.value, "updated_at": db_now()}
        if to in (OrderStatus.TIMEOUT, OrderStatus.STALE, OrderStatus.CANCELLED):
            values["finished_at"] = db_now()
        values.update(extra or {})
        return list(
            await tx.execute(
                update(orders)
                .where(orders.c.id.in_(candidates.scalar_subquery()), *where)
                .values(values)
                .returning(
                    orders.c.id,
                    orders.c.status,
                    orders.c.attempt,
                    orders.c.executions,
                    orders.c.max_attempts,
                    orders.c.cancel_requested,
                )
            )
        )

    async def _time_out(self, tx: Tx, summary: TickSummary) -> None:
        rows = await self._transition(
            tx,
            [orders.c.status == OrderStatus.RUNNING.value, orders.c.started_at < db_now(-orders.c.timeout_s)],
            OrderStatus.TIMEOUT,
            Reason.TIMED_OUT,
        )
        await self._record(tx, rows, OrderStatus.RUNNING, OrderStatus.TIMEOUT, Reason.TIMED_OUT, close=True)
        summary.timed_out += [r.id for r in rows]

    async def _end_lost_runs(self, tx: Tx, summary: TickSummary) -> None:
        silent = func.coalesce(orders.c.last_heartbeat_at, orders.c.started_at) < db_now(-self.stale_after)
        running = orders.c.status == OrderStatus.RUNNING.value
        await self._end_runs(tx, summary, [running, silent], Reason.HEARTBEAT_LOST, ACTOR)

    async def _end_runs(
        self,
        tx: Tx,
        summary: TickSummary,
        where: list[Any],
        reason: Reason,
        actor: str,
        *,
        skip_locked: bool = True,
    ) -> None:
        """RUNNING orders (`where`) whose runner is gone: CANCELLED or STALE, then requeued per policy."""
        # A cancel was requested and the runner is gone: the user's wish stands, nothing is re-run.
        cancelled = await self._transition(
            tx,
            [*where, orders.c.cancel_requested.is_(True)],
            OrderStatus.CANCELLED,
            reason,
            skip_locked=skip_locked,
        )
        await self._record(
            tx, cancelled, OrderStatus.RUNNING, OrderStatus.CANCELLED, reason, close=True, actor=actor
        )
        summary.cancelled += [r.id for r in cancelled]
        stale = await self._transition(
            tx,
            [*where, orders.c.cancel_requested.is_(False)],
            OrderStatus.STALE,
            reason,
            skip_locked=skip_locked,
        )
        await self._record(tx, stale, OrderStatus.RUNNING, OrderStatus.STALE, reason, close=True, actor=actor)
        summary.stale += [r.id for r in stale]
        retry_events = []
        for row in stale:
            path = decide_lost_run(
                cancel_requested=False, executions=row.executions, max_attempts=row.max_attempts
            )
            if OrderStatus.QUEUED not in path:
                continue
            delay = self.retry.delay_after(row.executions)
            await tx.execute(
                update(orders)
                .where(orders.c.id == row.id, orders.c.status == OrderStatus.STALE.value)
                .values(
                    status=OrderStatus.QUEUED.value,
                    not_before=db_now(delay),
                    lease_token=None,
                    lease_expires_at=None,
                    finished_at=None,
                    status_reason=Reason.RETRY.value,
                    updated_at=db_now(),
                )
            )
            retry_events.append(
                history.event(
                    row.id,
                    OrderStatus.STALE,
                    OrderStatus.QUEUED,
                    Reason.RETRY,
                    attempt=row.attempt,
                    actor=actor,
                    details={"delaySeconds": delay, "executions": row.executions},
                )
            )
            summary.retried.append(row.id)
        await history.record_events(tx, retry_events)

    async def _requeue_expired_claims(self, tx: Tx, summary: TickSummary) -> None:
        expired = [orders.c.status == OrderStatus.CLAIMED.value, orders.c.lease_expires_at < db_now()]
        await self._requeue_claims(tx, summary, expired, Reason.LEASE_EXPIRED, ACTOR)

    async def _requeue_claims(
        self,
        tx: Tx,
        summary: TickSummary,
        where: list[Any],
        reason: Reason,
        actor: str,
        *,
        skip_locked: bool = True,
    ) -> None:
        # Nothing ran yet (the runner never started), so requeueing is safe even for max_attempts=1.
        rows = await self._transition(
            tx,
            where,
            OrderStatus.QUEUED,
            reason,
            {"lease_token": None, "lease_expires_at": None},
            skip_locked=skip_locked,
        )
        # the attempt's outcome names why it ended: LEASE_EXPIRED, RUNNER_REVOKED
        await self._record(
            tx,
            rows,
            OrderStatus.CLAIMED,
            OrderStatus.QUEUED,
            reason,
            close=True,
            outcome=reason.upper(),
            actor=actor,
        )
        summary.requeued += [r.id for r in rows]

    async def _record(
        self,
        tx: Tx,
        rows: list[Any],
        from_status: OrderStatus,
        to: OrderStatus,
        reason: Reason,
        *,
        close: bool,
        outcome: str | None = None,
        actor: str = ACTOR,
    ) -> None:
        if not rows:
            return
        if close:
            await history.close_attempts(
                tx, [(r.id, r.attempt, outcome or to.value, reason.value) for r in rows]
            )
        await history.record_events(
            tx, [history.event(r.id, from_status, to, reason, attempt=r.attempt, actor=actor) for r in rows]
        )


async def stop(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
