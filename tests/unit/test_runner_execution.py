"""Step execution: process groups die whole, timeouts and cancels end steps, argv and env stay clean."""

# ruff: noqa: ASYNC109, ASYNC110, ASYNC240 - polling helpers on tmp files and pids are the point here

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from ikoma.runner.execution import CANCELLED, TIMEOUT, ExecutionContext, child_env
from ikoma.runner.logs import Masker
from ikoma.runner.playbooks import REGISTRY

HOSTILE = [
    "; touch pwned",
    "$(touch pwned)",
    "`touch pwned`",
    "'single' \"double\"",
    "line1\nline2",
    "-rf",
    "--help",
    "* ? [a]",
    "| cat > pwned &&",
]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _wait_for_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def _group_gone(pgid: int, timeout: float = 5.0) -> bool:
    # an orphaned member is reaped by init, not by us: give it a moment to disappear
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_cancel_kills_the_whole_group_including_a_grandchild(tmp_path: Path) -> None:
    ctx = ExecutionContext(order_id="o", params={}, kill_grace=1.0)
    script = f"echo $$ > {tmp_path}/leader; sleep 300 & echo $! > {tmp_path}/grandchild; wait"
    task = asyncio.create_task(ctx.run_step("s", ["sh", "-c", script]))
    pgid = int(await _wait_for_file(tmp_path / "leader"))
    grandchild = int(await _wait_for_file(tmp_path / "grandchild"))
    ctx.request_stop(CANCELLED)
    result = await asyncio.wait_for(task, 15)
    assert result.status == "CANCELLED"
    assert await _group_gone(pgid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert _gone(grandchild)


async def test_a_leader_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ctx = ExecutionContext(order_id="o", params={}, kill_grace=0.5)
    code = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '300'])\n"
        f"open({str(tmp_path / 'leader')!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    task = asyncio.create_task(ctx.run_step("s", [sys.executable, "-c", code]))
    pgid = int(await _wait_for_file(tmp_path / "leader"))
    started = time.monotonic()
    ctx.request_stop(CANCELLED)
    result = await asyncio.wait_for(task, 15)
    assert result.status == "CANCELLED"
    assert result.exit_code == -9  # SIGTERM was ignored: only SIGKILL ended it
    assert time.monotonic() - started >= 0.5
    assert await _group_gone(pgid)


async def test_order_timeout_stops_the_step_and_skips_the_next(tmp_path: Path) -> None:
    ctx = ExecutionContext(order_id="o", params={}, timeout_seconds=1.0, kill_grace=0.5)
    started = time.monotonic()
    first = await ctx.run_step("sleep", ["sleep", "30"])
    second = await ctx.run_step("after", ["true"])
    assert first.status == TIMEOUT
    assert time.monotonic() - started < 10
    assert ctx.stop_reason == TIMEOUT
    assert second.status == "SKIPPED"


async def test_step_time_limit_gives_a_timeout_step() -> None:
    ctx = ExecutionContext(order_id="o", params={}, kill_grace=0.5)
    result = await ctx.run_step("sleep", ["sleep", "30"], time_limit=0.5)
    assert result.status == TIMEOUT
    assert ctx.stop_reason is None  # a step's own limit does not end the order's time


async def test_environment_carries_no_runner_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IKOMA_RUNNER_TOKEN", "ikr_secret_value")
    monkeypatch.setenv("IKOMA_API_URL", "http://x")
    monkeypatch.setenv("SOME_OTHER_SECRET", "nope")
    ctx = ExecutionContext(order_id="o", params={})
    result = await ctx.run_step(
        "env", [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    )
    env = json.loads(result.output)
    assert not [k for k in env if k.startswith("IKOMA_")]
    assert "ikr_secret_value" not in result.output
    assert "SOME_OTHER_SECRET" not in env
    assert env["LANG"] == "C.UTF-8"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["PATH"] == os.environ["PATH"]
    assert "IKOMA_RUNNER_TOKEN" not in child_env({"IKOMA_RUNNER_TOKEN": "x", "PATH": "/bin"})


async def test_shell_exec_passes_hostile_argv_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ctx = ExecutionContext(order_id="o", params={})
    argv = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *HOSTILE]
    result = await REGISTRY["shell.exec"](ctx, {"argv": argv})
    assert result.steps[0].status == "SUCCEEDED"
    assert json.loads(result.steps[0].output) == HOSTILE
    assert not list(tmp_path.iterdir())  # nothing was interpreted: no file `pwned` anywhere


async def test_missing_program_fails_with_127() -> None:
    ctx = ExecutionContext(order_id="o", params={})
    result = await ctx.run_step("x", ["/nonexistent/program-ikoma"])
    assert result.status == "FAILED"
    assert result.exit_code == 127


async def test_background_leftovers_do_not_outlive_a_finished_step(tmp_path: Path) -> None:
    ctx = ExecutionContext(order_id="o", params={}, kill_grace=1.0)
    script = f"sleep 300 & echo $! > {tmp_path}/bg; echo done"
    started = time.monotonic()
    result = await ctx.run_step("s", ["sh", "-c", script])
    assert result.status == "SUCCEEDED"
    assert "done" in result.output
    assert time.monotonic() - started < 10
    background = int((tmp_path / "bg").read_text())
    deadline = time.monotonic() + 5
    while not _gone(background) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert _gone(background)


async def test_output_is_masked_and_ping_reports_data() -> None:
    params = {"message": "hello", "apiKey": "s3cr3t-value"}
    ctx = ExecutionContext(order_id="o", params=params, masker=Masker.for_params(params))
    step = await ctx.run_step("echo", ["echo", "token is s3cr3t-value"])
    assert step.output == "token is ***\n"
    result = await REGISTRY["system.test_ping"](ctx, {"message": "hello"})
    data = result.steps[0].data
    assert result.steps[0].status == "SUCCEEDED"
    assert data is not None
    assert data["message"] == "hello"
    assert {"hostname", "pid", "startedAt"} <= set(data)
