"""The runner agent as a real process (`python -m ikoma runner`) against a real server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes, support
from tests.e2e.fleet import Fleet, attach_fleet, kill, unique

pytestmark = [pytest.mark.e2e]

HOSTILE = ["; touch pwned", "$(touch pwned)", "`touch pwned`", "'q' \"qq\"", "a\nb", "-rf", "--help"]
PID_SCRIPT = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(30)"


def _wait_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fleet(shared_server: support.LiveServer, tmp_path: Path) -> Fleet:
    """On the module's server (one per backend): a server and runner of the test's own."""
    return attach_fleet(shared_server, tmp_path, unique("web"))


@pytest.fixture
def runner(fleet: Fleet) -> Iterator[subprocess.Popen[bytes]]:
    proc = fleet.start_runner()
    yield proc
    kill(proc)


@pytest.fixture
def private_fleet(live_server: support.LiveServer, tmp_path: Path) -> Fleet:
    """On a server of the test's own, for a test that stops and restarts the API."""
    return attach_fleet(live_server, tmp_path)


@pytest.fixture
def private_runner(private_fleet: Fleet) -> Iterator[subprocess.Popen[bytes]]:
    proc = private_fleet.start_runner()
    yield proc
    kill(proc)


def test_ping_and_hostile_argv_reach_succeeded_with_v2_reports(
    fleet: Fleet, runner: subprocess.Popen[bytes]
) -> None:
    ping = fleet.order("system.test_ping", {"message": "hello runner"})
    argv = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *HOSTILE]
    hostile = fleet.order("shell.exec", {"argv": argv})

    done = fleet.wait_status(ping, {"SUCCEEDED", "FAILED"})
    assert done["status"] == "SUCCEEDED", fleet.runner_log()
    report = done["report"]
    assert report["version"] == "v2"
    assert set(report) == {"version", "summary", "durationMs", "steps", "errors"}
    step = report["steps"][0]
    assert step["status"] == "SUCCEEDED"
    assert step["data"]["message"] == "hello runner"
    assert {"hostname", "pid", "startedAt"} <= set(step["data"])

    done = fleet.wait_status(hostile, {"SUCCEEDED", "FAILED"})
    assert done["status"] == "SUCCEEDED", fleet.runner_log()
    assert json.loads(done["report"]["steps"][0]["output"]) == HOSTILE

    with fleet.server.admin() as admin:
        me = next(r for r in admin.get("/v1/runners").json() if r["id"] == fleet.runner_id)
    assert me["online"] is True
    assert {"system.test_ping", "shell.exec"} <= set(me["capabilities"])


