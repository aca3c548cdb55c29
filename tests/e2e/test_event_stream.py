"""The live event stream over real HTTP (issue 12): `GET /v1/events/stream` and
`GET /v1/orders/{id}/logs/stream` on a real `ikoma serve`, and `ikoma events --follow`.

One server per module and backend, with a 1 s heartbeat and a per-subscriber queue of 3 events (so the
lagging case needs only a small burst). Tests create their own servers and filter on them; a live
subscriber here never gets more than one event at a time from the API, except in the lagging test,
whose burst is written straight into the event log in one transaction by this process (the server's
reader finds it on its poll, one page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ikoma.services import events
from ikoma.storage.database import Database
from tests import processes, support

pytestmark = pytest.mark.e2e

QUEUE_SIZE = 3
READ_TIMEOUT = 30.0  # a guard against a hang (heartbeats come every second), never a timing assertion


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    extra = {"IKOMA_SSE_HEARTBEAT_SECONDS": "1", "IKOMA_SSE_QUEUE_SIZE": str(QUEUE_SIZE)}
    live = None
    for live in support.live_server_per_module(request, tmp_path_factory, extra_env=extra):
        yield live
    log = live.read_log() if live else ""
    assert "Traceback" not in log, log[-5000:]


class Stream:
    """One SSE answer read message by message; comments (heartbeats, `: live`) are counted apart."""

    def __init__(self, url: str, headers: dict[str, str], params: dict[str, Any] | None = None) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT))
        self._answer = self.client.stream("GET", url, headers=headers, params=params)
        self.response = self._answer.__enter__()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []
        self.retry: str | None = None

    def next(self, deadline: float | None = None) -> dict[str, str] | None:
        """The next message as {"id"?, "event", "data"}; None when the server ended the stream.
        With a `deadline` (time.monotonic), heartbeats alone cannot keep it waiting past it."""
        fields: dict[str, str] = {}
        data: list[str] = []
        for line in self._lines:
            assert deadline is None or time.monotonic() < deadline, "the stream is still open"
            if line == "":
                if data:
                    return {**fields, "data": "\n".join(data)}
                fields = {}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(": ")
            if name == "retry":
                self.retry = value
            elif name == "data":
                data.append(value)
            else:
                fields[name] = value
        return None

    def until_live(self) -> None:
        """Read up to the `: live` comment: caught up, whatever is written from now on comes live."""
        for line in self._lines:
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                if line == ": live":
                    return
        raise AssertionError("the stream ended before it was live")

    def next_comment(self) -> str:
        for line in self._lines:
            if line.startswith(":"):
                return line[1:].strip()
        raise AssertionError("the stream ended without a comment")

    def events(self, count: int) -> list[dict[str, Any]]:
        got = []
        for _ in range(count):
            message = self.next()
            assert message is not None, f"stream ended after {got}"
            event = json.loads(message["data"])
            assert message["event"] == event["kind"]
            assert message["id"] == str(event["id"])
            got.append(event)
        return got

    def close(self) -> None:
        self._answer.__exit__(None, None, None)
        self.client.close()


@contextlib.contextmanager
def stream(
    server: support.LiveServer, path: str, *, key: str | None = None, **options: Any
) -> Iterator[Stream]:
    headers = {"X-Api-Key": key or server.admin_key, **options.pop("headers", {})}
    opened = Stream(f"{server.url}{path}", headers, options.pop("params", None))
    try:
        assert opened.response.status_code == 200, opened.response.read()
        assert opened.response.headers["content-type"].startswith("text/event-stream")
        yield opened
    finally:
        opened.close()


def new_server(server: support.LiveServer, prefix: str = "sse") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with server.admin() as admin:
        created = admin.post("/v1/servers", json={"name": name, "hostname": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def create_order(server: support.LiveServer, server_id: str) -> str:
    with server.admin() as admin:
        created = admin.post("/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping"})
    assert created.status_code == 201, created.text
    return str(created.json()["order"]["id"])


def subscribers(server: support.LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    line = next(line for line in text.splitlines() if line.startswith("ikoma_sse_subscribers "))
    return float(line.split()[1])


def wait_subscribers(server: support.LiveServer, count: float) -> None:
    deadline = time.monotonic() + READ_TIMEOUT
    while subscribers(server) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert subscribers(server) == count


def test_a_client_cut_mid_stream_resumes_with_last_event_id_and_gets_every_event_once_in_order(
    server: support.LiveServer,
) -> None:
    server_id = new_server(server)
    params = {"serverId": server_id, "kind": "order.created", "after": 0}
    created = [create_order(server, server_id) for _ in range(2)]
    received: list[dict[str, Any]] = []
    with stream(server, "/v1/events/stream", params=params) as first:
        assert first.retry is None
        received += first.events(2)  # the backlog
        assert first.retry == "3000"
        first.until_live()
        for _ in range(2):  # live, one at a time
            created.append(create_order(server, server_id))
            received += first.events(1)
    wait_subscribers(server, 0)  # the server noticed the cut and freed the subscription
    created += [create_order(server, server_id) for _ in range(3)]  # while nobody listens
    # an EventSource reconnects to the same URL (?after=0 included) with the last id it got
    resume = {"Last-Event-ID": str(received[-1]["id"])}
    with stream(server, "/v1/events/stream", params=params, headers=resume) as second:
        received += second.events(3)
        second.until_live()
        created.append(create_order(server, server_id))
        received += second.events(1)
        assert subscribers(server) == 1
    assert [e["orderId"] for e in received] == created
    ids = [e["id"] for e in received]
    assert ids == sorted(set(ids))
    assert all(e["serverId"] == server_id and e["kind"] == "order.created" for e in received)


def test_a_quiet_stream_gets_comment_heartbeats(server: support.LiveServer) -> None:
    with stream(server, "/v1/events/stream", params={"serverId": new_server(server)}) as quiet:
        quiet.until_live()
        assert quiet.next_comment() == "heartbeat"


def test_a_scoped_api_client_sees_only_its_servers_events(server: support.LiveServer) -> None:
    mine, other = new_server(server, "mine"), new_server(server, "other")
    with server.admin() as admin:
        client = admin.post(
            "/v1/api-clients",
            json={"name": f"scoped-{uuid.uuid4().hex[:8]}", "role": "observer", "serverIds": [mine]},
        )
    assert client.status_code == 201, client.text
    token = client.json()["token"]
    with stream(server, "/v1/events/stream", key=token) as scoped:
        scoped.until_live()
        create_order(server, other)  # written first: a stream that leaked it would show it first
        order_id = create_order(server, mine)
        (event,) = scoped.events(1)
    assert (event["serverId"], event["orderId"], event["kind"]) == (mine, order_id, "order.created")
    refused = httpx.get(
        f"{server.url}/v1/events/stream",
        params={"serverId": other},
        headers={"Authorization": f"Bearer {token}"},
        timeout=READ_TIMEOUT,
    )
    assert refused.status_code == 404, refused.text
    assert refused.json()["reason"] == "server_not_found"


def test_a_stream_ends_when_its_api_client_is_revoked(server: support.LiveServer) -> None:
    with server.admin() as admin:
        client = admin.post(
            "/v1/api-clients", json={"name": f"gone-{uuid.uuid4().hex[:8]}", "role": "observer"}
        )
        assert client.status_code == 201, client.text
        with stream(server, "/v1/events/stream", key=client.json()["token"]) as watched:
            watched.until_live()
            assert admin.delete(f"/v1/api-clients/{client.json()['id']}").status_code == 200
            deadline = time.monotonic() + READ_TIMEOUT
            while (message := watched.next(deadline)) is not None:  # events may come until the check
                assert message.get("event") != "stream.lagging"
    again = httpx.get(
        f"{server.url}/v1/events/stream", headers={"X-Api-Key": client.json()["token"]}, timeout=READ_TIMEOUT
    )
    assert again.status_code == 401, again.text


async def _write_burst(database_url: str, server_id: str, count: int) -> None:
    """Events written by another process, in one transaction: the server's reader gets them in one page."""
    db = Database(database_url)
    try:
        async with db.write() as tx:
            for n in range(count):
                events.publish(tx, "server.changed", server_id=server_id, actor="system", data={"n": n})
    finally:
        await db.dispose()


