"""The API SIGKILLed and restarted, or away longer than IKOMA_STALE_AFTER, while a runner is mid-order
(RELIABILITY.md scenarios 7, 11 and 13 end to end, both backends).

The runner keeps running its step, retries its heartbeats, logs and completion until the API is back;
the order then ends SUCCEEDED at attempt 1 with the step run once, each transition recorded once, and
never STALE: the restarted reconciler waits a stale period before judging leases it could not renew.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = [pytest.mark.e2e]

STALE_AFTER = 3.0
SERVER_ENV = {
    "IKOMA_STALE_AFTER": f"{STALE_AFTER:g}",
    "IKOMA_CLAIM_LEASE": "6",
    "IKOMA_RECONCILE_INTERVAL": "0.5",
}
# one line per execution in argv[1], then `seconds` (argv[2]) of work printing a line a second
STEP = (
    "import sys, time\n"
    "with open(sys.argv[1], 'a') as f: f.write('run\\n')\n"
    "for i in range(int(sys.argv[2])):\n"
    "    print(f'tick {i}', flush=True)\n"
    "    time.sleep(1)\n"
)
UNINTERRUPTED = [
    (None, "QUEUED", "created"),
    ("QUEUED", "CLAIMED", "claimed"),
    ("CLAIMED", "RUNNING", "started"),
    ("RUNNING", "SUCCEEDED", "completed"),
]


@pytest.fixture
def fleet(server_database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    server = support.LiveServer(
        database_url=server_database_url, data_dir=tmp_path / "data", extra_env=SERVER_ENV
    )
    server.start()
    attached: Fleet | None = None
    try:
        attached = attach_fleet(server, tmp_path)
        yield attached
    finally:
        if attached is not None:
            attached.stop_runners()
        server.stop()


def _runs(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _transitions(events: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    return [(e["fromStatus"], e["toStatus"], e["reason"]) for e in events]


def _running_order(fleet: Fleet, runs: Path, seconds: int) -> str:
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", STEP, str(runs), str(seconds)]})
    fleet.start_runner()
    fleet.wait_status(order_id, {"RUNNING"})
    return order_id


def _assert_ran_once_uninterrupted(fleet: Fleet, order_id: str, runs: Path) -> None:
    done = fleet.wait_done(order_id, timeout=120)
    assert done["status"] == "SUCCEEDED", fleet.logs_tail()
    assert done["attempt"] == 1
    assert _runs(runs) == 1
    assert _transitions(fleet.events(order_id)) == UNINTERRUPTED


def test_api_sigkilled_and_restarted_mid_order_ends_like_an_uninterrupted_run(
    fleet: Fleet, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    order_id = _running_order(fleet, runs, seconds=4)
    fleet.server.stop(signal.SIGKILL)
    fleet.server.start()
    _assert_ran_once_uninterrupted(fleet, order_id, runs)


def test_api_away_longer_than_stale_after_mid_order_never_marks_it_stale(
    fleet: Fleet, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    order_id = _running_order(fleet, runs, seconds=8)
    fleet.server.stop(signal.SIGKILL)
    time.sleep(STALE_AFTER * 2)  # the outage itself: the runner's heartbeats go nowhere meanwhile
    fleet.server.start()
    _assert_ran_once_uninterrupted(fleet, order_id, runs)
