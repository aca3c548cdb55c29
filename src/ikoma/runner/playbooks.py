"""The playbooks this runner can run: a registry of key → async function(context, params).

A playbook returns its steps, a summary and errors; the agent turns that into a v2 report.
Add one with `@playbook("key")`; its key is then announced in the runner's capabilities.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ikoma.runner.execution import ExecutionContext, StepResult


@dataclass
class PlaybookResult:
    summary: str
    steps: list[StepResult] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)


Playbook = Callable[[ExecutionContext, dict[str, Any]], Awaitable[PlaybookResult]]

REGISTRY: dict[str, Playbook] = {}


def playbook(key: str) -> Callable[[Playbook], Playbook]:
    def register(func: Playbook) -> Playbook:
        REGISTRY[key] = func
        return func

    return register


def capabilities() -> list[str]:
    return sorted(REGISTRY)


def invalid_params(message: str) -> PlaybookResult:
    return PlaybookResult(
        summary=f"invalid params: {message}", errors=[{"message": message, "code": "invalid_params"}]
    )


def step_errors(steps: list[StepResult]) -> list[dict[str, str]]:
    return [
        {
            "message": f"step {s.name} ended {s.status}" + (f" (exit {s.exit_code})" if s.exit_code else ""),
            "code": f"step_{s.status.lower()}",
            "step": s.name,
        }
        for s in steps
        if s.status not in ("SUCCEEDED", "SKIPPED")
    ]


# Runs in a child Python (isolated mode, no site or env influence); prints one JSON line.
PING_SCRIPT = """\
import datetime, json, os, socket, sys
print(json.dumps({
    "message": sys.argv[1],
    "hostname": socket.gethostname(),
    "pid": os.getpid(),
    "startedAt": datetime.datetime.now(datetime.timezone.utc).isoformat(),
}), flush=True)
"""


@playbook("system.test_ping")
async def test_ping(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    message = params.get("message", "pong")
    if not isinstance(message, str):
        return invalid_params("message must be a string")
    step = await ctx.run_step("ping", [sys.executable, "-I", "-c", PING_SCRIPT, message], time_limit=30)
    if step.status == "SUCCEEDED":
        try:
            data = json.loads(step.output.strip().splitlines()[-1])
            step.data = ctx.masker.mask_data(data) if isinstance(data, dict) else None
        except (ValueError, IndexError):
            step.status = "FAILED"
    summary = f"ping: {ctx.masker(message)}" if step.status == "SUCCEEDED" else f"ping {step.status.lower()}"
    return PlaybookResult(summary=summary, steps=[step], errors=step_errors([step]))


@playbook("shell.exec")
async def shell_exec(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    argv = params.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return invalid_params("argv must be a non-empty list of strings")
    # exactly this argv, no shell: `;`, `$()`, quotes and a leading `-` reach the program as plain bytes
    step = await ctx.run_step("exec", list(argv))
    summary = f"{ctx.masker(argv[0])} ended {step.status}" + (
        f" (exit {step.exit_code})" if step.exit_code is not None else ""
    )
    return PlaybookResult(summary=summary, steps=[step], errors=step_errors([step]))


# At the end on purpose: the built-in modules import `playbook` and friends from this module, so
# they must be defined first; importing the registry is then enough to get every built-in.
import ikoma.runner.builtins  # noqa: E402,F401 - registers the built-in playbooks
