"""Answers lost after the server committed, for every runner call (RELIABILITY.md scenario 22).

A real runner talks to a real API through tests/faultproxy.py, which forwards chosen requests and then
drops the connection instead of returning the answer. The runner retries each call; the server answers
the retry as it answered the first (a start replayed with the same lease token, a heartbeat, log chunks
stored once per sequence number, a completion already recorded), so the order ends SUCCEEDED with the
step run once, its transitions each recorded once, its log lines each once, and nothing STALE.

A lost claim-next answer is the one the runner cannot retry (it never learnt of the order): it may cost
a lease expiry and a new attempt, never a second run of the step.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e.fleet import Fleet, attach_fleet
from tests.faultproxy import FaultProxy, fault_proxy

pytestmark = [pytest.mark.e2e]

# short leases so that a lost claim costs seconds; STALE_AFTER well above the runner's 1 s heartbeats
SERVER_ENV = {"IKOMA_CLAIM_LEASE": "6", "IKOMA_STALE_AFTER": "6", "IKOMA_RECONCILE_INTERVAL": "0.5"}
ORDER = r"/v1/runner/orders/[0-9a-f-]{36}"
# one line per execution in argv[1]; log lines; long enough for several heartbeats and log batches
STEP = (
    "import sys, time\n"
    "with open(sys.argv[1], 'a') as f: f.write('run\\n')\n"
    "for i in range(6):\n"
    "    print(f'line {i}', flush=True)\n"
    "    time.sleep(0.5)\n"
)


@dataclasses.dataclass
class Setup:
    fleet: Fleet  # the API reached directly, for the test's own reads
    proxy: FaultProxy
    runner: Fleet  # the same identity, whose runner process reaches the API through the proxy


@pytest.fixture
def setup(server_database_url: str, tmp_path: Path) -> Iterator[Setup]:
    server = support.LiveServer(
        database_url=server_database_url, data_dir=tmp_path / "data", extra_env=SERVER_ENV
    )
    server.start()
    try:
        fleet = attach_fleet(server, tmp_path)
        with fault_proxy(server.port) as proxy:
            # a view of the same server at the proxy's port: only the runner's calls go through it
            via_proxy = dataclasses.replace(
                fleet, server=dataclasses.replace(server, port=proxy.port), procs=[]
            )
            try:
                yield Setup(fleet, proxy, via_proxy)
            finally:
                via_proxy.stop_runners()
    finally:
        server.stop()


def _runs(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _transitions(events: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    return [(e["fromStatus"], e["toStatus"], e["reason"]) for e in events]


def _lines(fleet: Fleet, order_id: str) -> list[str]:
    items, _ = fleet.read_logs(order_id)
    return [line for item in items for line in item["data"].splitlines() if line.startswith("line ")]


def test_every_runner_answer_lost_after_commit_is_retried_to_one_success_never_stale(
    setup: Setup, tmp_path: Path
) -> None:
    proxy, fleet = setup.proxy, setup.fleet
    proxy.drop("POST", ORDER + r"/start$")
    proxy.drop("POST", ORDER + r"/heartbeat$", times=2)
    proxy.drop("POST", ORDER + r"/logs$", times=2)
    proxy.drop("POST", ORDER + r"/complete$")
    runs = tmp_path / "runs"
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", STEP, str(runs)]})
    setup.runner.start_runner()

    done = fleet.wait_done(order_id, timeout=120)
    assert done["status"] == "SUCCEEDED", fleet.logs_tail()
    assert done["attempt"] == 1
    assert _runs(runs) == 1
    assert _transitions(fleet.events(order_id)) == [
        (None, "QUEUED", "created"),
        ("QUEUED", "CLAIMED", "claimed"),
        ("CLAIMED", "RUNNING", "started"),
        ("RUNNING", "SUCCEEDED", "completed"),
    ]
    assert _lines(fleet, order_id) == [f"line {i}" for i in range(6)]
    # every fault happened, and every lost call was answered by the server (it had committed)
    for call in ("start", "heartbeat", "logs", "complete"):
        lost = proxy.dropped(ORDER + rf"/{call}$")
        assert lost, f"no {call} answer was dropped: {proxy.exchanges}"
        assert all(e.status is not None and e.status < 500 for e in lost), lost


def test_a_lost_claim_answer_costs_a_lease_and_an_attempt_never_a_second_run(
    setup: Setup, tmp_path: Path
) -> None:
    proxy, fleet = setup.proxy, setup.fleet
    proxy.drop("POST", r"/v1/runner/orders/claim-next$", status=200)
    runs = tmp_path / "runs"
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", STEP, str(runs)]}, maxAttempts=3)
    setup.runner.start_runner()

    done = fleet.wait_done(order_id, timeout=120)
    assert done["status"] == "SUCCEEDED", fleet.logs_tail()
    assert proxy.dropped(r"claim-next$"), proxy.exchanges
    assert _runs(runs) == 1
    assert done["attempt"] == 2  # the lost claim's lease expired; the order was claimed again
    statuses = [e["toStatus"] for e in fleet.events(order_id)]
    assert statuses.count("RUNNING") == 1, statuses
    assert "STALE" not in statuses
