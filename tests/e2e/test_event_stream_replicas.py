"""Two real `ikoma serve` replicas on one PostgreSQL database: an SSE client on replica A gets, live and
in order, the events written through replica B (issue 12, "an SSE client on A sees events written on
B"). B's commits NOTIFY `ikoma_events`; A's broadcaster relays it to A's one event-log reader."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests import support

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

READ_TIMEOUT = 30.0  # a guard against a hang, never a timing assertion


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[support.LiveServer, support.LiveServer]]:
    directory = tmp_path_factory.mktemp("sse-replicas")
    key = "ika_test_" + uuid.uuid4().hex
    with support.server_database("postgresql", directory) as url:
        a = support.LiveServer(database_url=url, data_dir=directory / "a", admin_key=key)
        b = support.LiveServer(database_url=url, data_dir=directory / "b", admin_key=key)
        try:
            a.start()
            b.start()
            yield a, b
        finally:
            b.stop()
            a.stop()
        for replica in (a, b):
            assert "Traceback" not in replica.read_log(), replica.log_tail()


def received_broadcasts(server: support.LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=READ_TIMEOUT).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("ikoma_broadcasts_received_total")
    )


def test_an_sse_client_on_one_replica_gets_the_events_written_on_the_other(
    replicas: tuple[support.LiveServer, support.LiveServer],
) -> None:
    a, b = replicas
    name = f"replica-{uuid.uuid4().hex[:8]}"
    with b.admin() as admin:
        server = admin.post("/v1/servers", json={"name": name, "hostname": name})
        assert server.status_code == 201, server.text
        server_id = server.json()["id"]
    heard_before = received_broadcasts(a)
    params = {"serverId": server_id, "kind": "order.created"}
    created: list[str] = []
    got: list[dict[str, object]] = []
    with (
        httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT)) as client,
        client.stream(
            "GET", f"{a.url}/v1/events/stream", params=params, headers={"X-Api-Key": a.admin_key}
        ) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()
        for line in lines:  # caught up: from here on, events come live
            if line == ": live":
                break
        with b.admin() as admin:
            for _ in range(3):
                order = admin.post(
                    "/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping"}
                )
                assert order.status_code == 201, order.text
                created.append(order.json()["order"]["id"])
        for line in lines:
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == len(created):
                    break
    assert [e["orderId"] for e in got] == created
    assert received_broadcasts(a) > heard_before  # B's NOTIFYs reached A
