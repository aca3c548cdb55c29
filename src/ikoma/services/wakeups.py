"""Wake-ups for long-polling claims: a new order wakes only the runners it is eligible for.

Each waiting claim registers under its runner id and its server id; creating or requeueing an order
notifies the order's runner and server. With a `Broadcast` (services/broadcast.py) the keys also reach
the other API processes on the same PostgreSQL (channel `ikoma_claims`), so a runner long-polling
replica A is woken at once by an order created on replica B. What no notification covers (retry delays
that end, a message lost while the listening connection was down) is found by the dispatcher's
doorbell: one read every `FALLBACK_POLL_SECONDS` for all the waiters of the process, which rings the
keys that have work, so an idle runner costs no query of its own. A resync of the broadcast rings the
doorbell at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ikoma.services.broadcast import CLAIMS

if TYPE_CHECKING:
    from ikoma.services.broadcast import Broadcast

FALLBACK_POLL_SECONDS = 1.0
LOCAL, BROADCAST, DOORBELL = "local", "broadcast", "doorbell"
MAX_RECENT = 50_000


class Waiter(asyncio.Event):
    """An event that remembers who set it first (metrics: was a claim woken by a notification?)."""

    source: str | None = None

    def ring(self, source: str) -> None:
        if not self.is_set():
            self.source = source
            self.set()

    def clear(self) -> None:
        self.source = None
        super().clear()


class Wakeups:
    def __init__(self, broadcast: Broadcast | None = None) -> None:
        self._waiters: defaultdict[str, set[Waiter]] = defaultdict(set)
        self.waiting_count = 0  # claims waiting now (the ikoma_claims_waiting gauge, read when scraped)
        self._broadcast = broadcast
        # keys notified recently, each with the sequence number of its latest notification: the
        # dispatcher answers a claim's first look from the doorbell's last read plus these
        self._sequence = itertools.count(1)
        self.last_sequence = 0
        self.recent: dict[str, int] = {}
        # changes when `recent` may be incomplete (emptied when too large, or a resync): the dispatcher
        # then trusts no earlier doorbell read
        self.epoch = 0
        # set by a resync: the doorbell reads at once instead of at its next tick
        self.resynced = asyncio.Event()
        if broadcast is not None:
            broadcast.subscribe(CLAIMS, self._on_broadcast)

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def notify(self, *keys: str | None) -> None:
        """Wake the claims waiting for these keys, here and (with a broadcast) in the other processes."""
        live = [key for key in keys if key is not None]
        self.ring(live, LOCAL)
        if self._broadcast is not None and live:
            self._broadcast.publish(CLAIMS, " ".join(live), local=False)

    def ring(self, keys: list[str], source: str) -> None:
        """Wake the claims of this process waiting for `keys` (no broadcast)."""
        for key in keys:
            if source != DOORBELL:
                self.last_sequence = next(self._sequence)
                self.recent[key] = self.last_sequence
            for waiter in self._waiters.get(key, ()):
                waiter.ring(source)
        if len(self.recent) > MAX_RECENT:  # nobody pruned them (no doorbell ran): start afresh
            self.recent.clear()
            self.epoch += 1

    def forget_recent(self, up_to: int) -> None:
        """Drop the keys notified at or before sequence `up_to` (a doorbell read begun after saw them)."""
        self.recent = {key: seq for key, seq in self.recent.items() if seq > up_to}

    def _on_broadcast(self, payload: str | None) -> None:
        if payload is None:
            self.epoch += 1
            self.resynced.set()
            return
        self.ring(payload.split(), BROADCAST)

    @contextmanager
    def listen(self, *keys: str | None) -> Iterator[Waiter]:
        """Register before looking at the database, so a notification in between is never missed."""
        waiter = Waiter()
        live = [k for k in keys if k is not None]
        for key in live:
            self._waiters[key].add(waiter)
        self.waiting_count += 1
        try:
            yield waiter
        finally:
            self.waiting_count -= 1
            for key in live:
                group = self._waiters.get(key)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiters[key]
