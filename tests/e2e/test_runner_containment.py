"""Containment with a real `ikoma serve` and real `ikoma runner` processes (RELIABILITY.md scenario 23,
and the "whole tree within 10 s" part of scenario 6).

The step forks, starts a `setsid` grandchild and a double-forked daemon, ignores SIGTERM and writes
every pid to a file. Containment does not depend on the database: these run on SQLite only (the
delivery side of scenarios 2 and 6 runs on both backends in test_runner_reliability.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ikoma.runner import cgroups
from tests import support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = [pytest.mark.e2e]

FAST_RECONCILER = {"IKOMA_STALE_AFTER": "3", "IKOMA_CLAIM_LEASE": "6", "IKOMA_RECONCILE_INTERVAL": "0.5"}
# argv: <pids file> <overlap file>. The first execution builds the tree and sleeps; a later one writes
# to the overlap file which of the first execution's processes are still alive (none, we expect).
STEP = """
import os, signal, subprocess, sys, time
pids, overlap = sys.argv[1], sys.argv[2]
def alive(pid):
    try:
        return open(f'/proc/{pid}/stat').read().rpartition(')')[2].split()[0] not in 'ZX'
    except OSError:
        return False
if os.path.exists(pids):
    with open(overlap, 'w') as f:
        f.write(' '.join(line for line in open(pids).read().split() if alive(int(line))) + '\\n')
    sys.exit(0)
def note(pid):
    with open(pids, 'a') as f:
        f.write(f'{pid}\\n')
signal.signal(signal.SIGTERM, signal.SIG_IGN)
note(os.getpid())
if os.fork() == 0:
    note(os.getpid())
    time.sleep(300)
    os._exit(0)
note(subprocess.Popen(['sleep', '300'], start_new_session=True).pid)
if os.fork() == 0:
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    note(os.getpid())
    time.sleep(300)
    os._exit(0)
while len(open(pids).read().split()) < 4:
    time.sleep(0.01)
print('tree up', flush=True)
time.sleep(300)
"""

MODES = [
    "session",
    pytest.param(
        "cgroup",
        marks=pytest.mark.skipif(cgroups.probe() is None, reason="needs a writable cgroup v2 (root)"),
    ),
]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _tree(pids: Path, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [int(line) for line in pids.read_text().split()] if pids.exists() else []
        if len(found) == 4:
            return found
        time.sleep(0.05)
    raise AssertionError(f"the step never started its 4 processes: {pids}")


def _wait_dead(pids: list[int], timeout: float = 30.0) -> list[int]:
    """The pids still alive when every one died or the deadline passed (empty: all dead)."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "step.pids"
    yield path
    for line in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line), signal.SIGKILL)


@contextlib.contextmanager
def _fleet(tmp_path: Path, env: dict[str, str]) -> Iterator[Fleet]:
    server = support.LiveServer(
        database_url=f"sqlite:///{tmp_path / 'server.db'}", data_dir=tmp_path / "data", extra_env=env
    )
    server.start()
    try:
        yield attach_fleet(server, tmp_path)
    finally:
        server.stop()


@contextlib.contextmanager
def _runner(fleet: Fleet, name: str, mode: str, *, fast: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """`ikoma runner` with its own state dir; `fast`: short lease and grace, else the defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    env["IKOMA_RUNNER_CONTAINMENT"] = mode
    argv = [
        sys.executable, "-m", "ikoma", "runner", "--api-url", fleet.server.url,
        "--runner-id", fleet.runner_id, "--token", fleet.token, "--state-dir", str(fleet.workdir / name),
        "--heartbeat-interval", "1", "--claim-wait", "2",
    ]  # fmt: skip
    if fast:
        env["IKOMA_CLAIM_LEASE"] = "3"  # order heartbeats (and cancel checks) every second
        argv += ["--kill-grace", "1"]
    with (fleet.workdir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _log(fleet: Fleet, name: str) -> str:
    return (fleet.workdir / f"{name}.log").read_text(errors="replace")


@pytest.mark.parametrize("mode", MODES)
def test_a_sigkilled_runners_step_tree_dies_and_its_retry_never_runs_beside_it(
    mode: str, tmp_path: Path, pids: Path
) -> None:
    overlap = tmp_path / "overlap"
    with _fleet(tmp_path, FAST_RECONCILER) as fleet:
        argv = [sys.executable, "-c", STEP, str(pids), str(overlap)]
        order_id = fleet.order("shell.exec", {"argv": argv}, maxAttempts=3)
        with _runner(fleet, "first", mode) as first:
            tree = _tree(pids)
            assert all(_alive(pid) for pid in tree)
            fleet.wait_status(order_id, {"RUNNING"})
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            # no other runner has started: the dead runner's watchdog did this
            assert _wait_dead(tree) == [], _log(fleet, "first")

        with _runner(fleet, "second", mode):  # another state dir: nothing left for it to sweep
            done = fleet.wait_status(order_id, {"SUCCEEDED", "FAILED", "STALE", "TIMEOUT"}, timeout=30)
            assert done["status"] == "SUCCEEDED", _log(fleet, "second")
        assert done["attempt"] == 2
        assert [(a["attempt"], a["outcome"]) for a in done["attempts"]] == [(1, "STALE"), (2, "SUCCEEDED")]
        # seen from inside the retried attempt: none of the first attempt's processes was alive
        assert overlap.read_text().split() == []


@pytest.mark.parametrize("mode", MODES)
def test_cancel_with_the_default_timings_kills_the_whole_tree(mode: str, tmp_path: Path, pids: Path) -> None:
    """Default lease heartbeat (cancel seen within 4 s) and kill grace (5 s): cancel → all dead ≤ 10 s."""
    with _fleet(tmp_path, {}) as fleet, _runner(fleet, "runner", mode, fast=False):
        order_id = fleet.order("shell.exec", {"argv": [sys.executable, "-c", STEP, str(pids), "-"]})
        tree = _tree(pids)
        fleet.wait_status(order_id, {"RUNNING"})
        with fleet.server.admin() as admin:
            response = admin.post(f"/v1/orders/{order_id}/cancel", json={"reason": "containment test"})
        assert response.status_code == 200, response.text
        cancelled = time.monotonic()
        assert _wait_dead(tree) == [], _log(fleet, "runner")
        took = time.monotonic() - cancelled
        done = fleet.wait_status(order_id, {"CANCELLED", "FAILED", "SUCCEEDED"}, timeout=30)
        assert done["status"] == "CANCELLED"
        step = done["report"]["steps"][0]
        assert step["exitCode"] == -signal.SIGKILL  # the leader ignored SIGTERM
        print(f"cancel → every process of the step dead: {took:.1f} s ({mode})")
