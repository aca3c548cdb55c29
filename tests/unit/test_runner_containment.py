"""Containment of steps with real processes: forks, `setsid` grandchildren, double-forked daemons and
SIGTERM-deaf processes all die on cancel, on timeout, at the step's end and with a SIGKILLed runner.

Every test runs in both modes where the host allows: `cgroup` (a cgroup v2 leaf per step, when the
runner may write its cgroup: root on CI) and `session` (the fallback sweep of session, cookie and
descendants). Every pid a test's steps write is SIGKILLed at teardown, whatever happened.
"""

# ruff: noqa: ASYNC109, ASYNC240, ASYNC251 - real processes and /proc, polled with plain sleeps

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ikoma.runner import cgroups, containment
from ikoma.runner.config import ConfigError, containment_mode
from ikoma.runner.containment import Containment
from ikoma.runner.execution import CANCELLED, TIMEOUT, ExecutionContext

# A step whose leader and plain fork ignore SIGTERM, with a `setsid` grandchild and a double-forked
# daemon. It appends every pid to argv[1] and touches argv[1] + ".ready" once all four are written.
TREE = """
import os, signal, subprocess, sys, time
pids = sys.argv[1]
def note(pid):
    with open(pids, 'a') as f:
        f.write(f'{pid}\\n')
signal.signal(signal.SIGTERM, signal.SIG_IGN)
note(os.getpid())
if os.fork() == 0:
    note(os.getpid())
    time.sleep(300)
    os._exit(0)
grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)
note(grandchild.pid)
if os.fork() == 0:
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    note(os.getpid())
    time.sleep(300)
    os._exit(0)
while len(open(pids).read().split()) < 4:
    time.sleep(0.01)
open(pids + '.ready', 'w').close()
if len(sys.argv) < 3:
    time.sleep(300)
"""

# A stand-in for a runner: one step of TREE under a containment with records in a state dir.
RUNNER = """
import asyncio, sys
from pathlib import Path
from ikoma.runner.containment import Containment
from ikoma.runner.execution import ExecutionContext

async def main():
    c = Containment.create(sys.argv[1], Path(sys.argv[2]))
    ctx = ExecutionContext('o', {}, containment=c)
    await ctx.run_step('tree', [sys.executable, '-c', sys.argv[3], sys.argv[4]])

asyncio.run(main())
"""

MODES = [
    containment.SESSION,
    pytest.param(
        containment.CGROUP,
        marks=pytest.mark.skipif(cgroups.probe() is None, reason="needs a writable cgroup v2 (root)"),
    ),
]


def _alive(pid: int) -> bool:
    return containment._stat(pid) is not None  # a zombie is dead: only its parent's wait is missing


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _all_dead(pids: list[int]) -> bool:
    return _wait(lambda: not any(_alive(pid) for pid in pids))


async def _ready(pids: Path, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not Path(f"{pids}.ready").exists():
        assert time.monotonic() < deadline, "the step never got its processes up"
        await asyncio.sleep(0.05)
    return [int(line) for line in pids.read_text().split()]


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pids"
    yield path
    for line in path.read_text().split() if path.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line), signal.SIGKILL)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_kills_forks_setsid_grandchildren_and_daemons_that_ignore_sigterm(
    mode: str, pids: Path
) -> None:
    ctx = ExecutionContext("o", {}, kill_grace=0.5, containment=Containment.create(mode))
    task = asyncio.create_task(ctx.run_step("tree", [sys.executable, "-c", TREE, str(pids)]))
    tree = await _ready(pids)
    assert len(tree) == 4
    assert all(_alive(pid) for pid in tree)
    ctx.request_stop(CANCELLED)
    result = await asyncio.wait_for(task, 30)
    assert result.status == CANCELLED
    assert result.exit_code == -signal.SIGKILL  # the leader ignored SIGTERM: only SIGKILL ended it
    assert _all_dead(tree), [pid for pid in tree if _alive(pid)]


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_timeout_kills_its_whole_tree(mode: str, pids: Path) -> None:
    ctx = ExecutionContext("o", {}, kill_grace=0.5, containment=Containment.create(mode))
    task = asyncio.create_task(ctx.run_step("tree", [sys.executable, "-c", TREE, str(pids)], time_limit=3))
    tree = await _ready(pids)
    result = await asyncio.wait_for(task, 30)
    assert result.status == TIMEOUT
    assert _all_dead(tree), [pid for pid in tree if _alive(pid)]


