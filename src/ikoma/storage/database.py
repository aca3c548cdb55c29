"""The database handle: short transactions on SQLite or PostgreSQL behind one async interface.

PostgreSQL runs on SQLAlchemy's async engine (asyncpg) with a connection pool. SQLite is different on
purpose: it is an in-process library whose statements take microseconds, so IKOMA drives one pysqlite
connection inline on the event loop, one transaction at a time under an asyncio lock. That avoids the
thread hop per statement of aiosqlite (measured in docs/performance.md) and makes writers queue in
process instead of spinning on SQLite's busy lock. Writes open with BEGIN IMMEDIATE so a transaction
that reads then writes can never be refused half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Executable

from ikoma.storage.prepared import Prepared
from ikoma.storage.urls import Dialect, dialect_of, driver_url

SQLITE_BUSY_TIMEOUT_MS = 5000


class Tx:
    """One open transaction; `execute` returns a buffered result on both backends."""

    def __init__(self, conn: Connection | AsyncConnection, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect
        self._adapter: Any = None  # PostgreSQL: SQLAlchemy's asyncpg adapter, once a prepared statement ran
        self._after_commit: list[Callable[[], None]] = []
        self._before_commit: list[Callable[[Tx], Awaitable[None]]] | None = None

    def before_commit(self, action: Callable[[Tx], Awaitable[None]]) -> None:
        """Run `action(tx)` inside the transaction just before it commits (the event outbox's flush)."""
        if self._before_commit is None:
            self._before_commit = []
        self._before_commit.append(action)

    async def _committing(self) -> None:
        for action in self._before_commit or ():
            await action(self)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the transaction has committed (metrics, wake-ups): never for a rollback."""
        self._after_commit.append(action)

    def _committed(self) -> None:
        for action in self._after_commit:
            action()

    async def execute(
        self,
        statement: Executable | Prepared,
        params: Mapping[str, Any] | list[dict[str, Any]] | None = None,
    ) -> Result[Any]:
        if isinstance(statement, Prepared):
            # on the driver: the sqlite3 cursor, or asyncpg under SQLAlchemy's adapter (storage/prepared.py)
            if isinstance(self._conn, AsyncConnection):
                if self._adapter is None:
                    self._adapter = (await self._conn.get_raw_connection()).dbapi_connection
                ran = await statement.run_asyncpg(self._adapter, self._conn.dialect, params)
            else:
                dbapi = self._conn.connection.driver_connection
                ran = statement.run_sqlite(dbapi, self._conn.dialect, params)  # type: ignore[arg-type]
            if ran is not None:
                return ran
            statement = statement.statement
        if isinstance(self._conn, AsyncConnection):
            return await self._conn.execute(statement, params)
        return self._conn.execute(statement, params)


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.dialect: Dialect = dialect_of(url)
        self._sync_engine: Engine | None = None
        self._sync_conn: Connection | None = None
        self._async_engine: AsyncEngine | None = None
        self._lock = asyncio.Lock()
        if self.dialect == "sqlite":
            self._sync_engine = create_sqlite_engine(url)
        else:
            self._async_engine = create_async_engine(
                driver_url(url),
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                pool_size=pool_size,
                max_overflow=pool_size,
                # no pre-ping: it costs a round trip per checkout; a dead connection is invalidated on error
                # (503 to that caller) and the pool reconnects on the next checkout
                pool_recycle=1800,
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _sqlite_conn(self) -> Connection:
        assert self._sync_engine is not None
        if self._sync_conn is None or self._sync_conn.closed:
            self._sync_conn = self._sync_engine.connect()
        return self._sync_conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A read-write transaction, committed on success and rolled back on any exception."""
        if self._async_engine is not None:
            async with self._async_engine.begin() as conn:
                tx = Tx(conn, self.dialect)
                yield tx
                if tx._before_commit:
                    await tx._committing()
            tx._committed()
            return
        async with self._lock:
            sqlite = self._sqlite_conn()
            sqlite.exec_driver_sql("BEGIN IMMEDIATE")
            tx = Tx(sqlite, self.dialect)
            try:
                yield tx
                if tx._before_commit:
                    await tx._committing()
            except BaseException:
                sqlite.rollback()
                raise
            sqlite.commit()
        tx._committed()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        """A read-only snapshot."""
        if self._async_engine is not None:
            async with self._async_engine.connect() as conn:
                yield Tx(conn, self.dialect)
                await conn.rollback()
            return
        async with self._lock:
            sqlite = self._sqlite_conn()
            sqlite.exec_driver_sql("BEGIN")
            try:
                yield Tx(sqlite, self.dialect)
            finally:
                sqlite.rollback()

    async def dispose(self) -> None:
        if self._sync_conn is not None:
            self._sync_conn.close()
            self._sync_conn = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_sqlite_engine(url: str) -> Engine:
    """A pysqlite engine with WAL, foreign keys and a busy timeout, transactions under our control."""
    target = driver_url(url)
    if target.database and target.database != ":memory:":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        driver_url(url),
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        # one connection, used only from the event loop thread (see module docstring)
        poolclass=StaticPool,
        connect_args={"check_same_thread": False, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crash; WAL's usual pairing
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    return engine
