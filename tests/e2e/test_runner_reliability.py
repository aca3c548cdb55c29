"""Reliability of the runner agent as real processes (RELIABILITY.md scenarios 2, 5, 6, 7, 13 and logs).

Every test runs a real `ikoma serve` and real `python -m ikoma runner` processes on SQLite and on
PostgreSQL, with short timings. Steps that outlive a SIGKILLed runner carry a unique marker argument
and are killed by it at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = [pytest.mark.e2e]

FAST_RECONCILER = {"IKOMA_STALE_AFTER": "3", "IKOMA_CLAIM_LEASE": "6", "IKOMA_RECONCILE_INTERVAL": "0.5"}
# Appends one line per execution to argv[1], prints the execution number, then sleeps 30 s on the first
# execution only: a retried order finishes at once, and the file counts how often the step really ran.
RUN_COUNTER = (
    "import sys, time\n"
    "with open(sys.argv[1], 'a') as f: f.write('run\\n')\n"
    "n = len(open(sys.argv[1]).read().split())\n"
    "print(f'execution {n}', flush=True)\n"
    "time.sleep(30 if n == 1 else 0)\n"
)


def _kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose argv holds `marker` (steps orphaned by a SIGKILLed runner)."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _runs(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _wait_runs(path: Path, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _runs(path) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _runs(path) >= count, f"{path} shows {_runs(path)} executions, wanted {count}"


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique argv marker for the test's steps; whatever still carries it at teardown is killed."""
    value = f"ikoma-reliability-{uuid.uuid4().hex}"
    yield value
    _kill_marked(value)


@contextlib.contextmanager
def _fleet(database_url: str, workdir: Path, env: dict[str, str] | None = None) -> Iterator[Fleet]:
    server = support.LiveServer(database_url=database_url, data_dir=workdir / "data", extra_env=env or {})
    server.start()
    fleet: Fleet | None = None
    try:
        fleet = attach_fleet(server, workdir)
        yield fleet
    finally:
        if fleet is not None:
            fleet.stop_runners()
        server.stop()


def _counter_argv(runs: Path, marker: str) -> list[str]:
    return [sys.executable, "-c", RUN_COUNTER, str(runs), marker]


def _transitions(events: list[dict[str, Any]]) -> list[tuple[str | None, str, str]]:
    return [(e["fromStatus"], e["toStatus"], e["reason"]) for e in events]


# ---- logs -----------------------------------------------------------------------------------------


def test_ten_thousand_lines_arrive_complete_and_in_order(server_database_url: str, tmp_path: Path) -> None:
    with _fleet(server_database_url, tmp_path) as fleet:
        fleet.start_runner()
        program = "for i in range(10000): print(f'line {i}')"
        order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", program]})
        items, last = fleet.read_logs(order_id, limit=1000, wait=1)  # follows while the step runs

        assert fleet.get(order_id)["status"] == "SUCCEEDED", fleet.runner_log()
        assert [item["seq"] for item in items] == list(range(len(items)))
        stdout = "".join(item["data"] for item in items if item["stream"] == "stdout")
        assert stdout == "".join(f"line {i}\n" for i in range(10000))
        assert {item["stream"] for item in items} == {"stdout", "system"}
        assert items[-1]["stream"] == "system"
        assert "SUCCEEDED" in items[-1]["data"]
        assert last["truncated"] is False

        # small pages of the finished order give the same chunks, once each
        again, _ = fleet.read_logs(order_id, limit=2, wait=0)
        assert again == items


def test_log_cap_ends_with_one_truncation_marker_and_the_order_still_succeeds(
    server_database_url: str, tmp_path: Path
) -> None:
    limit = 20_000
    with _fleet(server_database_url, tmp_path, {"IKOMA_LOG_LIMIT_BYTES": str(limit)}) as fleet:
        fleet.start_runner()
        program = "for i in range(4000): print(f'{i:09d}' + 'x' * 40)"  # 4000 x 50 bytes = 200 kB
        order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", program]})
        done = fleet.wait_status(order_id, {"SUCCEEDED", "FAILED", "TIMEOUT", "STALE"})
        assert done["status"] == "SUCCEEDED", fleet.runner_log()
        assert done["report"]["steps"][0]["exitCode"] == 0

        items, last = fleet.read_logs(order_id, wait=0)
        assert last["truncated"] is True
        assert [item["seq"] for item in items] == list(range(len(items)))
        markers = [item for item in items if "log truncated" in item["data"]]
        assert len(markers) == 1, markers
        assert items[-1] == markers[0]
        assert items[-1]["stream"] == "system"
        assert items[-1]["data"] == f"[log truncated: limit of {limit} bytes reached]"
        kept = items[:-1]
        assert sum(len(item["data"].encode()) for item in kept) <= limit
        stdout = "".join(item["data"] for item in kept if item["stream"] == "stdout")
        assert len(stdout.encode()) <= limit
        # what was kept is the exact beginning of the output: nothing reordered, nothing skipped
        assert "".join(f"{i:09d}" + "x" * 40 + "\n" for i in range(4000)).startswith(stdout)


