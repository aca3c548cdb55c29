"""Runner tokens verified recently, so an idle long-poll does not read the runners table each time.

Only the waiting claim (and the early check before a body is read) trusts this cache; every call that
acts (claiming an order, start, heartbeat, complete) still authenticates in its own transaction, so a
revoked runner or a rotated token is never handed an order nor allowed to report. What the cache may
answer wrongly is only the idle poll itself, and for a bounded time:

- revoke, rotate and delete notify `broadcast.CREDENTIALS` in their transaction: every process drops
  the runner's entry when it commits (this process at once, the others through PostgreSQL);
- a resync of the broadcast (messages may have been lost) empties the cache;
- an entry lives at most `TTL_SECONDS` anyway (a change made behind IKOMA's back).

Without a broadcast nobody could tell the cache about a revocation, so nothing is cached.

A verification that read the database before a revocation committed must not refill the cache after it:
entries are stored only if no invalidation happened while they were read (`generation`).
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ikoma.domain import tokens
from ikoma.services.broadcast import CREDENTIALS

if TYPE_CHECKING:
    from ikoma.services.broadcast import Broadcast

TTL_SECONDS = 60.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Verified:
    token_hash: str
    server_id: str | None
    expires_at: float


class VerifiedTokens:
    def __init__(self, broadcast: Broadcast | None = None, *, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        self.generation = 0
        self._entries: dict[str, Verified] = {}
        self.enabled = broadcast is not None
        if broadcast is not None:
            broadcast.subscribe(CREDENTIALS, self._on_broadcast)

    def lookup(self, runner_id: str, token: str) -> Verified | None:
        """The runner's verified entry if `token` is the one verified and it has not expired."""
        entry = self._entries.get(runner_id)
        if entry is None:
            return None
        if entry.expires_at < time.monotonic():
            del self._entries[runner_id]
            return None
        if not hmac.compare_digest(tokens.hash_token(token), entry.token_hash):
            return None  # another token (rotated?): the database decides
        return entry

    def remember(self, runner_id: str, token_hash: str, server_id: str | None, *, generation: int) -> None:
        """Store a verification read while the generation was `generation` (else it may be stale)."""
        if generation != self.generation or not self.enabled:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[runner_id] = Verified(token_hash, server_id, time.monotonic() + self.ttl)

    def forget(self, runner_id: str | None = None) -> None:
        """Drop one runner's entry (revoked, rotated, deleted), or every entry."""
        self.generation += 1
        if runner_id is None:
            self._entries.clear()
        else:
            self._entries.pop(runner_id, None)

    def _on_broadcast(self, payload: str | None) -> None:
        self.forget(payload)  # None: a resync, an invalidation may have been missed