def test_a_subscriber_that_falls_behind_is_told_so_closed_and_resumes_without_a_gap(
    server: support.LiveServer,
) -> None:
    server_id = new_server(server)
    burst = QUEUE_SIZE + 4
    params = {"serverId": server_id, "kind": "server.changed"}
    with stream(server, "/v1/events/stream", params=params) as slow:
        slow.until_live()
        asyncio.run(_write_burst(server.database_url, server_id, burst))
        got = slow.events(QUEUE_SIZE)  # what its queue held
        notice = slow.next()
        assert notice is not None
        assert notice["event"] == "stream.lagging"
        assert "id" not in notice
        assert json.loads(notice["data"])["lastEventId"] == got[-1]["id"]
        assert slow.next() is None  # and the server closed the stream
    resume = {"Last-Event-ID": str(got[-1]["id"])}
    with stream(server, "/v1/events/stream", params=params, headers=resume) as again:
        got += again.events(burst - QUEUE_SIZE)
    assert [e["data"]["n"] for e in got] == list(range(burst))


def test_the_log_stream_sends_the_lines_live_and_ends_at_the_terminal_status(
    server: support.LiveServer,
) -> None:
    server_id = new_server(server, "logs")
    with server.admin() as admin:
        runner = admin.post("/v1/runners", json={"name": f"sse-runner-{uuid.uuid4().hex[:8]}"}).json()
        assert admin.patch(f"/v1/servers/{server_id}", json={"runnerId": runner["id"]}).status_code == 200
    order_id = create_order(server, server_id)
    agent = httpx.Client(
        base_url=server.url,
        headers={"x-runner-id": runner["id"], "x-runner-token": runner["token"]},
        timeout=READ_TIMEOUT,
    )
    with agent:
        claimed = agent.post("/v1/runner/orders/claim-next").json()
        assert claimed["id"] == order_id
        lease = {"leaseToken": claimed["leaseToken"]}
        agent.post(f"/v1/runner/orders/{order_id}/start", json=lease)

        def send(seq: int, text: str) -> None:
            chunk = {"seq": seq, "stream": "stdout", "data": text}
            sent = agent.post(f"/v1/runner/orders/{order_id}/logs", json={**lease, "chunks": [chunk]})
            assert sent.status_code == 200, sent.text

        send(0, "line 0\n")
        path = f"/v1/orders/{order_id}/logs/stream"
        with stream(server, path) as logs:
            first = logs.next()
            assert first is not None
            assert (first["event"], first["id"], json.loads(first["data"])["data"]) == (
                "log",
                "0",
                "line 0\n",
            )
            send(1, "line 1\n")
            second = logs.next()
            assert second is not None
            assert (second["id"], json.loads(second["data"])["data"]) == ("1", "line 1\n")
        report = {"version": "v2", "summary": "ok", "durationMs": 1, "steps": [], "errors": []}
        done = agent.post(
            f"/v1/runner/orders/{order_id}/complete", json={**lease, "status": "SUCCEEDED", "report": report}
        )
        assert done.status_code == 200, done.text
    # resumed after seq 0: the rest, then the end, then the server closes the stream
    with stream(server, path, headers={"Last-Event-ID": "0"}) as resumed:
        rest = resumed.next()
        end = resumed.next()
        assert resumed.next() is None
    assert rest is not None
    assert end is not None
    assert (rest["id"], json.loads(rest["data"])["data"]) == ("1", "line 1\n")
    assert end["event"] == "end"
    assert "id" not in end
    assert json.loads(end["data"]) == {"status": "SUCCEEDED", "truncated": False}