# ---- scenario 7 -----------------------------------------------------------------------------------


def test_a_heartbeating_runner_is_never_marked_stale(server_database_url: str, tmp_path: Path) -> None:
    with _fleet(server_database_url, tmp_path, FAST_RECONCILER) as fleet:
        fleet.start_runner()
        order_id = fleet.order("shell.exec", {"argv": ["sleep", "8"]})  # 8 s > STALE_AFTER (3 s)
        seen: set[str] = set()
        deadline = time.monotonic() + 25
        order = fleet.get(order_id)
        while order["status"] in ("QUEUED", "CLAIMED", "RUNNING") and time.monotonic() < deadline:
            seen.add(order["status"])
            time.sleep(0.2)
            order = fleet.get(order_id)
        seen.add(order["status"])

        assert order["status"] == "SUCCEEDED", (order, fleet.runner_log())
        assert "STALE" not in seen
        assert order["report"]["steps"][0]["durationMs"] >= 8000
        events = fleet.events(order_id)
        assert "STALE" not in {e["toStatus"] for e in events}, _transitions(events)
        assert all(e["actor"] != "reconciler" for e in events), _transitions(events)
        assert order["attempt"] == 1
        assert [a["outcome"] for a in order["attempts"]] == ["SUCCEEDED"]


# ---- scenarios 2 and 5 ----------------------------------------------------------------------------


def test_sigkilled_runner_never_reruns_a_one_attempt_order_but_retries_a_three_attempt_one(
    server_database_url: str, tmp_path: Path, marker: str
) -> None:
    with _fleet(server_database_url, tmp_path, FAST_RECONCILER) as fleet:
        first = fleet.start_runner("first", parallel=2)
        once_runs, retry_runs = tmp_path / "once.runs", tmp_path / "retry.runs"
        once = fleet.order("shell.exec", {"argv": _counter_argv(once_runs, marker)})  # playbook's 1 attempt
        retry = fleet.order("shell.exec", {"argv": _counter_argv(retry_runs, marker)}, maxAttempts=3)
        assert fleet.get(once)["maxAttempts"] == 1
        _wait_runs(once_runs, 1)
        _wait_runs(retry_runs, 1)
        fleet.wait_status(once, {"RUNNING"})
        fleet.wait_status(retry, {"RUNNING"})

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        fleet.start_runner("fresh")  # alive from now on: it takes whatever is requeued

        stale = fleet.wait_status(once, {"STALE", "QUEUED", "CLAIMED"}, timeout=15)
        assert stale["status"] == "STALE"
        assert stale["statusReason"] == "heartbeat_lost"
        requeued = fleet.wait_status(retry, {"QUEUED", "STALE", "FAILED"}, timeout=15)
        assert requeued["status"] == "QUEUED"
        assert requeued["attempt"] == 1
        assert [(a["attempt"], a["outcome"], a["reason"]) for a in requeued["attempts"]] == [
            (1, "STALE", "heartbeat_lost")
        ]

        done = fleet.wait_status(retry, {"SUCCEEDED", "FAILED", "STALE"}, timeout=20)
        assert done["status"] == "SUCCEEDED", fleet.runner_log("fresh")
        assert done["attempt"] == 2
        assert _runs(retry_runs) == 2
        # the lost attempt stays recorded as it was lost, never rewritten
        assert [(a["attempt"], a["outcome"]) for a in done["attempts"]] == [(1, "STALE"), (2, "SUCCEEDED")]
        assert _transitions(fleet.events(retry)) == [
            (None, "QUEUED", "created"),
            ("QUEUED", "CLAIMED", "claimed"),
            ("CLAIMED", "RUNNING", "started"),
            ("RUNNING", "STALE", "heartbeat_lost"),
            ("STALE", "QUEUED", "retry"),
            ("QUEUED", "CLAIMED", "claimed"),
            ("CLAIMED", "RUNNING", "started"),
            ("RUNNING", "SUCCEEDED", "completed"),
        ]

        # the retry's backoff, claim and run took several reconcile ticks, with a live runner waiting
        # for work the whole time: the one-attempt order is still STALE and ran once
        after = fleet.get(once)
        assert after["status"] == "STALE"
        assert after["attempt"] == 1
        assert [(a["attempt"], a["outcome"]) for a in after["attempts"]] == [(1, "STALE")]
        assert _runs(once_runs) == 1
        assert "QUEUED" not in {e["toStatus"] for e in fleet.events(once)[1:]}
        # both first executions died with the SIGKILLed runner (scenario 23): no orphan is left
        assert _kill_marked(marker) == []


# ---- scenario 6 -----------------------------------------------------------------------------------


