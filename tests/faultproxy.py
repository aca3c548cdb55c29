"""A loopback HTTP/1.1 proxy that loses answers after the server committed (RELIABILITY.md scenario 22).

Put between a runner and the API (`--api-url proxy.url`). Each request is forwarded on a connection of
its own, marked `Connection: close`, and the proxy reads the server's whole answer: the runner routes
commit before they answer, so a complete answer means the server's work is done. A request matching a
`drop` rule still reaches the server, but its answer is thrown away and the runner's connection is
closed without a byte: the runner sees a reset, exactly as when the network fails at the worst moment.

It runs an asyncio loop in a daemon thread (no process to clean up), listens on 127.0.0.1 only, and
records every exchange (method, path, status, dropped) for the test to assert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Exchange:
    method: str
    path: str
    status: int | None
    dropped: bool


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    times: int
    status: int | None = None  # only answers with this status (a claim that carried an order: 200)

    def take(self, method: str, path: str, status: int | None) -> bool:
        wanted = self.status is None or status == self.status
        if self.times > 0 and wanted and method == self.method and self.path.search(path):
            self.times -= 1
            return True
        return False


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop(self, method: str, path: str, times: int = 1, status: int | None = None) -> Rule:
        """Lose the answer of the next `times` requests whose path matches the regex `path` (and whose
        answer has `status`, if given)."""
        rule = Rule(method, re.compile(path), times, status)
        with self._lock:
            self._rules.append(rule)
        return rule

    def dropped(self, path: str) -> list[Exchange]:
        pattern = re.compile(path)
        with self._lock:
            return [e for e in self.exchanges if e.dropped and pattern.search(e.path)]

    def start(self) -> None:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop listening, end every exchange in flight (their connections closed), close the loop."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        running = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _should_drop(self, method: str, path: str, status: int | None) -> bool:
        with self._lock:
            return any(rule.take(method, path, status) for rule in self._rules)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            head, body, method, path = request
            answer = await self._forward(head, body)
            status = _status(answer)
            drop = self._should_drop(method, path, status)
            with self._lock:
                self.exchanges.append(Exchange(method, path, status, drop))
            if drop or answer is None:
                return  # the caller's connection is closed without a byte: the answer is lost
            # one exchange per connection: the answer says `Connection: close` (the request was sent so)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _forward(self, head: bytes, body: bytes) -> bytes | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            return None
        try:
            writer.write(_closing(head) + body)
            await writer.drain()
            return await reader.read()  # to EOF: the server closes after a `Connection: close` request
        except ConnectionError:
            return None
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, str, str] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("the fault proxy forwards Content-Length bodies only")
    body = await reader.readexactly(length) if length else b""
    return head, body, method, target.split("?", 1)[0]


def _closing(head: bytes) -> bytes:
    """The request head with `Connection: close` (one request per upstream connection)."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines[:-2], b"Connection: close", b"", b""])


def _status(answer: bytes | None) -> int | None:
    if not answer:
        return None
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


@contextlib.contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
