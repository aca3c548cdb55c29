"""The test fixtures stop what they start and drop what they create, on every path, failure included.

Issue 9: on a loaded machine a start-up deadline expired and `LiveServer.start` raised without stopping
the server it had started; 87 orphaned servers and six databases made the load worse.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests import processes, support

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# prints 100 numbered lines, then starts a child in its own process group and never answers HTTP
NEVER_READY = (
    "import subprocess, sys, time\n"
    "for i in range(100): print(f'stub line {i}', flush=True)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
    "time.sleep(600)\n"
)


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_exists(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_file(path: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_exists(pid)


def test_a_live_server_start_that_times_out_stops_the_server_before_raising(tmp_path: Path) -> None:
    server = support.LiveServer(database_url=f"sqlite:///{tmp_path / 'server.db'}", data_dir=tmp_path / "d")
    with pytest.raises(processes.StartError, match=r"did not answer .*/readyz within 0s") as raised:
        server.start(timeout=0)  # the deadline has passed before the first poll: the timeout path
    assert server.process is not None
    assert server.process.poll() is not None, "the server outlived its failed start"
    assert not group_exists(server.process.pid)
    assert server.process not in processes.alive()
    assert str(server.log_path) in str(raised.value)


def test_a_live_server_that_exits_at_start_fails_with_its_log(tmp_path: Path) -> None:
    # port 1 is never a PostgreSQL server: `ikoma serve` refuses to start and says why
    server = support.LiveServer(database_url="postgresql://postgres@127.0.0.1:1/ikoma", data_dir=tmp_path)
    with pytest.raises(processes.StartError, match=r"exited with 1") as raised:
        server.start()
    assert "cannot start: migrating the database" in str(raised.value)
    assert server.process is not None
    assert not group_exists(server.process.pid)


def test_a_wait_that_expires_kills_the_whole_group_and_shows_only_the_log_tail(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "stub.log", tmp_path / "child.pid"
    proc = processes.spawn([sys.executable, "-c", NEVER_READY, str(pid_file)], env=os.environ, log_path=log)
    child = int(wait_file(pid_file))  # the stub has logged its 100 lines and started its child
    with pytest.raises(processes.StartError) as raised:
        processes.wait_ready(proc, f"http://127.0.0.1:{support.free_port()}/readyz", log_path=log, timeout=0)
    assert proc.poll() is not None
    assert wait_gone(child), "the stub's child outlived the failed start"
    message = str(raised.value)
    assert "stub line 99" in message  # the tail of the log …
    assert "stub line 0\n" not in message  # … and only the tail
    assert f"[... {100 - processes.LOG_TAIL_LINES} earlier lines ...]" in message


def test_a_command_that_times_out_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 600 & echo $! > {pid_file}; wait"
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run(["sh", "-c", script], timeout=2)
    child = int(wait_file(pid_file))
    assert wait_gone(child), "subprocess.run would have left the background sleep running"


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter that imports the test support, as an xdist worker does."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_XDIST_WORKER": "cleanup"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_process_left_running_is_killed_when_the_test_process_exits(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from tests import processes\n"
        "proc = processes.spawn(['sleep', '600'], env=os.environ)\n"
        "print(proc.pid)\n"  # and exits without stopping it: the exit's safety net must
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert wait_gone(int(done.stdout)), "a process the tests started outlived them"


def test_a_process_left_running_dies_with_a_test_process_that_is_sigkilled(tmp_path: Path) -> None:
    code = (
        "import os, sys, time\n"
        "from tests import processes\n"
        "proc = processes.spawn(['sleep', '600'], env=os.environ)\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()  # no clean-up code runs: only the kernel can stop the child now
        parent.wait(timeout=30)
        assert wait_gone(child), "a process the tests started outlived a SIGKILLed pytest worker"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        if parent.stdout is not None:
            parent.stdout.close()


async def _databases(prefix: str) -> set[str]:
    conn = await asyncpg.connect(support.PG_ADMIN_URL, timeout=5)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%")
    finally:
        await conn.close()
    return {row["datname"] for row in rows}


def test_databases_left_behind_are_dropped_at_exit_but_never_another_workers(tmp_path: Path) -> None:
    support.require_pg()
    others = support.create_pg_database("ikoma_other")  # this process's: the child must not drop it
    try:
        code = (
            "from tests import support\n"
            "print(support.create_pg_database('ikoma_leak'))\n"  # never dropped by the code
        )
        done = _python(code, tmp_path)
        assert done.returncode == 0, done.stderr
        leaked = done.stdout.strip()
        assert leaked.startswith("ikoma_leak_cleanup_")  # named after the worker that made it
        assert asyncio.run(_databases(leaked)) == set()
        assert asyncio.run(_databases(others)) == {others}
    finally:
        support.drop_pg_database(others)


def test_start_timeout_is_generous_and_set_by_ikoma_test_start_timeout(tmp_path: Path) -> None:
    assert processes.START_TIMEOUT >= 180 or "IKOMA_TEST_START_TIMEOUT" in os.environ
    code = "from tests import processes; print(processes.START_TIMEOUT)"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IKOMA_TEST_START_TIMEOUT": "7.5"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "7.5", done.stderr
