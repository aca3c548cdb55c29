"""Webhook deliveries: each webhook's events POSTed in id order, signed, retried, logged.

One task per webhook with work, each with one delivery in flight at a time (the webhook's lease:
`webhooks.lease_until`, taken in a short transaction before the HTTP call and released in another after
it, so two API replicas never send the same webhook's events side by side, and a replica that died
mid-call leaves a lease that expires). No transaction is held across DNS or HTTP, and the dispatcher
runs in its own tasks: a slow endpoint delays its own webhook, never order dispatch nor other webhooks.

A webhook's next work (`webhook_queue.next_job`) is its oldest pending delivery (a retry or a
redelivery), else the next event after its cursor that matches its filter. A failed attempt is retried
after an exponential backoff with jitter (`retry_delay`) until the delivery is older than the retry
window (then `failed`, and the next event goes); `disable_after` failed attempts in a row disable the
webhook and publish `webhook.disabled`.

Each POST (`webhook_http.post`): the event's JSON, `X-Ikoma-Event` (kind), `X-Ikoma-Delivery` (the
delivery id), `X-Ikoma-Timestamp` (unix seconds) and `X-Ikoma-Signature: sha256=<hex HMAC-SHA256(secret,
"<timestamp>.<body>")>`. A 2xx answer is a success; anything else (3xx included: redirects are not
followed, they could lead to a private address) is a failure.

The loop runs on the elected replica only (`services/leader.py`); the per-webhook lease still guards
the moment when two processes both believe they lead. It is woken by new events (`events.NEW_EVENTS` after
a commit in this process, the `ikoma_events` broadcast for the other replicas') and looks every
`poll_interval_s` as the safety net (a lost notification, retry times that come due).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import and_, delete, exists, func, not_, or_, select, update

from ikoma.services import events, webhook_http, webhook_queue
from ikoma.services.broadcast import EVENTS, Broadcast
from ikoma.services.vault import Vault
from ikoma.services.webhook_http import Attempt, Job
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import events as events_table
from ikoma.storage.tables import webhook_deliveries, webhooks

if TYPE_CHECKING:
    from ikoma.settings import Settings

log = structlog.get_logger("ikoma.webhooks")

Outcome = Literal["delivered", "failed", "retrying"]
PRUNE_EVERY_S = 3600.0
# after a ring by new events, how long the loop lets more commits arrive before it looks once for all
COALESCE_S = 0.02


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float = 10.0
    retry_base_s: float = 10.0
    retry_max_delay_s: float = 3600.0
    retry_window_s: float = 86400.0
    disable_after: int = 15
    allow_private: bool = False
    poll_interval_s: float = 1.0
    concurrency: int = 16
    # delivered and failed deliveries are kept this long in the log, as long as events are by default
    log_retention_s: float = 30 * 86400.0

    @property
    def lease_s(self) -> float:
        """Longer than one attempt can take (lookup + connect + answer), so a lease ends only by release
        or by the death of its holder."""
        return 2 * self.timeout_s + 30

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            timeout_s=settings.webhook_timeout,
            retry_base_s=settings.webhook_retry_base,
            retry_max_delay_s=settings.webhook_retry_max_delay,
            retry_window_s=settings.webhook_retry_window,
            disable_after=settings.webhook_disable_after,
            allow_private=settings.webhook_allow_private,
            poll_interval_s=settings.webhook_poll_interval,
        )


def retry_delay(
    failed_attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before the next attempt: base x 2^(n-1), at most `cap`, then a random part of the upper
    half off (jitter), so receivers back from an outage are not hit by every sender at once."""
    ceiling = min(cap, base * 2 ** min(max(failed_attempts, 1) - 1, 62))
    return float(ceiling / 2 + rand() * ceiling / 2)


