"""The doorbell: one read a second, for all the waiting claims of a process, of who has claimable work.

It rings what no wake-up announces (a retry delay that ends, an order written behind IKOMA's back, a
broadcast lost while the listening connection was down), and its last answer also serves as the first
look of a new long-poll: a runner whose keys were not claimable at the last read, and were not notified
since it began, has nothing to claim, so an idle poll reads nothing. The answer is trusted only when
nothing notified can have slipped past it: no resync since, and (with several processes) the broadcast
listening the whole time; otherwise the poll reads the database itself. What no notification announces
(a retry delay that ends) a trusted answer may miss, and the next tick rings it, exactly as for a claim
already waiting; the answer's age is bounded (`TRUST_SECONDS`) all the same, as a loaded event loop may
delay the ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from ikoma.services import dispatch_sql as sql
from ikoma.services.wakeups import DOORBELL, FALLBACK_POLL_SECONDS, Wakeups
from ikoma.storage.database import Database

if TYPE_CHECKING:
    from ikoma.services.broadcast import Broadcast

log = structlog.get_logger("ikoma.dispatch")

TRUST_SECONDS = 10 * FALLBACK_POLL_SECONDS


@dataclass(frozen=True, slots=True)
class _Reading:
    keys: frozenset[str]
    started_at: float
    epoch: int
    generation: int


class Doorbell:
    def __init__(self, db: Database, wakeups: Wakeups, broadcast: Broadcast | None = None) -> None:
        self.db = db
        self.wakeups = wakeups
        self.broadcast = broadcast
        self._task: asyncio.Task[None] | None = None
        self._last: _Reading | None = None

    def ring_while_waiting(self) -> None:
        """Make sure the doorbell runs (it stops by itself once nobody waits)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="claim-doorbell")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def claimable(self, *keys: str | None) -> bool | None:
        """Whether these keys may have claimable work, from the last read; None when it cannot tell."""
        last = self._last
        if last is None or not self._trusted(last):
            return None
        recent = self.wakeups.recent
        return any(key is not None and (key in last.keys or key in recent) for key in keys)

    def _trusted(self, last: _Reading) -> bool:
        if last.epoch != self.wakeups.epoch:
            return False
        if asyncio.get_running_loop().time() - last.started_at > TRUST_SECONDS:
            return False
        if self.broadcast is None:
            return self.db.is_sqlite  # one process: every order is notified here
        return self.broadcast.reliable and last.generation == self.broadcast.generation

    async def _loop(self) -> None:
        # the first read at once: a doorbell (re)started by a new waiter answers the next polls' looks
        while self.wakeups.waiting:
            await self._read()
            with contextlib.suppress(TimeoutError):
                # a resync (messages may be lost) reads at once
                await asyncio.wait_for(self.wakeups.resynced.wait(), timeout=FALLBACK_POLL_SECONDS)
            self.wakeups.resynced.clear()

    async def _read(self) -> None:
        started_at = asyncio.get_running_loop().time()
        sequence, epoch = self.wakeups.last_sequence, self.wakeups.epoch
        generation = self.broadcast.generation if self.broadcast is not None else 0
        try:
            async with self.db.read() as tx:
                rows = (await tx.execute(sql.CLAIMABLE_KEYS)).all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database outage: the waiters' own deadlines still end them
            self._last = None
            log.warning("claim_doorbell_failed", error=type(exc).__name__)
            return
        keys = frozenset(key for row in rows for key in row if key is not None)
        # notifications sent before the read began are in its answer; later ones stay "recent"
        self.wakeups.forget_recent(sequence)
        self._last = _Reading(keys, started_at, epoch, generation)
        self.wakeups.ring(list(keys), DOORBELL)