def test_cancel_while_the_runner_is_dead_ends_cancelled_never_requeued(
    server_database_url: str, tmp_path: Path, marker: str
) -> None:
    with _fleet(server_database_url, tmp_path, FAST_RECONCILER) as fleet:
        runner = fleet.start_runner()
        runs = tmp_path / "cancel.runs"
        order_id = fleet.order("shell.exec", {"argv": _counter_argv(runs, marker)}, maxAttempts=3)
        _wait_runs(runs, 1)
        fleet.wait_status(order_id, {"RUNNING"})
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)

        with fleet.server.admin() as admin:
            response = admin.post(f"/v1/orders/{order_id}/cancel", json={"reason": "runner is gone"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "RUNNING"
        assert response.json()["cancelRequested"] is True
        fleet.start_runner("fresh")  # a live runner that would take the order if it were requeued

        done = fleet.wait_status(order_id, {"CANCELLED", "QUEUED", "STALE"}, timeout=15)
        assert done["status"] == "CANCELLED"
        assert done["statusReason"] == "heartbeat_lost"

        time.sleep(1)  # two more reconcile ticks
        order = fleet.get(order_id)
        assert order["status"] == "CANCELLED"
        assert order["attempt"] == 1
        assert [(a["attempt"], a["outcome"]) for a in order["attempts"]] == [(1, "CANCELLED")]
        assert _runs(runs) == 1
        events = fleet.events(order_id)
        assert _transitions(events) == [
            (None, "QUEUED", "created"),
            ("QUEUED", "CLAIMED", "claimed"),
            ("CLAIMED", "RUNNING", "started"),
            ("RUNNING", "RUNNING", "cancel_requested"),
            ("RUNNING", "CANCELLED", "heartbeat_lost"),
        ]


# ---- scenario 13 ----------------------------------------------------------------------------------


def _spooled_while_the_api_is_down(fleet: Fleet, runner: subprocess.Popen[bytes]) -> tuple[str, Path]:
    """An order whose step ends during an API outage; the runner is then SIGKILLed with it spooled."""
    order_id = fleet.order("shell.exec", {"argv": ["sleep", "2"]})
    fleet.wait_status(order_id, {"RUNNING"})
    fleet.server.stop()
    spooled = fleet.workdir / "state" / "spool" / f"{order_id}.json"
    deadline = time.monotonic() + 15
    while not spooled.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spooled.exists(), fleet.runner_log()
    assert json.loads(spooled.read_text())["status"] == "SUCCEEDED"
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    return order_id, spooled


def _wait_gone(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not path.exists(), f"{path} still spooled"


def test_runner_restarted_during_an_outage_delivers_its_spooled_completion_once_even_after_stale(
    server_database_url: str, tmp_path: Path
) -> None:
    """Scenario 13 across a runner restart: the spool on disk outlives the process and the outage.

    The restarted runner is paused (SIGSTOP) while the API comes back, so the reconciler marks the
    silent order STALE first: the spooled report is then accepted once, as a late completion.
    """
    with _fleet(server_database_url, tmp_path, FAST_RECONCILER) as fleet:
        order_id, spooled = _spooled_while_the_api_is_down(fleet, fleet.start_runner())
        second = fleet.start_runner("second")  # restarted while the API is still down
        deadline = time.monotonic() + 15
        while "completion not delivered" not in fleet.runner_log("second") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "completion not delivered" in fleet.runner_log("second")
        assert spooled.exists()
        second.send_signal(signal.SIGSTOP)
        try:
            fleet.server.start()
            assert fleet.wait_status(order_id, {"STALE", "QUEUED"}, timeout=15)["status"] == "STALE"
        finally:
            second.send_signal(signal.SIGCONT)
        done = fleet.wait_status(order_id, {"SUCCEEDED", "FAILED"}, timeout=15)
        assert done["status"] == "SUCCEEDED", fleet.runner_log("second")
        assert done["statusReason"] == "late_completion"
        assert done["report"]["steps"][0]["exitCode"] == 0
        _wait_gone(spooled)
        time.sleep(1)  # one more spool retry interval: nothing is delivered twice
        events = fleet.events(order_id)
        assert [e["toStatus"] for e in events].count("SUCCEEDED") == 1, _transitions(events)
        assert _transitions(events)[-2:] == [
            ("RUNNING", "STALE", "heartbeat_lost"),
            ("STALE", "SUCCEEDED", "late_completion"),
        ]
        assert fleet.get(order_id)["attempt"] == 1


def test_a_result_is_on_disk_before_the_runner_waits_on_an_unreachable_api(
    server_database_url: str, tmp_path: Path
) -> None:
    """Flushing logs to a dead API retries for seconds; a crash meanwhile must not lose the result."""
    with _fleet(server_database_url, tmp_path, FAST_RECONCILER) as fleet:
        runner = fleet.start_runner()
        finished = tmp_path / "step-finished"
        script = "import pathlib, sys, time; time.sleep(1); pathlib.Path(sys.argv[1]).write_text('x')"
        order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", script, str(finished)]})
        fleet.wait_status(order_id, {"RUNNING"})
        fleet.server.stop()
        deadline = time.monotonic() + 15
        while not finished.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert finished.exists(), fleet.runner_log()
        time.sleep(1)  # well inside the log flush's retries (~7.5 s against a refused connection)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        spooled = fleet.workdir / "state" / "spool" / f"{order_id}.json"
        assert spooled.exists(), fleet.runner_log()
        assert json.loads(spooled.read_text())["status"] == "SUCCEEDED"
