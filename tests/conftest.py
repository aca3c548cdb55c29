"""Fixtures: `database` runs a test on real SQLite *and* real PostgreSQL; `live_server` is a real process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ikoma.storage import migrate
from ikoma.storage.database import Database
from tests import support


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated once; each test gets a fresh copy of it."""
    support.require_pg()
    name = support.create_pg_database("ikoma_tmpl")
    asyncio.run(migrate.upgrade(support.pg_url(name)))
    yield name
    support.drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(migrate.upgrade(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of each backend, fresh for every test."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "ikoma.db"
        target.write_bytes(template.read_bytes())
        yield f"sqlite:///{target}"
        return
    name = support.create_pg_database(template=request.getfixturevalue("pg_template"))
    yield support.pg_url(name)
    support.drop_pg_database(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend for a live server (the server migrates it at start)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.db'}"
        return
    support.require_pg()
    name = support.create_pg_database("ikoma_e2e")
    yield support.pg_url(name)
    support.drop_pg_database(name)


@pytest.fixture
def live_server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    server = support.LiveServer(database_url=server_database_url, data_dir=tmp_path / "data")
    server.start()
    yield server
    server.stop()
