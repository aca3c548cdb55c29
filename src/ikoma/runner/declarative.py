"""Running a declarative playbook: its steps, in order, each argv rendered from the order's params."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from ikoma.contracts.playbook import StepDefinition, render_argv
from ikoma.runner.execution import ExecutionContext, StepResult
from ikoma.runner.playbooks import Playbook, PlaybookResult, invalid_params, step_errors

_STEPS = TypeAdapter(list[StepDefinition])


async def run_declarative(ctx: ExecutionContext, params: dict[str, Any], steps: Any) -> PlaybookResult:
    """Each step runs once the previous one succeeded, unless that one said `continueOnError`."""
    try:
        definitions = _STEPS.validate_python(steps)
    except ValidationError as exc:  # the API validated them; a mismatch means versions disagree
        return invalid_params(f"steps do not match this runner's contract: {exc.errors()[0]['msg']}")
    results: list[StepResult] = []
    blocked_by: str | None = None
    for step in definitions:
        if blocked_by is not None:
            results.append(StepResult(step.name, "SKIPPED", 0, output=f"skipped: step {blocked_by} failed"))
            continue
        result = await ctx.run_step(
            step.name, render_argv(step.argv, params), time_limit=step.timeout_seconds
        )
        results.append(result)
        if result.status != "SUCCEEDED" and not step.continue_on_error:
            blocked_by = step.name
    failed = [r for r in results if r.status not in ("SUCCEEDED", "SKIPPED")]
    if not failed:
        summary = f"{len(results)} steps succeeded"
    else:
        more = f", {len(failed) - 1} more failed" if len(failed) > 1 else ""
        summary = f"step {failed[0].name} ended {failed[0].status}{more}"
    return PlaybookResult(summary=summary, steps=results, errors=step_errors(results))


def declarative_playbook(steps: Any) -> Playbook:
    """The steps an order carries, as a playbook the agent runs like a built-in one."""

    async def run(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
        return await run_declarative(ctx, params, steps)

    return run
