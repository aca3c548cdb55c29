"""How an operations tool runs: a :class:`ToolContext` collecting steps, and the `result` convention.

Every tool playbook ends with a step named ``result`` whose ``data`` is the tool's answer (the
/execute API returns it as the HTTP body). A refusal or failure raises :class:`AppError`: the order
then FAILS with ``errors: [{code, message}]`` and the ``result`` step carries ``{"error": {…}}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps import names, settings
from ikoma.runner.apps.errors import FILESYSTEM_ERROR, RUNNER_ERROR, AppError
from ikoma.runner.execution import ExecutionContext, StepResult

if TYPE_CHECKING:
    from ikoma.runner.playbooks import PlaybookResult

RESULT_STEP = "result"

log = structlog.get_logger("ikoma.runner.apps")


@dataclass
class App:
    name: str
    path: Path
    manifest: manifests.AppManifest


@dataclass
class Answer:
    """A tool's structured result and its one-line summary (no secrets, no argv)."""

    data: dict[str, Any]
    summary: str


@dataclass
class ToolContext:
    ctx: ExecutionContext
    params: dict[str, Any]
    settings: settings.AppsSettings
    steps: list[StepResult] = field(default_factory=list)

    async def run(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        time_limit: float | None = None,
    ) -> StepResult:
        step = await self.ctx.run_step(name, argv, time_limit=time_limit, env=env)
        self.steps.append(step)
        return step

    def note(self, name: str, message: str, started: float, *, ok: bool = True) -> StepResult:
        """A step for work done inside the runner (signals, file copies, SQL): it shows in the report."""
        step = StepResult(
            name,
            "SUCCEEDED" if ok else "FAILED",
            int((time.monotonic() - started) * 1000),
            output=self.ctx.masker(message),
        )
        self.steps.append(step)
        return step

    def app_name(self) -> str:
        return names.app_name(self.params.get("appName"))

    def app(self) -> App:
        """The app named by `appName`: name checked, directory and manifest present and valid."""
        name = self.app_name()
        path = manifests.app_dir(self.settings.apps_root, name)
        return App(name=name, path=path, manifest=manifests.load(path))

    def param_int(self, key: str, default: int, low: int, high: int) -> int:
        value = self.params.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise AppError("invalid_params", f"{key} must be an integer from {low} to {high}")
        return value

    def param_str(self, key: str) -> str | None:
        value = self.params.get(key)
        if value is not None and not isinstance(value, str):
            raise AppError("invalid_params", f"{key} must be a string")
        return value


ToolFunction = Callable[[ToolContext], Awaitable[Answer]]


# One change at a time per app within this runner (parallel > 1 could run a deploy.up and a
# deploy.rollback of the same app together). Keyed by event loop too: a lock belongs to one loop.
_APP_LOCKS: dict[tuple[int, str], asyncio.Lock] = {}


def _app_lock(params: dict[str, Any]) -> asyncio.Lock | None:
    try:
        name = names.app_name(params.get("appName"))
    except AppError:
        return None  # the tool itself refuses the name
    key = (id(asyncio.get_running_loop()), name)
    return _APP_LOCKS.setdefault(key, asyncio.Lock())


def tool(key: str, *, exclusive: bool = False) -> Callable[[ToolFunction], ToolFunction]:
    """Register `func` as the playbook `key`, wrapped in the result/error convention.

    `exclusive`: the tool changes the app; it waits for any other exclusive tool on the same app.
    """

    # imported here, not at the top: the registry imports the built-in modules that use `tool`, and
    # the supervisor (`python -m ikoma.runner.apps.supervisor`) must not load the registry at all
    from ikoma.runner.playbooks import PlaybookResult, playbook

    def register(func: ToolFunction) -> ToolFunction:
        async def run(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
            started = time.monotonic()
            try:
                tc = ToolContext(ctx, params if isinstance(params, dict) else {}, settings.load())
            except AppError as exc:
                return _failure(ctx, key, exc, [], started)
            lock = _app_lock(tc.params) if exclusive else None
            try:
                if lock is None:
                    answer = await func(tc)
                else:
                    async with lock:
                        answer = await func(tc)
            except AppError as exc:
                return _failure(ctx, key, exc, tc.steps, started)
            except OSError as exc:  # an unwritable apps root, a full disk: the operator can act on it
                where = f" ({exc.filename})" if exc.filename else ""
                error = AppError(FILESYSTEM_ERROR, f"{exc.strerror or exc}{where}")
                return _failure(ctx, key, error, tc.steps, started)
            except Exception as exc:
                # a bug: logged with its traceback; the caller still gets the result convention
                log.exception("tool raised", tool=key, order_id=ctx.order_id)
                error = AppError(RUNNER_ERROR, f"runner error: {type(exc).__name__}: {exc}")
                return _failure(ctx, key, error, tc.steps, started)
            masked = ctx.masker.mask_data(answer.data)
            result = StepResult(RESULT_STEP, "SUCCEEDED", _ms(started), data=masked)
            return PlaybookResult(summary=f"{key}: {answer.summary}", steps=[*tc.steps, result])

        playbook(key)(run)
        return func

    return register


def _failure(
    ctx: ExecutionContext, key: str, exc: AppError, steps: list[StepResult], started: float
) -> PlaybookResult:
    from ikoma.runner.playbooks import PlaybookResult

    error = ctx.masker.mask_data(exc.to_dict())
    result = StepResult(RESULT_STEP, "FAILED", _ms(started), data={"error": error})
    return PlaybookResult(
        summary=ctx.masker(f"{key} failed ({exc.code}): {exc.message}"),
        steps=[*steps, result],
        errors=[{"code": exc.code, "message": ctx.masker(exc.message)}],
    )


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