class WebhookDispatcher:
    def __init__(
        self,
        db: Database,
        vault: Vault,
        policy: DeliveryPolicy,
        *,
        registry: CollectorRegistry | None = None,
        broadcast: Broadcast | None = None,
    ) -> None:
        self.db = db
        self.vault = vault
        self.policy = policy
        self.broadcast = broadcast  # events committed by other replicas wake the loop through it
        self.deliveries = Counter(
            "ikoma_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed: given up)",
            ["outcome"],
            registry=registry if registry is not None else CollectorRegistry(),
        )
        for outcome in ("delivered", "retrying", "failed"):  # at 0 from the start, for rate() and alerts
            self.deliveries.labels(outcome=outcome)
        self._wakeup = asyncio.Event()
        self._remote_events = asyncio.Event()
        self._any_enabled = True  # until the first look says otherwise
        self._running: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(policy.concurrency)
        # a certificate store loaded once, not per attempt
        self._tls = ssl.create_default_context()

    def wake(self) -> None:
        """A webhook changed in this process: look again at once (its enabled state included)."""
        self._wakeup.set()

    def _events_elsewhere(self) -> None:
        self._remote_events.set()

    async def run_forever(self) -> None:
        subscription = (
            self.broadcast.subscribe(EVENTS, lambda _payload: self._events_elsewhere())
            if self.broadcast
            else None
        )
        pruned_at = 0.0
        checked_at = float("-inf")
        try:
            with events.NEW_EVENTS.listen() as rung:
                while True:
                    by_events = rung.is_set() or self._remote_events.is_set()
                    woken = self._wakeup.is_set()
                    rung.clear()
                    self._remote_events.clear()
                    self._wakeup.clear()
                    if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                        pruned_at = time.monotonic()
                        await self.prune_log()
                    # Every commit that writes an event rings this loop (three per order in a drain):
                    # with no enabled webhook that must not cost a read each. Whether any is enabled is
                    # read at most once a poll interval, and at once when this process changes one
                    # (`wake`); another replica's new webhook is seen at the next interval.
                    if woken or time.monotonic() - checked_at >= self.policy.poll_interval_s:
                        checked_at = time.monotonic()
                        self._any_enabled = await self._has_enabled()
                    if self._any_enabled:
                        if by_events and not woken:
                            await asyncio.sleep(COALESCE_S)  # a burst of commits: one look for all of it
                        await self._dispatch_due()
                    waits = [asyncio.ensure_future(rung.wait()), asyncio.ensure_future(self._wakeup.wait())]
                    waits.append(asyncio.ensure_future(self._remote_events.wait()))
                    try:
                        await asyncio.wait(
                            waits, timeout=self.policy.poll_interval_s, return_when="FIRST_COMPLETED"
                        )
                    finally:
                        for waiting in waits:
                            waiting.cancel()
        finally:
            if subscription is not None:
                subscription.close()

    async def _has_enabled(self) -> bool:
        try:
            async with self.db.read() as tx:
                query = select(exists().where(webhooks.c.enabled.is_(True)))
                return bool((await tx.execute(query)).scalar())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage: keep looking as before, the next interval reads again
            log.warning("webhook_dispatch_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return True

    async def _dispatch_due(self) -> None:
        try:
            for webhook_id in await self.due_webhooks():
                if webhook_id not in self._running:
                    self._running[webhook_id] = asyncio.create_task(
                        self._drain_task(webhook_id), name=f"webhook-{webhook_id}"
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive a database outage
            log.warning("webhook_dispatch_failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def prune_log(self) -> None:
        """Drop delivered and failed deliveries past the log's retention (pending ones stay)."""
        try:
            async with self.db.write() as tx:
                await tx.execute(
                    delete(webhook_deliveries).where(
                        webhook_deliveries.c.status != "pending",
                        webhook_deliveries.c.created_at < db_now(-self.policy.log_retention_s),
                    )
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("webhook_log_prune_failed", error=type(exc).__name__)

    async def close(self) -> None:
        """Cancel the deliveries in flight; their leases expire and another pass retries them."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run_once(self) -> None:
        """Deliver what is due now, and wait for it (tests; the loop does the same without waiting)."""
        await asyncio.gather(*(self.drain(webhook_id) for webhook_id in await self.due_webhooks()))

    async def due_webhooks(self) -> list[str]:
        """Enabled, unleased webhooks with a pending delivery that is due, or with events past their
        cursor and no pending delivery (one cheap read for all of them)."""
        pending = webhook_deliveries.c.status == "pending"
        mine = webhook_deliveries.c.webhook_id == webhooks.c.id
        newest = select(func.coalesce(func.max(events_table.c.id), 0)).scalar_subquery()
        query = select(webhooks.c.id).where(
            webhooks.c.enabled.is_(True),
            or_(webhooks.c.lease_until.is_(None), webhooks.c.lease_until < db_now()),
            or_(
                exists().where(mine, pending, webhook_deliveries.c.next_attempt_at <= db_now()),
                and_(not_(exists().where(mine, pending)), webhooks.c.last_event_id < newest),
            ),
        )
        async with self.db.read() as tx:
            return [str(i) for i in (await tx.execute(query)).scalars()]

    async def _drain_task(self, webhook_id: str) -> None:
        try:
            await self.drain(webhook_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("webhook_delivery_failed", webhook=webhook_id, error=type(exc).__name__)
        finally:
            self._running.pop(webhook_id, None)

    async def drain(self, webhook_id: str) -> None:
        """Deliver this webhook's due work, one delivery at a time, until none is due."""
        async with self._slots:
            while True:
                job = await webhook_queue.next_job(
                    self.db, self.vault, webhook_id, lease_s=self.policy.lease_s
                )
                if job is None:
                    return
                attempt = await webhook_http.post(
                    job,
                    timeout_s=self.policy.timeout_s,
                    allow_private=self.policy.allow_private,
                    tls=self._tls,
                )
                outcome = await self._record(job, attempt)
                if outcome != "delivered" and outcome != "failed":
                    return  # a retry waits for its time; the next event waits behind it

    # --- one delivery ---------------------------------------------------------------------------
    async def _record(self, job: Job, attempt: Attempt) -> Outcome:
        outcome: Outcome = "delivered"
        async with self.db.write() as tx:
            row = (
                await tx.execute(
                    select(
                        webhook_deliveries.c.attempts,
                        (webhook_deliveries.c.created_at <= db_now(-self.policy.retry_window_s)).label("old"),
                        webhooks.c.consecutive_failures,
                        webhooks.c.enabled,
                    )
                    .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id)
                    .where(webhook_deliveries.c.id == job.delivery_id)
                )
            ).first()
            if row is None:  # the webhook was deleted meanwhile
                return "failed"
            attempts = int(row.attempts) + 1
            values: dict[str, Any] = {
                "attempts": attempts,
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
                "last_attempt_at": db_now(),
            }
            hook: dict[str, Any] = {"lease_until": None}
            if attempt.ok:
                values.update(status="delivered", delivered_at=db_now(), next_attempt_at=None)
                hook["consecutive_failures"] = 0
            else:
                failures = int(row.consecutive_failures) + 1
                hook["consecutive_failures"] = failures
                if row.old:
                    outcome = "failed"
                    values.update(status="failed", failed_at=db_now(), next_attempt_at=None)
                else:
                    outcome = "retrying"
                    delay = retry_delay(failures, self.policy.retry_base_s, self.policy.retry_max_delay_s)
                    values["next_attempt_at"] = db_now(delay)
                if failures >= self.policy.disable_after and row.enabled:
                    outcome = "failed"
                    hook.update(enabled=False, disabled_reason="consecutive_failures", disabled_at=db_now())
                    events.publish(
                        tx,
                        "webhook.disabled",
                        actor="system",
                        data={
                            "webhookId": job.webhook_id,
                            "reason": "consecutive_failures",
                            "consecutiveFailures": failures,
                        },
                    )
            await tx.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == job.delivery_id).values(**values)
            )
            await tx.execute(update(webhooks).where(webhooks.c.id == job.webhook_id).values(**hook))
            tx.after_commit(lambda: self.deliveries.labels(outcome=outcome).inc())
        if outcome != "delivered":
            log.info(
                "webhook_attempt_failed",
                webhook=job.webhook_id,
                delivery=job.delivery_id,
                outcome=outcome,
                error=attempt.error,
            )
        return outcome