@pytest.mark.parametrize("mode", MODES)
async def test_a_step_that_ends_on_its_own_leaves_no_daemon_behind(mode: str, pids: Path) -> None:
    ctx = ExecutionContext("o", {}, kill_grace=0.5, containment=Containment.create(mode))
    result = await ctx.run_step("tree", [sys.executable, "-c", TREE, str(pids), "exit"])
    assert result.status == "SUCCEEDED"
    tree = [int(line) for line in pids.read_text().split()]
    assert len(tree) == 4
    assert _all_dead(tree), [pid for pid in tree if _alive(pid)]


@pytest.mark.skipif(cgroups.probe() is None, reason="needs a writable cgroup v2 (root)")
async def test_in_a_cgroup_even_a_daemon_that_drops_its_environment_dies(pids: Path) -> None:
    """`setsid env -i` after its parent exited is what the session sweep cannot see; the leaf can."""
    code = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(['sleep', '300'], start_new_session=True, env={})\n"
        "open(sys.argv[1], 'w').write(f'{p.pid}\\n')\n"
    )
    ctx = ExecutionContext("o", {}, containment=Containment.create(containment.CGROUP))
    result = await ctx.run_step("escape", [sys.executable, "-c", code, str(pids)])
    assert result.status == "SUCCEEDED"
    assert _all_dead([int(pids.read_text())])


@pytest.mark.parametrize("mode", MODES)
async def test_a_daemon_that_detaches_itself_outlives_its_step(mode: str, pids: Path) -> None:
    """The app supervisor's way out (apps/supervisor.py): leave the leaf, re-exec without the cookie."""
    code = (
        "import os, sys\n"
        "from ikoma.runner.containment import detach_self\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() != 0:\n"
        "        os._exit(0)\n"
        "    open(sys.argv[1], 'w').write(f'{os.getpid()}\\n')\n"
        "    os.execve('/bin/sleep', ['sleep', '300'], detach_self(os.environ))\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    pass\n"
    )
    ctx = ExecutionContext("o", {}, containment=Containment.create(mode))
    result = await ctx.run_step("detach", [sys.executable, "-c", code, str(pids)])
    assert result.status == "SUCCEEDED", result.output
    daemon = int(pids.read_text())
    time.sleep(1)  # the step's clean-up is over; the daemon is still there
    assert _alive(daemon)


def _runner(mode: str, state: Path, pids: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", RUNNER, mode, str(state), TREE, str(pids)]
    return subprocess.Popen(argv, start_new_session=True)


def _watchdog_of(runner: subprocess.Popen[bytes]) -> int:
    for proc in containment.processes().values():
        if proc.ppid == runner.pid:
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            if b"watch" in argv:
                return proc.pid
    raise AssertionError("the runner has no watchdog")


@pytest.mark.parametrize("mode", MODES)
async def test_a_sigkilled_runner_takes_all_its_step_processes_with_it(
    mode: str, pids: Path, tmp_path: Path
) -> None:
    runner = _runner(mode, tmp_path / "state", pids)
    try:
        tree = await _ready(pids)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        assert _all_dead(tree), [pid for pid in tree if _alive(pid)]
        # the watchdog cleaned up after itself: no record, no leaf left
        assert _wait(lambda: not list((tmp_path / "state" / "containment").iterdir()))
    finally:
        runner.kill()
        runner.wait(timeout=10)


@pytest.mark.parametrize("mode", MODES)
async def test_a_starting_runner_kills_what_a_dead_runner_and_watchdog_left(
    mode: str, pids: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    runner = _runner(mode, state, pids)
    try:
        tree = await _ready(pids)
        os.kill(_watchdog_of(runner), signal.SIGKILL)
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        time.sleep(0.5)
        survivors = [pid for pid in tree if _alive(pid)]
        assert len(survivors) == 3  # only the leader died with the runner (PR_SET_PDEATHSIG)
        assert containment.sweep_leftovers(state) == 3
        assert _all_dead(tree)
        assert not list((state / "containment").iterdir())
    finally:
        runner.kill()
        runner.wait(timeout=10)


def test_a_live_runner_sharing_the_state_dir_keeps_its_steps(tmp_path: Path) -> None:
    live = Containment.create(containment.SESSION, tmp_path)
    assert live.records is not None
    (live.records / "someone.json").write_text('{"cookie": "not-a-running-step"}')
    try:
        assert containment.sweep_leftovers(tmp_path) == 0
        assert (live.records / "someone.json").exists()
    finally:
        live.close()


def test_containment_mode_is_validated() -> None:
    assert containment_mode({}) == "auto"
    assert containment_mode({"IKOMA_RUNNER_CONTAINMENT": "session"}) == "session"
    with pytest.raises(ConfigError, match="IKOMA_RUNNER_CONTAINMENT"):
        containment_mode({"IKOMA_RUNNER_CONTAINMENT": "docker"})
