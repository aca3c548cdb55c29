"""SQLite group commit: the writes of one event-loop turn share one transaction and one commit.

Every runner call is a short write transaction; on SQLite its BEGIN IMMEDIATE and COMMIT (the WAL
write) cost more than its statements (docs/performance.md, issue 11). Writes still run one at a time
under the database lock, but a write no longer commits alone: it runs in the open group's transaction
(the first one begins it; each later one inside a SAVEPOINT, so its failure undoes its own work only),
and the group commits once on the next turn of the event loop, when the lock is free. A writer returns
only after that commit, so nobody is answered before their change is durable; if the commit fails, every
writer of the group gets the error, as each would have got its own failed commit. After-commit actions
run once the group committed, never for a write that rolled back.

A read first commits the open group: a reader never sees work that is not committed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from ikoma.storage.database import Tx

log = structlog.get_logger("ikoma.storage")

_SAVEPOINT = "ikoma_write"


def _raw(conn: Connection) -> Any:
    """The sqlite3 connection: savepoints need no SQLAlchemy bookkeeping (its transaction stays one)."""
    return conn.connection.driver_connection


@dataclass(slots=True)
class _Group:
    committed: asyncio.Future[None]
    members: list[Tx] = field(default_factory=list)


class GroupCommit:
    """The write side of the one SQLite connection (see module docstring)."""

    def __init__(self, lock: asyncio.Lock, connection: Callable[[], Connection]) -> None:
        self._lock = lock
        self._connection = connection
        self._open: _Group | None = None
        self._scheduled = False

    @asynccontextmanager
    async def write(self, make_tx: Callable[[Connection], Tx]) -> AsyncIterator[Tx]:
        async with self._lock:
            conn = self._connection()
            group = self._open
            first = group is None
            if group is None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                group = self._open = _Group(asyncio.get_running_loop().create_future())
            else:
                _raw(conn).execute(f"SAVEPOINT {_SAVEPOINT}")
            tx = make_tx(conn)
            try:
                yield tx
                if tx._before_commit:
                    await tx._committing()
                if not first:
                    _raw(conn).execute(f"RELEASE {_SAVEPOINT}")
            except BaseException as error:
                self._undo(conn, group, first, error)
                raise
            group.members.append(tx)
            self._schedule()
        # answered only once committed; shielded: a caller that goes away does not cancel the group
        await asyncio.shield(group.committed)

    def flush(self) -> None:
        """Commit the open group now (the caller holds the lock: a read about to begin, or shutdown)."""
        if self._open is not None:
            self._commit()

    def _undo(self, conn: Connection, group: _Group, first: bool, error: BaseException) -> None:
        """Roll back the failed write: its savepoint, or the whole transaction when it was alone."""
        if not first:
            try:
                _raw(conn).execute(f"ROLLBACK TO {_SAVEPOINT}")
                _raw(conn).execute(f"RELEASE {_SAVEPOINT}")
                self._schedule()  # the others of the group still commit
                return
            except Exception:  # SQLite already rolled the whole transaction back (disk full, I/O error)
                log.warning("group_rolled_back", members=len(group.members), error=type(error).__name__)
        self._open = None
        with contextlib.suppress(Exception):
            conn.rollback()
        if not group.committed.done():
            if group.members:  # the earlier writes of the group are lost with it: they fail too
                lost = RuntimeError("the write group rolled back")
                failed = error if isinstance(error, Exception) else lost
                group.committed.set_exception(failed)
            else:
                group.committed.cancel()  # nobody waits on it

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_when_free)

    def _commit_when_free(self) -> None:
        self._scheduled = False
        # a writer holding the lock schedules again when it is done; a reader commits before it reads
        if self._open is not None and not self._lock.locked():
            self._commit()

    def _commit(self) -> None:
        group, self._open = self._open, None
        if group is None:
            return
        conn = self._connection()
        try:
            conn.commit()
        except BaseException as error:
            with contextlib.suppress(Exception):
                conn.rollback()
            group.committed.set_exception(error)
            return
        for tx in group.members:
            try:
                tx._committed()
            except Exception:  # one member's metrics or wake-up must not cost the others theirs
                log.exception("after_commit_failed")
        group.committed.set_result(None)
