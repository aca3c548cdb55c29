"""Step output to the API: batched into chunks at most ~1 s old, numbered by `seq`, secrets masked."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import structlog

from ikoma.runner.client import ApiUnreachable, Conflict, NotFound, RunnerApiError, ServerError, Unauthorized

log = structlog.get_logger("ikoma.runner.logs")

MASK = "***"
SECRET_KEY_PARTS = ("password", "secret", "token", "key")
MAX_CHUNK_BYTES = 48 * 1024  # under the API's 64 KiB per chunk, leaving room for multi-byte growth
MAX_CHUNKS_PER_CALL = 200  # the API takes 1-500
MAX_UNSENT_BYTES = 8 * 1024 * 1024  # memory bound while the API is unreachable (it keeps 5 MiB anyway)

Chunk = dict[str, Any]
Sender = Callable[[list[Chunk]], Awaitable[Any]]

# A route missing on an older server is reported once per process, not once per order.
_warned_missing_route = False


def secret_values(params: Any) -> list[str]:
    """String values of every key naming a secret, at any depth; longest first so overlaps mask fully."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str) and item and any(p in str(key).lower() for p in SECRET_KEY_PARTS):
                    found.add(item)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(params)
    return sorted(found, key=len, reverse=True)


class Masker:
    """Replaces every known secret value by `***` in text bound for logs or reports."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        """Mask a secret learnt while running (a generated password), from now on."""
        if secret and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    @classmethod
    def for_params(cls, params: Any) -> Masker:
        return cls(secret_values(params))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def mask_data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.mask_data(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_data(v) for v in value]
        return value


def split_text(text: str, limit: int = MAX_CHUNK_BYTES) -> list[str]:
    """Pieces of at most `limit` UTF-8 bytes, cut at line ends where possible, never inside a character."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        encoded = len(line.encode())
        if encoded > limit:
            if current:
                pieces.append("".join(current))
                current, size = [], 0
            # a 4-byte character at most per code point: limit // 4 characters always fit
            step = max(1, limit // 4)
            pieces.extend(line[i : i + step] for i in range(0, len(line), step))
            continue
        if size + encoded > limit and current:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += encoded
    if current:
        pieces.append("".join(current))
    return pieces


class LogStream:
    """Collects step output for one order and ships it in the background.

    Lines are masked when complete (so a secret is never cut in two by a read boundary); a partial
    line is shipped anyway when the periodic flush comes, so no text waits more than `max_age`.
    Each chunk gets its `seq` when built and keeps it on every retry: the API drops duplicates.
    """

    def __init__(self, send: Sender, masker: Masker | None = None, *, max_age: float = 1.0) -> None:
        self._send = send
        self._mask = masker or Masker()
        self._max_age = max_age
        self._partial: dict[str, str] = {}
        self._pending: list[tuple[str, str]] = []
        self._unsent: list[Chunk] = []
        self._unsent_bytes = 0
        self._dropped_bytes = 0
        self._next_seq = 0
        self._disabled = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def disabled(self) -> bool:
        return self._disabled

    def write(self, stream: str, text: str) -> None:
        if self._disabled or not text:
            return
        buffered = self._partial.get(stream, "") + text
        head, sep, tail = buffered.rpartition("\n")
        if sep:
            self._pending.append((stream, self._mask(head + sep)))
        self._partial[stream] = tail

    def system(self, message: str) -> None:
        """A line from the runner itself (step started, killed, …)."""
        self.write("system", message.rstrip("\n") + "\n")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._ticker(), name="log-flush")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self._max_age)
            await self.flush()

    def _build_chunks(self) -> None:
        for stream, partial in self._partial.items():
            if partial:
                self._pending.append((stream, self._mask(partial)))
        self._partial = {}
        grouped: list[tuple[str, list[str]]] = []
        for stream, text in self._pending:
            if grouped and grouped[-1][0] == stream:
                grouped[-1][1].append(text)
            else:
                grouped.append((stream, [text]))
        self._pending = []
        for stream, texts in grouped:
            for piece in split_text("".join(texts)):
                size = len(piece.encode())
                if self._unsent_bytes + size > MAX_UNSENT_BYTES:
                    self._dropped_bytes += size
                    continue
                self._unsent.append({"seq": self._next_seq, "stream": stream, "data": piece})
                self._unsent_bytes += size
                self._next_seq += 1
        if self._dropped_bytes and self._unsent_bytes < MAX_UNSENT_BYTES // 2:
            note = f"[runner: {self._dropped_bytes} bytes of output dropped while the API was unreachable]\n"
            self._unsent.append({"seq": self._next_seq, "stream": "system", "data": note})
            self._next_seq += 1
            self._dropped_bytes = 0

    def _disable(self, why: str) -> None:
        self._disabled = True
        self._unsent, self._pending, self._partial = [], [], {}
        self._unsent_bytes = 0
        log.info("log streaming stopped for this order", why=why)

    async def flush(self) -> bool:
        """Ship what is buffered; True when nothing is left to send (or sending is pointless)."""
        global _warned_missing_route
        async with self._lock:
            if self._disabled:
                return True
            self._build_chunks()
            while self._unsent:
                batch = self._unsent[:MAX_CHUNKS_PER_CALL]
                try:
                    await self._send(batch)
                except NotFound:
                    if not _warned_missing_route:
                        _warned_missing_route = True
                        log.warning("the API has no log route (404); step output is not streamed")
                    self._disable("route_not_found")
                    return True
                except (Conflict, Unauthorized) as exc:
                    self._disable(exc.reason)  # the order is not ours any more: nobody will read these
                    return True
                except (ApiUnreachable, ServerError, RunnerApiError) as exc:
                    log.debug("log chunks not delivered, will retry", error=str(exc))
                    return False
                del self._unsent[: len(batch)]
                self._unsent_bytes -= sum(len(c["data"].encode()) for c in batch)
            return True

    async def close(self, *, attempts: int = 5, first_delay: float = 0.5) -> bool:
        """Stop the ticker and flush everything, retrying a few times: complete must come after the logs."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        delay = first_delay
        for attempt in range(attempts):
            if await self.flush():
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.warning("log chunks could not be delivered before completion", unsent=len(self._unsent))
        return False
