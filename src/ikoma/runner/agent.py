"""The agent loop: heartbeat, long-poll claims, run orders in parallel, report, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from ikoma.runner import RUNNER_VERSION, containment
from ikoma.runner.client import (
    ApiUnreachable,
    Conflict,
    RunnerApiError,
    RunnerClient,
    ServerError,
    Unauthorized,
)
from ikoma.runner.config import AgentSettings, Credentials
from ikoma.runner.declarative import declarative_playbook
from ikoma.runner.execution import ABORTED, CANCELLED, LOST, TIMEOUT, UNREPORTED, ExecutionContext
from ikoma.runner.logs import LogStream, Masker
from ikoma.runner.playbooks import REGISTRY, Playbook, PlaybookResult, capabilities
from ikoma.runner.spool import Completion, Spool

log = structlog.get_logger("ikoma.runner")

T = TypeVar("T")
# Answers that will never change by retrying the same call: the order is settled elsewhere.
FINAL_CONFLICTS = ("stale_lease", "invalid_status", "order_not_found", "wrong_runner")


def backoff_delay(attempt: int, cap: float = 30.0, base: float = 1.0) -> float:
    """Exponential with 'equal jitter': runners that failed together do not come back together."""
    ceiling = min(cap, base * (2 ** min(attempt, 16)))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - pacing, not cryptography


def order_status(result: PlaybookResult, ctx: ExecutionContext) -> str:
    if ctx.stop_reason in (CANCELLED, TIMEOUT):
        return ctx.stop_reason
    statuses = {step.status for step in result.steps}
    if TIMEOUT in statuses:
        return TIMEOUT
    if result.errors or statuses - {"SUCCEEDED", "SKIPPED"}:
        return "FAILED"
    return "SUCCEEDED"


def build_report(result: PlaybookResult, duration_ms: int, masker: Masker) -> dict[str, Any]:
    """Contract v2; the summary and errors are masked like the logs (step outputs already are)."""
    return {
        "version": "v2",
        "summary": masker(result.summary),
        "durationMs": max(0, duration_ms),
        "steps": [step.to_report() for step in result.steps],
        "errors": [{k: masker(v) for k, v in error.items()} for error in result.errors],
    }


class Agent:
    def __init__(
        self,
        credentials: Credentials,
        settings: AgentSettings,
        *,
        client: RunnerClient | None = None,
        registry: dict[str, Playbook] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or RunnerClient(credentials)
        self.registry = REGISTRY if registry is None else registry
        self.spool = Spool(settings.state_dir)
        self.hostname = socket.gethostname()
        self._draining = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self._contexts: set[ExecutionContext] = set()
        self._delivering: set[str] = set()
        self.containment: containment.Containment | None = None

    # ---- signals -------------------------------------------------------------------------------
    def request_drain(self) -> None:
        """First SIGTERM: finish what runs, claim nothing new. Second: kill everything now."""
        if not self._draining.is_set():
            log.info("draining: finishing running orders, claiming no new ones", running=len(self._contexts))
            self._draining.set()
            return
        log.warning("second stop signal: killing running orders", running=len(self._contexts))
        self._hard_stop.set()
        for ctx in list(self._contexts):
            ctx.request_stop(ABORTED)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_drain)

    # ---- main ----------------------------------------------------------------------------------
    async def run(self) -> int:
        self._install_signals()
        # before any claim: what a killed runner of this state dir left must not run beside a retry
        killed = containment.sweep_leftovers(self.settings.state_dir)
        if killed:
            log.warning("killed processes left running by a previous runner's steps", count=killed)
        try:
            self.containment = containment.Containment.create(
                self.settings.containment, self.settings.state_dir
            )
        except containment.ContainmentUnavailable as exc:
            log.error("runner cannot contain its steps", error=str(exc))
            await self.client.aclose()
            return 2
        log.info(
            "runner starting",
            version=RUNNER_VERSION,
            parallel=self.settings.parallel,
            capabilities=capabilities(),
            state_dir=str(self.settings.state_dir),
            containment=self.containment.mode,
        )
        await self.deliver_spooled()  # completions left by a previous run go first
        background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._spool_loop(), name="spool"),
        ]
        workers = [
            asyncio.create_task(self._worker(i), name=f"worker-{i}") for i in range(self.settings.parallel)
        ]
        hard = asyncio.create_task(self._hard_stop.wait())
        try:
            await asyncio.wait([*workers, hard], return_when=asyncio.FIRST_COMPLETED)
            while not hard.done() and not all(w.done() for w in workers):
                await asyncio.wait([*workers, hard], return_when=asyncio.FIRST_COMPLETED)
            if hard.done():
                # contexts were told to SIGKILL their groups; give them a moment, then cut the rest
                _, pending = await asyncio.wait(workers, timeout=5.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                log.warning("runner stopped immediately")
                return 1
            for task in workers:
                if task.exception() is not None:
                    log.error("worker crashed", error=repr(task.exception()))
            await self.deliver_spooled()  # one last try; what remains waits for the next start
            log.info("runner drained, exiting")
            return 0
        finally:
            hard.cancel()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, hard, return_exceptions=True)
            await self.client.aclose()

    async def _sleep_unless_draining(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._draining.wait(), timeout=seconds)

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            try:
                await self.client.heartbeat(
                    version=RUNNER_VERSION, hostname=self.hostname, capabilities=sorted(self.registry)
                )
                if failing:
                    log.info("runner heartbeat delivered again")
                failing = False
            except (ApiUnreachable, RunnerApiError) as exc:
                if not failing or isinstance(exc, Unauthorized):
                    log.warning("runner heartbeat failed", error=str(exc))
                failing = True
            await asyncio.sleep(self.settings.heartbeat_interval)

    # ---- claiming ------------------------------------------------------------------------------
    async def _worker(self, index: int) -> None:
        failures = 0
        while not self._draining.is_set():
            try:
                order = await self._claim()
            except (ApiUnreachable, RunnerApiError) as exc:
                delay = backoff_delay(failures, self.settings.backoff_cap)
                failures += 1
                log.warning("claim failed, backing off", worker=index, error=str(exc), delay=round(delay, 2))
                await self._sleep_unless_draining(delay)
                continue
            failures = 0
            if order is None:
                continue
            try:
                await self._run_order(order)
            except Exception:  # a bug in one order must not stop the runner serving the next ones
                log.exception("order handling crashed", worker=index, order_id=order.get("id"))

    async def _claim(self) -> dict[str, Any] | None:
        """Long-poll; a drain abandons the poll (an order claimed at that instant is still run)."""
        claim = asyncio.create_task(self.client.claim_next(self.settings.claim_wait))
        drain = asyncio.create_task(self._draining.wait())
        try:
            await asyncio.wait([claim, drain], return_when=asyncio.FIRST_COMPLETED)
        finally:
            drain.cancel()
        if not claim.done():
            claim.cancel()
            with contextlib.suppress(asyncio.CancelledError, ApiUnreachable, RunnerApiError):
                await claim
            return None
        return claim.result()

    # ---- one order -----------------------------------------------------------------------------
    async def _retry(self, call: Callable[[], Awaitable[T]], attempts: int = 4) -> T:
        """Retry transport and 5xx failures a few times; 4xx answers are final and raised at once."""
        for attempt in range(attempts):
            try:
                return await call()
            except (ApiUnreachable, ServerError):
                if attempt + 1 == attempts:
                    raise
                await asyncio.sleep(backoff_delay(attempt, cap=5.0, base=0.5))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_order(self, order: dict[str, Any]) -> None:
        order_id = str(order["id"])
        lease = str(order["leaseToken"])
        key = str(order.get("playbookKey", ""))
        params = order.get("params") or {}
        bound = log.bind(order_id=order_id, playbook=key)
        try:
            await self._retry(lambda: self.client.start(order_id, lease))
        except Conflict as exc:
            bound.warning("order could not be started, skipping it", reason=exc.reason)
            return
        except (ApiUnreachable, RunnerApiError) as exc:
            # the claim's lease will lapse and the API requeues it: nothing to report
            bound.warning("order could not be started, leaving it to the lease", error=str(exc))
            return
        masker = Masker.for_params(params)
        logs = LogStream(lambda chunks: self.client.send_logs(order_id, lease, chunks), masker)
        timeout = order.get("timeoutSeconds")
        ctx = ExecutionContext(
            order_id=order_id,
            params=params,
            logs=logs,
            timeout_seconds=float(timeout) if timeout else None,
            kill_grace=self.settings.kill_grace,
            masker=masker,
            containment=self.containment or containment.default(),
            apt_proxy_url=order.get("aptProxyUrl"),  # only in an apt order's claim, in proxy mode
        )
        if self._hard_stop.is_set():
            ctx.request_stop(ABORTED)
        self._contexts.add(ctx)
        logs.start()
        beats = asyncio.create_task(self._lease_heartbeats(ctx, lease))
        bound.info("order started", attempt=order.get("attempt"))
        try:
            playbook = self.registry.get(key)
            if playbook is None and order.get("steps"):
                playbook = declarative_playbook(order["steps"])  # the order carries its steps
            if playbook is None:
                message = f"this runner has no playbook {key!r}"
                result = PlaybookResult(
                    summary=message, errors=[{"message": message, "code": "unknown_playbook"}]
                )
            else:
                try:
                    result = await playbook(ctx, params)
                except Exception as exc:  # a playbook bug must become a FAILED report, not a lost order
                    bound.exception("playbook raised")
                    message = f"runner error: {type(exc).__name__}: {exc}"
                    result = PlaybookResult(
                        summary=message, errors=[{"message": message, "code": "runner_error"}]
                    )
        finally:
            beats.cancel()
            self._contexts.discard(ctx)
        if ctx.stop_reason in UNREPORTED:
            await logs.close(attempts=1)
            bound.warning("order abandoned without a report", reason=ctx.stop_reason)
            return
        status = order_status(result, ctx)
        logs.system(f"[runner] order {status}: {result.summary}")
        report = build_report(result, ctx.elapsed_ms(), masker)
        completion = Completion(order_id=order_id, lease_token=lease, status=status, report=report)
        # On disk before anything that may wait on the API (flushing logs retries for seconds when it
        # is down): a crash from here on loses no result. The spool loop leaves it alone meanwhile,
        # because the API reads the logs as complete once the order ends.
        self.spool.write(completion)
        self._delivering.add(order_id)
        try:
            await logs.close()
        finally:
            self._delivering.discard(order_id)
        await self._deliver_spooled_one(completion)
        bound.info("order finished", status=status, duration_ms=report["durationMs"])

    async def _lease_heartbeats(self, ctx: ExecutionContext, lease: str) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_heartbeat_interval)
            try:
                answer = await self.client.order_heartbeat(ctx.order_id, lease)
            except Conflict as exc:
                log.warning("order lease lost, stopping it", order_id=ctx.order_id, reason=exc.reason)
                ctx.request_stop(LOST)
                return
            except (ApiUnreachable, RunnerApiError) as exc:
                # the lease is three intervals long: a missed beat is not yet a lost order
                log.warning("order heartbeat failed", order_id=ctx.order_id, error=str(exc))
                continue
            if answer.get("cancelRequested") and not ctx.stopped:
                log.info("cancel requested, stopping the order", order_id=ctx.order_id)
                if ctx.logs is not None:
                    ctx.logs.system("[runner] cancel requested")
                ctx.request_stop(CANCELLED)

    # ---- completions ---------------------------------------------------------------------------
    async def deliver(self, completion: Completion) -> bool:
        """Spool first, then send: a crash or an outage at any instant leaves the file to retry."""
        self.spool.write(completion)
        return await self._deliver_spooled_one(completion)

    async def _deliver_spooled_one(self, completion: Completion) -> bool:
        if completion.order_id in self._delivering:
            return False
        self._delivering.add(completion.order_id)
        try:
            await self.client.complete(
                completion.order_id, completion.lease_token, completion.status, completion.report
            )
        except Conflict as exc:
            log.warning(
                "completion refused, dropping it",
                order_id=completion.order_id,
                reason=exc.reason,
                message=exc.message,
            )
            self.spool.delete(completion.order_id)
            return True
        except Unauthorized as exc:
            log.error("completion refused: runner credentials rejected; kept in the spool", error=str(exc))
            return False
        except (ApiUnreachable, ServerError) as exc:
            log.warning(
                "completion not delivered; kept in the spool", order_id=completion.order_id, error=str(exc)
            )
            return False
        except RunnerApiError as exc:
            # 4xx other than the above (a report the API finds invalid): retrying cannot help
            log.error("completion rejected, set aside", order_id=completion.order_id, error=str(exc))
            self.spool.reject(completion.order_id)
            return True
        finally:
            self._delivering.discard(completion.order_id)
        self.spool.delete(completion.order_id)
        return True

    async def deliver_spooled(self) -> None:
        for completion in self.spool.pending():
            await self._deliver_spooled_one(completion)

    async def _spool_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.spool_retry_interval)
            await self.deliver_spooled()
