"""The `compose` runtime: `docker compose` argv for an app, project `ikoma-<app>`.

The argv builders are pure functions (unit-tested exactly); the runtime runs them as steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ikoma.runner.apps.envfile import ENV_FILE
from ikoma.runner.apps.errors import RUNTIME_UNAVAILABLE, START_FAILED, STOP_FAILED, AppError
from ikoma.runner.apps.manifest import COMPOSE_FILE
from ikoma.runner.apps.runtime import MAX_LOG_LINES
from ikoma.runner.apps.tool import App, ToolContext
from ikoma.runner.builtins import _common

UP_TIME_LIMIT = 1800.0  # image pulls and builds
COMMAND_TIME_LIMIT = 300.0
PS_TIME_LIMIT = 60.0


def project_name(app: str) -> str:
    return f"ikoma-{app}"


def base_argv(docker: str, app: str, app_dir: Path) -> list[str]:
    argv = [
        docker, "compose",
        "--project-name", project_name(app),
        "--project-directory", str(app_dir),
        "--file", str(app_dir / COMPOSE_FILE),
    ]  # fmt: skip
    if (app_dir / ENV_FILE).is_file():
        argv += ["--env-file", str(app_dir / ENV_FILE)]
    return argv


def up_argv(base: list[str]) -> list[str]:
    # --build: services with a build section get their image rebuilt (a no-op for image-only ones)
    return [*base, "up", "--detach", "--build", "--remove-orphans"]


def down_argv(base: list[str]) -> list[str]:
    return [*base, "down", "--remove-orphans"]  # named volumes (data) are kept


def restart_argv(base: list[str]) -> list[str]:
    return [*base, "restart"]


def ps_argv(base: list[str]) -> list[str]:
    return [*base, "ps", "--all", "--format", "json"]


def logs_argv(base: list[str], lines: int, service: str | None) -> list[str]:
    return [*base, "logs", "--no-color", "--tail", str(lines), *([service] if service else [])]


def config_argv(base: list[str]) -> list[str]:
    return [*base, "config", "--quiet"]


def parse_ps(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json`: a JSON array (before 2.21) or one object per line (since)."""
    text = text.strip()
    if not text:
        return []
    rows: list[Any] = []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
            rows = parsed if isinstance(parsed, list) else []
        except ValueError:
            rows = []
    else:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    out = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        ports: list[int] = [
            int(p["PublishedPort"])
            for p in row.get("Publishers") or []
            if isinstance(p, dict) and isinstance(p.get("PublishedPort"), int) and p["PublishedPort"]
        ]
        out.append(
            {
                "name": row.get("Service") or row.get("Name"),
                "container": row.get("Name"),
                "state": row.get("State"),
                "health": row.get("Health") or None,
                "status": row.get("Status"),
                "ports": sorted(set(ports)),
                "exitCode": row.get("ExitCode"),
            }
        )
    return out


def docker_path() -> str:
    docker = _common.which("docker")
    if docker is None:
        raise AppError(RUNTIME_UNAVAILABLE, "docker is not installed on this machine (runtime: compose)")
    return docker


class ComposeRuntime:
    name = "compose"

    def _base(self, app: App) -> list[str]:
        return base_argv(docker_path(), app.name, app.path)

    async def _containers(self, tc: ToolContext, app: App) -> list[dict[str, Any]] | None:
        step, text = await _common.run_captured(
            tc.ctx, "compose-ps", ps_argv(self._base(app)), time_limit=PS_TIME_LIMIT
        )
        tc.steps.append(step)
        if step.status != "SUCCEEDED":
            _common.tolerate(step)  # an engine that does not answer is a state, reported as such
            return None
        return parse_ps(text)

    async def start(self, tc: ToolContext, app: App) -> None:
        step = await tc.run("compose-up", up_argv(self._base(app)), time_limit=UP_TIME_LIMIT)
        if step.status != "SUCCEEDED":
            raise AppError(
                START_FAILED, f"docker compose up failed for {app.name}: {_last_line(step.output)}"
            )

    async def stop(self, tc: ToolContext, app: App) -> dict[str, Any]:
        step = await tc.run("compose-down", down_argv(self._base(app)), time_limit=COMMAND_TIME_LIMIT)
        if step.status != "SUCCEEDED":
            raise AppError(
                STOP_FAILED, f"docker compose down failed for {app.name}: {_last_line(step.output)}"
            )
        return {"wasRunning": None, "volumesKept": True}

    async def restart(self, tc: ToolContext, app: App) -> None:
        step = await tc.run("compose-restart", restart_argv(self._base(app)), time_limit=COMMAND_TIME_LIMIT)
        if step.status != "SUCCEEDED":
            raise AppError(
                START_FAILED, f"docker compose restart failed for {app.name}: {_last_line(step.output)}"
            )

    async def running(self, tc: ToolContext, app: App) -> dict[str, bool]:
        containers = await self._containers(tc, app) or []
        out = {c["name"]: c["state"] == "running" for c in containers}
        for spec in app.manifest.processes:
            out.setdefault(spec.name, False)
        return out

    async def status(self, tc: ToolContext, app: App) -> dict[str, Any]:
        containers = await self._containers(tc, app)
        if containers is None:
            return {
                "state": "unknown",
                "running": False,
                "dockerRunning": False,
                "detail": "the docker engine did not answer",
                "processes": [],
            }
        ports = {spec.name: spec.port for spec in app.manifest.processes}
        processes = [
            {
                "name": c["name"],
                "pid": None,
                "port": ports.get(c["name"]) or (c["ports"][0] if c["ports"] else None),
                "running": c["state"] == "running",
                "uptimeSeconds": None,
                "restarts": None,
                "status": c["status"],
                "health": c["health"],
                "container": c["container"],
            }
            for c in containers
        ]
        docker_running = bool(processes) and all(p["running"] for p in processes)
        if docker_running:
            state = "running"
        else:
            state = "degraded" if any(p["running"] for p in processes) else "stopped"
        return {
            "state": state,
            "running": docker_running,
            "dockerRunning": docker_running,
            "processes": processes,
        }

    async def logs(self, tc: ToolContext, app: App, lines: int, process: str | None) -> list[dict[str, Any]]:
        step, text = await _common.run_captured(
            tc.ctx, "compose-logs", logs_argv(self._base(app), min(lines, MAX_LOG_LINES), process),
            time_limit=PS_TIME_LIMIT,
        )  # fmt: skip
        tc.steps.append(step)
        if step.status != "SUCCEEDED":
            raise AppError(RUNTIME_UNAVAILABLE, f"docker compose logs failed: {_last_line(step.output)}")
        return [{"process": process or "all", "lines": text.splitlines()[-lines:]}]


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
