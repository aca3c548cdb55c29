"""In-process wake-ups for long-polling claims: a new order wakes only the runners it is eligible for.

Each waiting claim registers under its runner id and its server id; creating or requeueing an order
notifies the order's runner and server. What no notification covers (orders created by another API
process, retry delays that end) is found by the dispatcher's doorbell: one read every
`FALLBACK_POLL_SECONDS` for all the waiters of the process, which rings the keys that have work, so an
idle runner costs no query of its own.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

FALLBACK_POLL_SECONDS = 1.0


class Wakeups:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def notify(self, *keys: str | None) -> None:
        for key in keys:
            if key is None:
                continue
            for waiter in self._waiters.get(key, ()):
                waiter.set()

    @contextmanager
    def listen(self, *keys: str | None) -> Iterator[asyncio.Event]:
        """Register before looking at the database, so a notification in between is never missed."""
        waiter = asyncio.Event()
        live = [k for k in keys if k is not None]
        for key in live:
            self._waiters[key].add(waiter)
        try:
            yield waiter
        finally:
            for key in live:
                group = self._waiters.get(key)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiters[key]
