"""DATABASE_URL as users write it (seed style `postgresql://…`) → the driver IKOMA uses."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.engine import URL, make_url

Dialect = Literal["sqlite", "postgresql"]


def dialect_of(url: str) -> Dialect:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def driver_url(url: str) -> URL:
    """`sqlite:///f` → pysqlite (driven inline, see database.py); `postgres(ql)://` → asyncpg."""
    parsed = make_url(
        url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
    )
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return parsed.set(drivername="postgresql+asyncpg")


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)
