"""Two real `ikoma serve` replicas on one PostgreSQL database (issue 12, scope 4).

A runner long-polling replica A is woken by an order created on replica B (through NOTIFY: the
metrics say what woke the claim, not a stopwatch); the listening connection killed with
pg_terminate_backend comes back and no wake-up is lost; killing the leader (SIGKILL) moves the
reconciler to the other replica; two `ikoma db migrate` at once both succeed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import processes, support
from tests.e2e.fleet import attach_fleet, unique

pytestmark = pytest.mark.postgres

WAIT = 60.0  # generous: only a failure waits this long


@dataclass
class Replicas:
    a: support.LiveServer
    b: support.LiveServer
    database: str


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Replica A started first (it leads), then B; one database, one data directory (shared keys)."""
    support.require_pg()
    directory = tmp_path_factory.mktemp("replicas")
    name = support.create_pg_database("ikoma_replicas")
    url = support.pg_url(name)
    env = {"IKOMA_RECONCILE_INTERVAL": "0.5"}
    a = support.LiveServer(database_url=url, data_dir=directory / "data", extra_env=env)
    b = support.LiveServer(
        database_url=url, data_dir=directory / "data", admin_key=a.admin_key, extra_env=env
    )
    try:
        a.start()
        b.start()
        yield Replicas(a, b, name)
    finally:
        b.stop()
        a.stop()
        support.drop_pg_database(name)


