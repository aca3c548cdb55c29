"""`ikoma state rebuild`: recompute machine state from the snapshots, directly on the database.

Like `ikoma db migrate`, it uses DATABASE_URL (or the data dir's SQLite file) and needs no running
server; `POST /v1/state/rebuild` does the same through the API.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ikoma.cli.database import settings_for_reading

app = typer.Typer(help="Machine state: the cache derived from snapshots.", no_args_is_help=True)


@app.command("rebuild")
def rebuild(
    server_id: Annotated[
        str | None, typer.Option("--server", help="Only this server id (default: every server).")
    ] = None,
) -> None:
    """Recompute machine state and hardware from each server's snapshots, in order."""
    from ikoma.domain.errors import DomainError
    from ikoma.services.state import rebuild_states
    from ikoma.storage.database import Database

    settings = settings_for_reading("rebuild the machine state")

    async def run() -> int:
        db = Database(settings.resolved_database_url)
        try:
            return await rebuild_states(db, server_id)
        finally:
            await db.dispose()

    try:
        count = asyncio.run(run())
    except DomainError as exc:
        typer.secho(f"error: {exc.reason}: {exc.message}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"rebuilt the state of {count} server(s) from their snapshots")
