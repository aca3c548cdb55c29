"""The `ikoma` command: serve, up, db migrate|check, version, and the admin commands."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from ikoma import __version__
from ikoma.cli import api_clients, database, orders, playbooks, readiness, runners, servers
from ikoma.cli import audit as audit_cli
from ikoma.cli import catalog as catalog_cli
from ikoma.cli import events as events_cli
from ikoma.cli import instances as instances_cli
from ikoma.cli import keys as keys_cli
from ikoma.cli import mcp as mcp_stdio
from ikoma.cli import runner as runner_agent
from ikoma.cli import ssh_executor as ssh_executor_cli
from ikoma.cli import state as state_cli
from ikoma.cli import tools as tools_cli
from ikoma.cli import users as users_cli
from ikoma.cli import webhooks as webhooks_cli
from ikoma.settings import Settings, SettingsError, load_settings

app = typer.Typer(help="IKOMA Control Plane", no_args_is_help=True, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database migrations", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(servers.app, name="servers")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(ssh_executor_cli.app, name="ssh-executor")
app.add_typer(runners.app, name="runners")
app.add_typer(api_clients.app, name="api-clients")
app.add_typer(playbooks.app, name="playbooks")
app.add_typer(orders.app, name="orders")
app.add_typer(runner_agent.app, name="runner")
app.add_typer(state_cli.app, name="state")
app.add_typer(tools_cli.app, name="tools")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(webhooks_cli.app, name="webhooks")
app.add_typer(users_cli.app, name="users")
app.add_typer(instances_cli.app, name="instances")
app.add_typer(catalog_cli.app, name="catalog")
app.command("mcp")(mcp_stdio.mcp)
app.command("wait")(readiness.wait)
app.command("events")(events_cli.events)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


def _serve(settings: Settings, *, local_runner: bool = False) -> None:
    import uvicorn

    from ikoma import logs
    from ikoma.api.app import create_app, served
    from ikoma.storage import migrate
    from ikoma.storage.urls import redact

    logs.configure(settings.log_level)
    url = settings.resolved_database_url
    try:
        # fail-fast, before listening: a database that cannot be reached or migrated stops start-up
        asyncio.run(migrate.upgrade(url))
    except Exception as exc:  # any failure here is reported the same way: what, where, why
        typer.secho(
            f"cannot start: migrating the database at {redact(url)} (DATABASE_URL) failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None
    config = uvicorn.Config(
        # runner calls on their own lane, ahead of the admin middlewares (api/runner_lane.py)
        served(create_app(settings, run_migrations=False, announce=True, local_runner=local_runner)),
        host=settings.host,
        port=settings.port,
        backlog=settings.backlog,
        log_level=settings.log_level,
        access_log=False,  # the runner hot path would log thousands of lines a second
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        # start-up failed (migrations, database, port): uvicorn logged why; make the exit code say so
        raise typer.Exit(1)


@app.command()
def serve() -> None:
    """Run the API and the reconciler with settings from the environment."""
    _serve(_settings())


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="where SQLite and local state live")] = Path("data"),
    port: Annotated[int | None, typer.Option(help="default: PORT or 3000")] = None,
    no_runner: Annotated[bool, typer.Option("--no-runner", help="start no runner for this machine")] = False,
) -> None:
    """API, reconciler and a runner for this machine, SQLite in ./data; prints the admin key and URLs,
    and where the console's first admin password is (data/secrets/default_admin_password)."""
    os.environ.setdefault("IKOMA_DATA_DIR", str(data_dir))
    # one machine, no operator yet: collect facts, metrics, apt and docker state out of the box
    os.environ.setdefault("IKOMA_DEFAULT_SCHEDULES", "true")
    if port is not None:
        os.environ["PORT"] = str(port)
    _serve(_settings(), local_runner=not no_runner)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (the server also does this at start)."""
    from ikoma.storage import migrate

    settings = _settings()
    asyncio.run(migrate.upgrade(settings.resolved_database_url))
    typer.echo(f"database at revision {migrate.head_revision()}")


@db_app.command("check")
def db_check() -> None:
    """Verify the database against the migration files (checksums, both ways) and the models."""
    from ikoma.storage import migrate

    settings = database.settings_for_reading("check the database")
    report = asyncio.run(migrate.check(settings.resolved_database_url))
    if report.ok:
        typer.echo(
            f"ok: database at {report.current}, migration files match the history, models match the schema"
        )
        return
    for problem in report.problems:
        typer.secho(f"problem: {problem}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the IKOMA version."""
    typer.echo(__version__)
