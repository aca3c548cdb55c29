"""Leader election: the background loops (reconciler with schedules and retention, webhook dispatch) run
in one process of a deployment at a time, and move to another when that one dies.

On PostgreSQL the leader is the process whose dedicated connection (asyncpg, outside the pool) holds the
session advisory lock `LEADER_LOCK_KEY`. The others try to take it every `interval`; the leader checks
its connection as often. A leader that dies (SIGKILL, host lost) closes its session, PostgreSQL frees
the lock, and another process takes it within one interval; a leader that loses its connection stops
its loops at once (it can no longer be sure it leads). On SQLite there is one process: it leads.

    leader = Leader(db, interval=5.0)
    leader.run_while_leading("webhooks", dispatcher.run_forever)  # started on election, cancelled on loss
    await leader.start() ... await leader.close()
    leader.is_leader                                              # this process leads right now

The loops must still guard their own writes (the reconciler's tick takes a transaction-scoped advisory
lock too): between a lost connection and its detection two processes may both believe they lead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from ikoma.storage.database import Database
from ikoma.storage.urls import driver_url

if TYPE_CHECKING:
    from ikoma.metrics import Metrics

log = structlog.get_logger("ikoma.leader")

# arbitrary, fixed, and not the reconciler's per-tick key: session and transaction advisory locks share
# one key space, so the same key would keep the leader's own ticks out
LEADER_LOCK_KEY = 0x1C0A_0002
CHECK_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "ikoma-leader"  # in pg_stat_activity

LoopFactory = Callable[[], Coroutine[Any, Any, Any]]


class Leader:
    def __init__(self, db: Database, *, interval: float, metrics: Metrics | None = None) -> None:
        self.db = db
        self.interval = interval
        self.metrics = metrics
        self._loops: dict[str, LoopFactory] = {}
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None  # asyncpg.Connection (untyped)
        self._elected = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._elected.is_set()

    def run_while_leading(self, name: str, loop: LoopFactory) -> None:
        """Run `loop()` while this process leads: started when elected, cancelled when leadership is
        lost (and started again on the next election). Register before `start` or at any time."""
        self._loops[name] = loop
        if self.is_leader and name not in self._running:
            self._running[name] = asyncio.create_task(loop(), name=name)

    async def wait_elected(self) -> None:
        await self._elected.wait()

    async def start(self) -> None:
        if self._task is not None:
            return
        if self.db.is_sqlite:
            self._become_leader()
            return
        self._task = asyncio.create_task(self._campaign(), name="leader-election")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._step_down()
        await self._drop_connection()

    def _become_leader(self) -> None:
        self._elected.set()
        if self.metrics is not None:
            self.metrics.leader.set(1)
        log.info("leader_elected", loops=sorted(self._loops))
        for name, loop in self._loops.items():
            if name not in self._running:
                self._running[name] = asyncio.create_task(loop(), name=name)

    async def _step_down(self) -> None:
        was_leader = self.is_leader
        self._elected.clear()
        if self.metrics is not None:
            self.metrics.leader.set(0)
        running, self._running = self._running, {}
        for task in running.values():
            task.cancel()
        for task in running.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if was_leader:
            log.info("leader_stepped_down")

    async def _campaign(self) -> None:
        """PostgreSQL: try for the lock every interval; once held, check the connection as often."""
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._connect()
                if self.is_leader:
                    await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=CHECK_TIMEOUT_SECONDS)
                else:
                    got = await asyncio.wait_for(
                        self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY),
                        timeout=CHECK_TIMEOUT_SECONDS,
                    )
                    if got:
                        self._become_leader()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: the lock may be someone else's by now
                log.warning("leader_connection_lost", error=type(exc).__name__, detail=str(exc)[:200])
                await self._step_down()
                await self._drop_connection()
            await asyncio.sleep(self.interval)

    async def _connect(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        dsn = driver_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conn = await asyncpg.connect(
            dsn, timeout=10, server_settings={"application_name": APPLICATION_NAME}
        )
        # a lost session (the connection closed under us) must stop the loops now, not at the next check
        self._conn.add_termination_listener(lambda _conn: self._lost())

    def _lost(self) -> None:
        if self.is_leader:
            self._elected.clear()
            if self.metrics is not None:
                self.metrics.leader.set(0)
            for task in self._running.values():
                task.cancel()
            self._running = {}
            log.warning("leader_connection_lost", error="terminated")

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
            if not conn.is_closed():
                conn.terminate()
