"""The database a read command works on: it must already exist (a read never creates one)."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.engine import make_url

from ikoma.settings import Settings, SettingsError, load_settings
from ikoma.storage.urls import redact

# Exit code of a command that cannot reach its database (the settings' own errors use it too).
EXIT_NO_DATABASE = 2


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names (None for PostgreSQL and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def missing_database(settings: Settings) -> str | None:
    """Why the database cannot be read, when it is a SQLite file that does not exist; else None.

    SQLite creates a missing file on the first connection: a command run from the wrong folder would
    otherwise report on a new, empty database instead of saying where it looked.
    """
    url = settings.resolved_database_url
    path = sqlite_file(url)
    if path is None or path.exists():
        return None
    where = path.resolve()
    if settings.database_url:
        return f"no database at {where} (DATABASE_URL={redact(url)}); a read command does not create one"
    return (
        f"no database at {where}: DATABASE_URL is not set, so IKOMA looks for "
        f"{settings.data_dir / 'ikoma.db'} under the current folder ({Path.cwd()}); run this command "
        "where `ikoma up` runs, or set DATABASE_URL or IKOMA_DATA_DIR"
    )


def settings_for_reading(what: str) -> Settings:
    """The settings, once their database is known to exist; else exit 2 saying `cannot <what>: why`."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(EXIT_NO_DATABASE) from None
    problem = missing_database(settings)
    if problem is not None:
        typer.secho(f"cannot {what}: {problem}", fg="red", err=True)
        raise typer.Exit(EXIT_NO_DATABASE)
    return settings
