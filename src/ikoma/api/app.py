"""The ASGI app: built from settings by `create_app`, the one place routes and services meet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import Depends, FastAPI

from ikoma import __version__, bootstrap
from ikoma.api import action_logs as action_log_routes
from ikoma.api import action_types as action_type_routes
from ikoma.api import admin, api_clients, errors, event_stream, health, openapi, runner, worker_enrolment
from ikoma.api import audit as audit_routes
from ikoma.api import auth as auth_routes
from ikoma.api import catalog as catalog_routes
from ikoma.api import events as event_routes
from ikoma.api import instances as instance_routes
from ikoma.api import runners as runner_routes
from ikoma.api import state as state_routes
from ikoma.api import tools as tool_routes
from ikoma.api import users as user_routes
from ikoma.api import webhooks as webhook_routes
from ikoma.api.guard import RequestGuard, known_query_parameters
from ikoma.api.mcp import McpEndpoint
from ikoma.api.policy import PolicyMiddleware
from ikoma.api.request_context import RequestContext
from ikoma.api.runner_lane import RunnerLane
from ikoma.console import routes as console_routes
from ikoma.providers import registry as provider_registry
from ikoma.services import catalog_seed, instance_loops, webhook_delivery
from ikoma.services.admin_keys import ensure_admin_key
from ikoma.services.admin_user import ensure_admin_user
from ikoma.services.broadcast import EVENTS as EVENTS_CHANNEL
from ikoma.services.event_fanout import EventFanout, EventLog
from ikoma.services.events import NEW_EVENTS
from ikoma.services.local_runner import (
    ensure_local_runner,
    ready_line,
    start_local_runner,
    stop_local_runner,
)
from ikoma.settings import Settings
from ikoma.ssh import executor as ssh_executor
from ikoma.storage import migrate
from ikoma.storage.urls import redact

log = structlog.get_logger("ikoma.server")


def create_app(
    settings: Settings,
    *,
    run_migrations: bool = True,
    run_reconciler: bool = True,
    announce: bool = False,
    local_runner: bool = False,
) -> FastAPI:
    ctx = bootstrap.build(settings)
    mcp = McpEndpoint(ctx)  # MCP at /mcp; its session manager runs inside the lifespan
    # the SSE streams' one reader of the event log (started by the first subscriber)
    fanout = EventFanout(
        EventLog(ctx.db),
        registry=ctx.metrics.registry,
        queue_size=settings.sse_queue_size,
        doorbell=NEW_EVENTS,
        signalled=lambda: ctx.broadcast.reliable,
        recheck_interval=settings.sse_heartbeat_seconds,  # a stream's credential, checked again
    )
    # events committed by the other replicas (their flush NOTIFYs `ikoma_events`; None: messages may
    # have been lost) ring this process's readers too
    ctx.broadcast.subscribe(EVENTS_CHANNEL, lambda _payload: NEW_EVENTS.ring())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        if run_migrations:
            # fail-fast: a database that cannot be brought to the head stops start-up
            await migrate.upgrade(url)
        ctx.head_revision = migrate.head_revision()
        setup = await ensure_admin_key(
            ctx.db, settings.admin_key.get_secret_value() if settings.admin_key else None
        )
        ctx.keyring = setup.keyring
        # issue 13: the console's first admin when no user exists (its password file named, never shown)
        admin_user = await ensure_admin_user(ctx.db, settings)
        # issue 16: the catalog rows still missing (Mock, Scaleway, models); re-runnable, replica-safe
        await catalog_seed.apply(ctx.db, configured=ctx.providers.keys())
        app.state.admin_key_announcement = f"{setup.announcement}\n{admin_user.announcement}"
        app.state.admin_password_file = admin_user.password_file
        # wake-ups from the other replicas, then the background loops on the elected replica only
        await ctx.broadcast.start()
        if run_reconciler:
            ctx.leader.run_while_leading("reconciler", ctx.reconciler.run_forever)
            ctx.leader.run_while_leading("webhooks", webhooks.run_forever)
            # issue 16: the Mock provider's simulated machines move and boot their runners here
            for name, loop in provider_registry.background_loops(ctx.providers).items():
                ctx.leader.run_while_leading(name, loop)
            # issue 16: provisioning retries, health, terminator, orphan watchdog (services/instance_loops.py)
            ctx.leader.run_while_leading("instances", instance_loops.from_context(ctx).run_forever)
        await ctx.leader.start()
        runner_process = None
        # issue 14: the runner of every ssh server, in this process (IKOMA_SSH_EXECUTOR=false: elsewhere)
        ssh_task = (
            asyncio.create_task(ssh_executor.from_context(ctx).run_forever(), name="ssh-executor")
            if settings.ssh_executor
            else None
        )
        # a wildcard listen address is reached locally through the loopback
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
        local_url = f"http://{host}:{settings.port}"
        if local_runner:
            config_path = await ensure_local_runner(
                ctx.db,
                data_dir=settings.data_dir,
                api_url=local_url,
                stale_after=settings.stale_after,
            )
            runner_process = await start_local_runner(config_path, settings.data_dir)
        log.info("started", database=redact(url), dialect=ctx.db.dialect, version=__version__)
        if announce:
            base = f"http://{settings.host}:{settings.port}"
            print(
                f"IKOMA {__version__} on {base}  (API {base}/v1, docs {base}/docs, metrics {base}/metrics)\n"
                f"database: {redact(url)}\n{app.state.admin_key_announcement}",
                flush=True,
            )
        ready = (
            asyncio.create_task(
                health.announce_when_ready(local_url, ready_line(local_url, local_runner)), name="ready"
            )
            if announce
            else None
        )
        try:
            async with mcp.run():
                if run_reconciler:
                    ctx.reconciler.begin_grace()  # start-up is over: requests are accepted from here
                yield
        finally:
            if ready is not None:
                ready.cancel()
            if runner_process is not None:
                await stop_local_runner(runner_process)
            await ctx.leader.close()  # the Mock machines' runner processes stop with their loop
            for provider in ctx.providers.values():
                await provider.close()
            await webhooks.close()  # the deliveries in flight (their leases expire; the next leader retries)
            await fanout.close()
            await ssh_executor.stop(ssh_task)
            await ctx.dispatcher.close()
            await ctx.broadcast.close()
            await ctx.db.dispose()

    app = FastAPI(
        title="IKOMA Control Plane",
        version=__version__,
        description="Runners pull orders (runs of named playbooks) from one API. See docs/api.md.",
        lifespan=lifespan,
        default_response_class=errors.FastJSONResponse,
        dependencies=[Depends(known_query_parameters)],
    )
    # webhook deliveries: on the leader (services/leader.py), in their own tasks, so a slow endpoint
    # never delays order dispatch
    webhooks = app.state.webhook_dispatcher = webhook_delivery.WebhookDispatcher(
        ctx.db,
        ctx.vault,
        webhook_delivery.DeliveryPolicy.from_settings(settings),
        registry=ctx.metrics.registry,
        broadcast=ctx.broadcast,
    )
    app.state.ctx = ctx
    app.state.event_fanout = fanout
    # added first, so it runs inside the policy: bodies are read only for an authenticated caller
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(PolicyMiddleware, ctx=lambda: ctx, routes=lambda: app.router.routes)
    # outermost: a request id on every answer, and every exception answered as a regular response
    app.add_middleware(RequestContext)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(runner_routes.router)
    app.include_router(state_routes.router)
    app.include_router(api_clients.router)
    app.include_router(tool_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(audit_routes.router)
    app.include_router(action_log_routes.router)
    app.include_router(event_routes.router)
    app.include_router(event_stream.router)
    # the console before /users/{user_id}: its page /users/manage must be matched first
    app.include_router(console_routes())  # the web console's pages and static files (console/)
    app.include_router(auth_routes.router)
    app.include_router(auth_routes.me_router)
    app.include_router(user_routes.router)
    app.include_router(catalog_routes.router)
    app.include_router(instance_routes.router)
    app.include_router(worker_enrolment.router)
    app.include_router(action_type_routes.router)
    # the runner hot path is matched first, before the admin routes are tried one by one
    app.router.routes[0:0] = runner.routes
    app.router.routes.append(mcp.route)
    openapi.install(app)
    return app


def served(app: FastAPI) -> RunnerLane:
    """What `ikoma serve` listens with: runner calls on their own lane, ahead of the admin middlewares
    (api/runner_lane.py); everything else to `app`. The runner routes stay in `app` too (policy table,
    OpenAPI), where no request under /v1/runner/ reaches them any more."""
    return RunnerLane(app, runner.routes)