def metric(server: support.LiveServer, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    with server.admin() as admin:
        text = admin.get("/metrics").text
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return 0.0


def until(condition: Callable[[], bool], what: str, server: support.LiveServer | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            log = f"\n--- log of {server.url}:\n{server.log_tail()}" if server else ""
            pytest.fail(f"waited {WAIT:g} s for: {what}{log}")
        time.sleep(0.05)


class Poll:
    """One `claim-next?wait=30` on `server`, in a thread."""

    def __init__(self, server: support.LiveServer, runner_id: str, token: str) -> None:
        self.answer: httpx.Response | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=WAIT) as client:
                    self.answer = client.post(
                        "/v1/runner/orders/claim-next?wait=30",
                        headers={"x-runner-id": runner_id, "x-runner-token": token},
                    )
            except BaseException as exc:  # shown by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def claimed(self) -> dict[str, Any]:
        self.thread.join(WAIT)
        assert self.error is None, self.error
        assert self.answer is not None
        assert self.answer.status_code == 200, self.answer.text
        return dict(self.answer.json())


def poll_waiting_on(server: support.LiveServer, runner_id: str, token: str) -> Poll:
    """A long-poll that has looked, found nothing, and waits (the server's gauge says so)."""
    before = metric(server, "ikoma_claims_waiting")
    poll = Poll(server, runner_id, token)
    until(lambda: metric(server, "ikoma_claims_waiting") > before, "the poll to wait", server)
    return poll


def test_a_runner_polling_replica_a_is_woken_by_an_order_created_on_replica_b(
    replicas: Replicas, tmp_path: Path
) -> None:
    fleet = attach_fleet(replicas.a, tmp_path, name=unique("web"))
    b_fleet = type(fleet)(replicas.b, fleet.server_id, fleet.runner_id, fleet.token, tmp_path)
    woken_before = metric(replicas.a, "ikoma_claim_wakeups_total", source="broadcast")
    rounds = 3
    for _ in range(rounds):
        poll = poll_waiting_on(replicas.a, fleet.runner_id, fleet.token)

        order_id = b_fleet.order("system.test_ping", {})

        assert poll.claimed()["id"] == order_id
    # Woken by replica B's message, not found by A's once-a-second doorbell read. That read may, rarely,
    # come first for one order (it races the message): across three orders, at least one is a broadcast.
    woken = metric(replicas.a, "ikoma_claim_wakeups_total", source="broadcast") - woken_before
    assert woken >= 1
    assert metric(replicas.a, "ikoma_broadcasts_received_total", channel="ikoma_claims") >= 1


def test_a_killed_listening_connection_comes_back_without_losing_a_wake_up(
    replicas: Replicas, tmp_path: Path
) -> None:
    fleet = attach_fleet(replicas.a, tmp_path, name=unique("web"))
    b_fleet = type(fleet)(replicas.b, fleet.server_id, fleet.runner_id, fleet.token, tmp_path)
    poll = poll_waiting_on(replicas.a, fleet.runner_id, fleet.token)

    killed = terminate(replicas.database, "ikoma-broadcast")
    order_id = b_fleet.order("system.test_ping", {})  # while the listeners reconnect

    assert killed == 2  # one per replica
    assert poll.claimed()["id"] == order_id
    until(lambda: "broadcast_connection_lost" in replicas.a.read_log(), "A's log to say so", replicas.a)
    # and B's messages reach A again through the restored connections
    received = metric(replicas.a, "ikoma_broadcasts_received_total", channel="ikoma_claims")
    poll = poll_waiting_on(replicas.a, fleet.runner_id, fleet.token)
    order_id = b_fleet.order("system.test_ping", {})
    assert poll.claimed()["id"] == order_id
    until(
        lambda: metric(replicas.a, "ikoma_broadcasts_received_total", channel="ikoma_claims") > received,
        "B's next message to reach A",
        replicas.a,
    )


def terminate(database: str, application_name: str) -> int:
    import asyncio

    async def run() -> int:
        conn = await asyncpg.connect(support.pg_url(database), timeout=10)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = $1",
                    application_name,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(run())


def test_killing_the_leader_moves_the_reconciler_to_the_other_replica(
    replicas: Replicas, tmp_path: Path
) -> None:
    until(lambda: metric(replicas.a, "ikoma_leader") == 1, "A (started first) to lead", replicas.a)
    assert metric(replicas.b, "ikoma_leader") == 0
    fleet = attach_fleet(replicas.b, tmp_path, name=unique("web"))
    try:
        replicas.a.stop(signal.SIGKILL)

        until(lambda: metric(replicas.b, "ikoma_leader") == 1, "B to take over", replicas.b)
        # B's reconciler works: a run past its timeout ends TIMEOUT
        order_id = fleet.order("system.test_ping", {}, timeoutSeconds=1)
        with httpx.Client(base_url=replicas.b.url, timeout=WAIT) as client:
            headers = {"x-runner-id": fleet.runner_id, "x-runner-token": fleet.token}
            claimed = client.post("/v1/runner/orders/claim-next?wait=5", headers=headers)
            assert claimed.status_code == 200, claimed.text
            assert claimed.json()["id"] == order_id
            started = client.post(
                f"/v1/runner/orders/{order_id}/start",
                headers=headers,
                json={"leaseToken": claimed.json()["leaseToken"]},
            )
            assert started.status_code == 200, started.text
        assert fleet.wait_status(order_id, {"TIMEOUT"}, timeout=WAIT)["status"] == "TIMEOUT"
    finally:
        replicas.a.start()  # the module's other tests keep two replicas
    until(lambda: metric(replicas.b, "ikoma_leader") == 1, "B to keep leading", replicas.b)
    assert metric(replicas.a, "ikoma_leader") == 0


def test_two_db_migrate_at_once_both_succeed(tmp_path: Path) -> None:
    support.require_pg()
    name = support.create_pg_database("ikoma_migrate2")
    try:
        env = support.clean_env(DATABASE_URL=support.pg_url(name), IKOMA_DATA_DIR=str(tmp_path))
        argv = [sys.executable, "-m", "ikoma", "db", "migrate"]
        both = [processes.spawn(argv, env=env, log_path=tmp_path / f"migrate-{i}.log") for i in (1, 2)]
        codes = [proc.wait(timeout=180) for proc in both]
        for proc in both:
            processes.stop(proc)  # reaps what it left in its group
        logs = "\n".join((tmp_path / f"migrate-{i}.log").read_text() for i in (1, 2))
        assert codes == [0, 0], logs
        check = processes.run([sys.executable, "-m", "ikoma", "db", "check"], env=env, timeout=180, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        support.drop_pg_database(name)