def test_a_bad_last_event_id_is_refused_with_a_reason(server: support.LiveServer) -> None:
    with server.admin() as admin:
        refused = admin.get("/v1/events/stream", headers={"Last-Event-ID": "seven"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["reason"] == "invalid_last_event_id"


def test_ikoma_events_lists_a_servers_events_as_a_table_or_json_lines(server: support.LiveServer) -> None:
    server_id = new_server(server, "listed")
    created = [create_order(server, server_id) for _ in range(2)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    env.update({"IKOMA_API_URL": server.url, "IKOMA_ADMIN_KEY": server.admin_key})
    argv = [sys.executable, "-m", "ikoma", "events", "--server", server_id, "--kind", "order.created"]
    as_json = processes.run([*argv, "--json"], env=env, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    listed = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(e["kind"], e["orderId"]) for e in listed] == [("order.created", o) for o in created]
    table = processes.run(argv, env=env, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("order.created") == 2
    assert created[0][:8] in table.stdout


class CuttablePipe:
    """A loopback TCP relay to the server whose connections the test can cut, and refuse for a while."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refusing = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", 0), self._loop
        ).result(READ_TIMEOUT)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing.is_set():
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers |= {writer, up_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until `restore`."""
        self.refusing.set()

        def abort_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(abort_all)

    def restore(self) -> None:
        self.refusing.clear()

    def close(self) -> None:
        self.cut()

        async def shutdown() -> None:
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(READ_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(READ_TIMEOUT)
        self._loop.close()


def test_ikoma_events_follow_prints_events_and_resumes_after_a_network_cut(
    server: support.LiveServer, tmp_path: Path
) -> None:
    server_id = new_server(server, "follow")
    pipe = CuttablePipe(server.port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    env.update({"IKOMA_API_URL": pipe.url, "IKOMA_ADMIN_KEY": server.admin_key})
    argv = [sys.executable, "-m", "ikoma", "events", "--follow", "--json", "--server", server_id]
    argv += ["--kind", "order.created"]
    errors = tmp_path / "follow.err"
    with errors.open("w") as stderr:
        follower = processes.spawn(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: list[str] = []
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
    try:
        reader.start()
        wait_subscribers(server, 1)
        created = [create_order(server, server_id)]
        wait_lines(lines, 1, follower)
        pipe.cut()
        wait_subscribers(server, 0)
        created += [create_order(server, server_id) for _ in range(2)]  # while it is cut off
        pipe.restore()
        wait_lines(lines, 3, follower)
        wait_subscribers(server, 1)
        created.append(create_order(server, server_id))
        wait_lines(lines, 4, follower)
    finally:
        processes.stop(follower)
        reader.join(READ_TIMEOUT)
        follower.stdout.close()
        pipe.close()
    printed = [json.loads(line) for line in lines]
    told = errors.read_text()
    assert [e["orderId"] for e in printed] == created, told
    assert "reconnecting" in told


def wait_lines(lines: list[str], count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READ_TIMEOUT
    while len(lines) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert len(lines) >= count, (lines, process.poll())
