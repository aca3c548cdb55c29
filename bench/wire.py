"""A bare HTTP/1.1 keep-alive client for the load generators, so that they measure the server.

httpx costs ~0.4 ms of client CPU per request on this machine: on 2 cores the benchmark's client
saturated before the yardstick did (client 98 %). This client writes the request bytes itself and
reads the answer by its Content-Length (or chunked), on one asyncio connection: a few tens of µs a
request. It knows only what IKOMA and the yardstick answer (no redirects, no compression, no TLS);
an answer it cannot read raises `WireError`, which the benchmarks count as a transport error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson


class WireError(Exception):
    """The connection failed or the answer was not HTTP/1.1 as this client reads it."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def reason(self) -> str:
        try:
            return str(orjson.loads(self.body).get("reason", "?"))
        except (orjson.JSONDecodeError, AttributeError):
            return "?"


class Connection:
    """One keep-alive connection to host:port, reopened when the server closed it."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host, self.port = host, port
        fixed = {"host": f"{host}:{port}", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        return self._reader, self._writer

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One request; a keep-alive connection the server had closed is reopened once."""
        payload = b"" if body is None else orjson.dumps(body)
        head = f"{method} {path} HTTP/1.1\r\ncontent-length: {len(payload)}\r\n".encode() + self._fixed
        if body is not None:
            head += b"content-type: application/json\r\n"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        data = head + b"\r\n" + payload
        for attempt in (1, 2):
            reused = self._writer is not None and not self._writer.is_closing()
            try:
                reader, writer = await self._open()
                writer.write(data)
                return await self._read(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                self.close()
                if attempt == 2 or not reused:  # a fresh connection that fails is a real failure
                    raise WireError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _read(self, reader: asyncio.StreamReader) -> Answer:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            body = await reader.readexactly(length) if length else b""
        if close:
            self.close()
        return Answer(status, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
