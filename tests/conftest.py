"""Fixtures: `database` runs a test on real SQLite *and* real PostgreSQL; `live_server` is a real process.

Servers: `live_server` is fresh for every test (an empty database; it may be restarted or stopped);
`shared_server` is one server per test module and backend, for tests that create what they use under
unique names and assert nothing about global counts. Every process and database started here is
stopped/dropped on every path, and `pytest_sessionfinish` is the safety net for anything left.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ikoma.storage import migrate
from ikoma.storage.database import Database
from tests import support


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Safety net: kill every process group and drop every database this pytest process (this xdist
    worker, never another) started and did not clean up; a leak must not load the machine further."""
    killed, dropped = support.clean_up()
    if killed or dropped:  # a fixture missed its own clean-up: say so, the net is not the design
        print(f"\nsafety net: killed process groups {killed}, dropped databases {dropped}", file=sys.stderr)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A PostgreSQL database migrated once; each test gets a fresh copy of it."""
    support.require_pg()
    name = support.create_pg_database("ikoma_tmpl")
    try:
        asyncio.run(migrate.upgrade(support.pg_url(name)))
        yield name
    finally:
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
    try:
        yield support.pg_url(name)
    finally:
        support.drop_pg_database(name)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend for a live server (the server migrates it at start)."""
    with support.server_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def live_server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    """A real `ikoma serve` on an empty database of each backend, for this test alone."""
    with support.LiveServer(database_url=server_database_url, data_dir=tmp_path / "data") as server:
        yield server


@pytest.fixture(scope="module", params=support.BACKENDS)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    """One real `ikoma serve` per test module and backend (see support.live_server_per_module).

    A module whose tests all fit can keep using the name `live_server`:
    `@pytest.fixture` / `def live_server(shared_server): return shared_server`.
    Under xdist each worker that runs some of the module's tests starts its own (`--dist loadgroup`
    would keep a module on one worker, but pytest-xdist 3.8 ignores its groups on pytest 9.2:
    pytest-dev/pytest-xdist#1386).
    """
    yield from support.live_server_per_module(request, tmp_path_factory)