def test_cancel_of_a_running_order_kills_its_process(
    fleet: Fleet, runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", PID_SCRIPT, str(pid_file)]})
    pid = int(_wait_file(pid_file))
    fleet.wait_status(order_id, {"RUNNING"})
    with fleet.server.admin() as admin:
        assert admin.post(f"/v1/orders/{order_id}/cancel", json={"reason": "test"}).status_code == 200
    started = time.monotonic()
    done = fleet.wait_status(order_id, {"CANCELLED", "SUCCEEDED", "FAILED"}, timeout=15)
    assert done["status"] == "CANCELLED", fleet.runner_log()
    assert time.monotonic() - started < 15
    assert _gone(pid)
    assert done["report"]["steps"][0]["status"] == "CANCELLED"


def test_sigterm_drains_the_running_order_and_exits_0(fleet: Fleet, runner: subprocess.Popen[bytes]) -> None:
    order_id = fleet.order("shell.exec", {"argv": ["sleep", "3"]})
    fleet.wait_status(order_id, {"RUNNING"})
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == 0, fleet.runner_log()
    assert fleet.get(order_id)["status"] == "SUCCEEDED"
    # drained: a new order is not claimed by the stopped runner
    later = fleet.order("system.test_ping", {})
    time.sleep(1)
    assert fleet.get(later)["status"] == "QUEUED"


def test_runner_killed_mid_order_leaves_it_stale(server_database_url: str, tmp_path: Path) -> None:
    server = support.LiveServer(
        database_url=server_database_url,
        data_dir=tmp_path / "data",
        extra_env={"IKOMA_STALE_AFTER": "3", "IKOMA_CLAIM_LEASE": "6", "IKOMA_RECONCILE_INTERVAL": "0.5"},
    )
    server.start()
    pid_file = tmp_path / "child.pid"
    proc: subprocess.Popen[bytes] | None = None
    try:
        fleet = attach_fleet(server, tmp_path)
        proc = fleet.start_runner()
        argv = [sys.executable, "-c", PID_SCRIPT, str(pid_file)]
        order_id = fleet.order("shell.exec", {"argv": argv}, maxAttempts=1)
        fleet.wait_status(order_id, {"RUNNING"})
        _wait_file(pid_file)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        done = fleet.wait_status(order_id, {"STALE", "QUEUED"}, timeout=20)
        assert done["status"] == "STALE"
    finally:
        if proc is not None:
            kill(proc)
        if pid_file.exists():
            # SIGKILL gave the runner no chance to stop its step: the orphan is the test's to clean
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        server.stop()


def test_step_output_is_streamed_to_the_order_logs(fleet: Fleet, runner: subprocess.Popen[bytes]) -> None:
    order_id = fleet.order("shell.exec", {"argv": ["sh", "-c", "echo out-line; echo err-line >&2"]})
    assert fleet.wait_status(order_id, {"SUCCEEDED", "FAILED"})["status"] == "SUCCEEDED"
    with fleet.server.admin() as admin:
        response = admin.get(f"/v1/orders/{order_id}/logs", params={"afterSeq": -1})
    items = response.json()["items"]
    assert [item["seq"] for item in items] == list(range(len(items)))
    by_stream = {(item["stream"], item["data"]) for item in items}
    assert ("stdout", "out-line\n") in by_stream
    assert ("stderr", "err-line\n") in by_stream


def test_completion_survives_an_api_outage_through_the_spool(
    private_fleet: Fleet, private_runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    fleet = private_fleet
    order_id = fleet.order("shell.exec", {"argv": ["sleep", "2"]})
    fleet.wait_status(order_id, {"RUNNING"})
    fleet.server.stop()
    spooled = tmp_path / "state" / "spool" / f"{order_id}.json"
    _wait_file(spooled, timeout=15)  # the step ended while the API was down: the report waits on disk
    assert json.loads(spooled.read_text())["status"] == "SUCCEEDED"
    fleet.server.start()
    assert fleet.wait_status(order_id, {"SUCCEEDED", "FAILED"}, timeout=20)["status"] == "SUCCEEDED"
    deadline = time.monotonic() + 5
    while spooled.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not spooled.exists()


def test_second_sigterm_kills_the_running_step_and_exits_1(
    fleet: Fleet, runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", PID_SCRIPT, str(pid_file)]})
    pid = int(_wait_file(pid_file))
    fleet.wait_status(order_id, {"RUNNING"})
    runner.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=15) == 1, fleet.runner_log()
    assert _gone(pid)


def test_register_writes_private_credentials_the_agent_can_use(
    shared_server: support.LiveServer, tmp_path: Path
) -> None:
    live_server = shared_server
    with live_server.admin() as admin:
        response = admin.post("/v1/runner-bootstrap-tokens", json={"name": "boot-1", "expiresInSeconds": 600})
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    config = tmp_path / "runner.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    argv = [sys.executable, "-m", "ikoma", "runner", "register", "--api-url", live_server.url]
    argv += ["--bootstrap-token", token, "--config", str(config)]
    first = processes.run(argv, env=env, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    again = processes.run(argv, env=env, text=True, timeout=60)
    assert again.returncode == 1  # one-time token
    agent = processes.spawn(
        [
            sys.executable,
            "-m",
            "ikoma",
            "runner",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "st"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        online = False
        while not online and time.monotonic() < deadline:
            time.sleep(0.2)
            with live_server.admin() as admin:
                online = any(r["name"] == "boot-1" and r["online"] for r in admin.get("/v1/runners").json())
        assert online
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0
    finally:
        kill(agent)
