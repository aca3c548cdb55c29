"""The SSH executor: the runner of every `ssh` server, inside the API process (or its own process).

Each ssh server has a runner row of its own (made with the server, `ssh-<name>`); the executor acts as
that runner through the same Dispatcher calls the runner routes use (claim with a lease, start,
heartbeat, logs, complete with the report, ingestion in the completion's transaction), so reconciler,
fencing, timeouts, cancels, retries, state and timeline treat its orders like any runner's.

Bounds: at most `max_connections` orders run (one SSH connection each, opened for the order and closed
after it); a server's claim loop asks for its next order only once its last one holds a slot, so the
executor never claims more than it can start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from ikoma.contracts import parse_report
from ikoma.domain.errors import Conflict, DomainError, Unauthorized
from ikoma.domain.lifecycle import OrderStatus
from ikoma.runner import RUNNER_VERSION
from ikoma.runner import client as runner_client
from ikoma.runner.agent import build_report, order_status
from ikoma.runner.config import DEFAULT_KILL_GRACE, DEFAULT_LEASE_HEARTBEAT
from ikoma.runner.execution import CANCELLED, LOST, UNREPORTED
from ikoma.runner.logs import LogStream, Masker
from ikoma.runner.playbooks import PlaybookResult
from ikoma.services import logs as order_logs
from ikoma.services.dispatch import Dispatcher, RunnerIdentity
from ikoma.services.vault import Vault
from ikoma.services.wakeups import Wakeups
from ikoma.ssh import hostkeys
from ikoma.ssh.connection import ConnectFailed, connect
from ikoma.ssh.playbooks import REGISTRY, capabilities
from ikoma.ssh.remote import RemoteContext
from ikoma.storage.database import Database
from ikoma.storage.tables import runners, servers

log = structlog.get_logger("ikoma.ssh")

CLAIM_WAIT = 10.0
REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class SshServer:
    server_id: str
    runner_id: str


class SshExecutor:
    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        vault: Vault,
        wakeups: Wakeups,
        *,
        max_connections: int,
        connect_timeout: float,
        claim_lease: float,
        log_limit_bytes: int,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.vault = vault
        self.wakeups = wakeups
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.log_limit_bytes = log_limit_bytes
        self.kill_grace = kill_grace
        self.heartbeat_interval = min(DEFAULT_LEASE_HEARTBEAT, claim_lease / 3)
        self.claim_lease = claim_lease
        self._slots = asyncio.Semaphore(max_connections)
        self._loops: dict[SshServer, asyncio.Task[None]] = {}
        self._orders: set[asyncio.Task[None]] = set()
        self.running = 0  # orders holding a connection slot now
        self.peak = 0  # the most at once since start (the concurrency bound, observable in tests)

    async def run_forever(self) -> None:
        """Follow the ssh servers: a claim loop per server, runner presence beats, until cancelled."""
        beat_due = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    current = await self._ssh_servers()
                    self._follow(current)
                    if loop.time() >= beat_due:
                        await self._presence(current)
                        beat_due = loop.time() + self.heartbeat_interval * 2
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a database outage: try again at the next tick
                    log.warning("ssh_executor_refresh_failed", error=type(exc).__name__)
                await asyncio.sleep(REFRESH_SECONDS)
        finally:
            await self.close()

    async def close(self) -> None:
        tasks = [*self._loops.values(), *self._orders]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops.clear()

    async def _ssh_servers(self) -> set[SshServer]:
        async with self.db.read() as tx:
            rows = await tx.execute(
                select(servers.c.id, servers.c.runner_id)
                .select_from(servers.join(runners, runners.c.id == servers.c.runner_id))
                .where(
                    servers.c.connection_mode == "ssh",
                    servers.c.deleted_at.is_(None),
                    runners.c.revoked_at.is_(None),
                )
            )
            return {SshServer(str(r.id), str(r.runner_id)) for r in rows}

    def _follow(self, current: set[SshServer]) -> None:
        for gone in set(self._loops) - current:
            self._loops.pop(gone).cancel()
        for new in current - set(self._loops):
            self._loops[new] = asyncio.create_task(self._claim_loop(new), name=f"ssh-claims-{new.server_id}")
        for server, task in list(self._loops.items()):
            if task.done():  # ended by an error: started again at the next refresh
                del self._loops[server]

    async def _presence(self, current: set[SshServer]) -> None:
        """The ssh runners are alive while the executor is: their heartbeat says so (runner online)."""
        if not current:
            return  # no ssh server: no write transaction for nothing
        caps = capabilities()
        async with self.db.write() as tx:  # one transaction for all: a beat per server is one UPDATE
            for server in current:
                await self.dispatcher.record_heartbeat(
                    RunnerIdentity(server.runner_id, server.server_id),
                    version=f"ssh-executor/{RUNNER_VERSION}",
                    hostname=None,
                    capabilities=caps,
                    tx=tx,
                )

    async def _claim_loop(self, server: SshServer) -> None:
        identity = RunnerIdentity(server.runner_id, server.server_id)
        while True:
            try:
                order = await self.dispatcher.claim_next(identity, wait=CLAIM_WAIT)
            except Unauthorized:
                return  # the ssh runner was revoked: the refresh stops following this server
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ssh_claim_failed", server_id=server.server_id, error=type(exc).__name__)
                await asyncio.sleep(REFRESH_SECONDS)
                continue
            if order is None:
                continue
            # a slot before the next claim: never more orders claimed than connections to run them
            await self._slots.acquire()
            task = asyncio.create_task(self._run_order(identity, order), name=f"ssh-order-{order['id']}")
            self._orders.add(task)
            task.add_done_callback(self._orders.discard)

    async def _run_order(self, identity: RunnerIdentity, order: dict[str, Any]) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self._run(identity, order)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # no traceback: its frames' locals (logged by dict_tracebacks) may hold opened credentials
            log.error("ssh order failed unexpectedly", order_id=str(order["id"]), error=type(exc).__name__)
        finally:
            self.running -= 1
            self._slots.release()

    async def _run(self, identity: RunnerIdentity, order: dict[str, Any]) -> None:
        order_id, lease = str(order["id"]), str(order["lease_token"])
        bound = log.bind(order_id=order_id, playbook=order["playbook_key"], server_id=identity.server_id)
        try:
            await self.dispatcher.start(identity, order_id, lease)
        except DomainError as exc:  # the lease lapsed while waiting for a slot: the order is requeued
            bound.info("ssh order not started", reason=exc.reason)
            return
        params = order.get("params") or {}
        masker = Masker.for_params(params)
        logs = LogStream(lambda chunks: self._send_logs(identity, order_id, lease, chunks), masker)
        timeout = order.get("timeout_s")
        ctx = RemoteContext(
            order_id=order_id,
            params=params,
            logs=logs,
            timeout_seconds=float(timeout) if timeout else None,
            kill_grace=self.kill_grace,
            masker=masker,
        )
        logs.start()
        beats = asyncio.create_task(self._lease_heartbeats(identity, ctx, lease))
        try:
            result = await self._execute(identity, order, ctx, masker)
        finally:
            beats.cancel()
            if ctx.connection is not None:
                ctx.connection.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ctx.connection.wait_closed(), timeout=5)
        if ctx.stop_reason in UNREPORTED:
            await logs.close(attempts=1)
            bound.warning("ssh order abandoned without a report", reason=ctx.stop_reason)
            return
        status = order_status(result, ctx)
        logs.system(f"[ssh] order {status}: {result.summary}")
        report = build_report(result, ctx.elapsed_ms(), masker)
        await logs.close()
        parsed = parse_report(report)
        try:
            await self.dispatcher.complete(
                identity,
                order_id,
                outcome=OrderStatus(status),
                report=report,
                report_version=parsed.version,
                report_summary=parsed.summary,
                lease_token=lease,
            )
        except DomainError as exc:
            bound.warning("ssh order completion refused", reason=exc.reason)
            return
        bound.info("ssh order finished", status=status, duration_ms=report["durationMs"])

    async def _execute(
        self, identity: RunnerIdentity, order: dict[str, Any], ctx: RemoteContext, masker: Masker
    ) -> PlaybookResult:
        key = str(order["playbook_key"])
        playbook = REGISTRY.get(key)
        if playbook is None:
            message = f"playbook {key!r} is not available over SSH"
            return PlaybookResult(summary=message, errors=[{"message": message, "code": "unknown_playbook"}])
        assert identity.server_id is not None
        try:
            target, settings = await hostkeys.target_of(self.db, self.vault, identity.server_id)
        except DomainError as exc:  # credentials_undecryptable, or the server stopped being an ssh one
            return PlaybookResult(summary=exc.message, errors=[{"message": exc.message, "code": exc.reason}])
        for secret in target.credentials.secrets():
            masker.add(secret)
        ctx._log_system(f"[ssh] connecting to {target.username}@{target.hostname}:{target.port}")
        try:
            ctx.connection, seen = await connect(target, connect_timeout=self.connect_timeout)
        except ConnectFailed as exc:
            ctx._log_system(f"[ssh] {exc.message}")
            if exc.reason == "host_key_changed":
                await hostkeys.note_refused(self.db, identity.server_id, exc.message)
            return PlaybookResult(
                summary=f"{exc.reason}: {exc.message}", errors=[{"message": exc.message, "code": exc.reason}]
            )
        if target.pinned_host_key is None:
            await hostkeys.pin(self.db, identity.server_id, seen, actor=identity.actor)
        ctx.sudo_password = target.credentials.sudo_password
        ctx.remote_root = target.username == "root"
        ctx.apt_proxy_url = (
            settings.get("apt_proxy_url") if settings.get("apt_proxy_mode") == "proxy" else None
        )
        try:
            return await playbook(ctx, ctx.params)
        except Exception as exc:  # a playbook bug must become a FAILED report, not a lost order
            log.error("ssh playbook raised", order_id=ctx.order_id, error=type(exc).__name__)
            message = f"executor error: {type(exc).__name__}: {exc}"
            return PlaybookResult(summary=message, errors=[{"message": message, "code": "runner_error"}])

    async def _send_logs(
        self, identity: RunnerIdentity, order_id: str, lease: str, chunks: list[dict[str, Any]]
    ) -> None:
        try:
            async with self.db.write() as tx:
                await self.dispatcher.check_logs_allowed(identity, order_id, lease, tx=tx)
                await order_logs.append_chunks(
                    tx,
                    self.wakeups,
                    order_id=order_id,
                    chunks=[order_logs.Chunk(c["seq"], c["stream"], c["data"]) for c in chunks],
                    limit_bytes=self.log_limit_bytes,
                )
        except Conflict as exc:  # the order is not ours any more: LogStream stops streaming
            raise runner_client.Conflict(409, exc.reason, exc.message) from None

    async def _lease_heartbeats(self, identity: RunnerIdentity, ctx: RemoteContext, lease: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                answer = await self.dispatcher.heartbeat(identity, ctx.order_id, lease)
            except Conflict as exc:
                log.warning("ssh order lease lost, stopping it", order_id=ctx.order_id, reason=exc.reason)
                ctx.request_stop(LOST)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the lease is three beats long: one missed beat loses nothing
                log.warning("ssh order heartbeat failed", order_id=ctx.order_id, error=type(exc).__name__)
                continue
            if answer.get("cancelRequested") and not ctx.stopped:
                ctx._log_system("[ssh] cancel requested")
                ctx.request_stop(CANCELLED)


def from_context(ctx: Any) -> SshExecutor:
    """The executor wired from the composition root's context (`bootstrap.Context`)."""
    settings = ctx.settings
    return SshExecutor(
        ctx.db,
        ctx.dispatcher,
        ctx.vault,
        ctx.wakeups,
        max_connections=settings.ssh_max_connections,
        connect_timeout=settings.ssh_connect_timeout,
        claim_lease=settings.claim_lease,
        log_limit_bytes=settings.log_limit_bytes,
    )


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
