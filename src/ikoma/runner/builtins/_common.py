"""Helpers shared by the built-in playbooks: finding programs, full-output steps, probe steps.

Programs are resolved here, in the runner, and handed to steps as absolute argv[0]: the step's
environment is cleaned, so tests cannot put fakes first on its PATH, but they can monkeypatch
:func:`which`.  Every playbook module calls ``_common.which`` (never a copy) for that reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ikoma.runner.execution import ExecutionContext, StepResult, child_env

# Unprivileged accounts often lack the sbin directories on PATH, yet `ip` lives in /usr/sbin
# on Debian; the step would find it by absolute path anyway, so look there too.
_SBIN_FALLBACK = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# Runs in a child Python (isolated mode). It copies the command's merged stdout/stderr both to
# its own stdout (so the step's live logs and tail are unchanged) and to a file: the step
# result only keeps a 4 KiB tail, too short for `apt-get -s` or `docker ps` on a real host.
# The command stays in the step's process group, so a cancel or timeout still reaches it.
TEE_SCRIPT = """\
import subprocess, sys
with open(sys.argv[1], "wb") as out:
    proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while chunk := proc.stdout.read1(65536):
        out.write(chunk)
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    code = proc.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


def which(program: str) -> str | None:
    """The absolute path a step would run for `program`, or None when it is not installed."""
    path = os.pathsep.join([child_env()["PATH"], *_SBIN_FALLBACK])
    return shutil.which(program, path=path)


async def find(ctx: ExecutionContext, program: str) -> str | None:
    """`which`, on the machine the context's steps run on: an SSH context (ikoma.ssh.remote) looks on
    the remote machine; a runner's context here."""
    remote = getattr(ctx, "find", None)
    if remote is not None:
        found: str | None = await remote(program)
        return found
    return which(program)


async def run_captured(
    ctx: ExecutionContext, name: str, argv: list[str], *, time_limit: float | None = None
) -> tuple[StepResult, str]:
    """Run a step and also return its whole merged output (not just the reported tail)."""
    remote = getattr(ctx, "run_captured", None)
    if remote is not None:  # an SSH context captures on its own side (ikoma.ssh.remote)
        captured: tuple[StepResult, str] = await remote(name, argv, time_limit=time_limit)
        return captured
    with tempfile.TemporaryDirectory(prefix="ikoma-step-") as tmp:
        capture = Path(tmp) / "output"
        step = await ctx.run_step(
            name, [sys.executable, "-I", "-c", TEE_SCRIPT, str(capture), *argv], time_limit=time_limit
        )
        try:
            text = capture.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # the wrapper never started (or was killed before opening it)
            text = step.output
    return step, text


def tolerate(step: StepResult) -> StepResult:
    """Mark a probe whose non-zero exit is an answer (engine down, `none`) as SUCCEEDED.

    The exit code stays in the report, so nothing is hidden; only the order's status no longer
    treats "docker is not running here" as a failure of the playbook. Timeouts and cancels keep
    their status: those are not answers.
    """
    if step.status == "FAILED":
        step.status = "SUCCEEDED"
    return step


def data_step(ctx: ExecutionContext, name: str, data: dict[str, Any], started: float) -> StepResult:
    """The final step that carries what the playbook collected, masked like the logs."""
    masked = ctx.masker.mask_data(data)
    return StepResult(
        name,
        "SUCCEEDED",
        int((time.monotonic() - started) * 1000),
        data=masked if isinstance(masked, dict) else None,
    )


def not_applicable(reason: str) -> dict[str, Any]:
    return {"applicable": False, "reason": reason}


def read_text(path: str | Path) -> str | None:
    """A small system file's content, or None when it is missing or unreadable (containers, BSDs)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
