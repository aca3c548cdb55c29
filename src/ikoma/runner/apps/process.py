"""The `process` runtime: the app's processes under IKOMA's per-app supervisor (see supervisor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ikoma.runner.apps import procfs, supervisor
from ikoma.runner.apps.errors import PORT_IN_USE, START_FAILED, STOP_FAILED, AppError
from ikoma.runner.apps.runtime import MAX_LOG_LINES, tail_lines
from ikoma.runner.apps.tool import App, ToolContext

START_TIME_LIMIT = supervisor.READY_TIMEOUT + 15


def port_free(port: int) -> bool:
    """Nothing listens on `port` (any address): the app could bind it. SO_REUSEADDR: TIME_WAIT is free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def supervisor_argv(app_dir: Path) -> list[str]:
    # -I: the supervisor ignores PYTHON* variables and the user site, like the step environment
    return [sys.executable, "-I", "-m", supervisor.MODULE, "start", str(app_dir)]


def stop_supervised(app_dir: Path, grace: float = supervisor.STOP_GRACE + 5) -> dict[str, Any]:
    """SIGTERM the supervisor (it stops its processes), SIGKILL past the grace, then sweep what a
    killed supervisor may have left (its processes, identified by pid *and* start time)."""
    pid = supervisor.running_pid(app_dir)
    result: dict[str, Any] = {"wasRunning": pid is not None, "supervisorPid": pid, "killed": []}
    if pid is not None:
        started = procfs.start_time(pid)
        with contextlib.suppress(ProcessLookupError):  # it may have exited on its own meanwhile
            os.kill(pid, signal.SIGTERM)
        if not procfs.wait_gone(pid, started, grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            result["killed"].append("supervisor")
            procfs.wait_gone(pid, started, 5.0)
    state = supervisor.read_state(app_dir) or {}
    for name, entry in (state.get("processes") or {}).items():
        child_pid, child_start = entry.get("pid"), entry.get("startTime")
        if isinstance(child_pid, int) and procfs.alive(child_pid, child_start):
            result["wasRunning"] = True
            procfs.terminate_group(child_pid, child_start, supervisor.STOP_GRACE)
            result["killed"].append(name)
    return result


class ProcessRuntime:
    name = "process"

    async def start(self, tc: ToolContext, app: App) -> None:
        if supervisor.running_pid(app.path) is not None or any((await self.running(tc, app)).values()):
            await self.stop(tc, app)
        # checked once ours are stopped: a port held by another program would make the app
        # crash-loop while that program answers its health checks in its place
        busy = [f"{p.port} ({p.name})" for p in app.manifest.processes if p.port and not port_free(p.port)]
        if busy:
            raise AppError(PORT_IN_USE, f"ports already in use by another program: {', '.join(busy)}")
        step = await tc.run("supervisor", supervisor_argv(app.path), time_limit=START_TIME_LIMIT)
        if step.status != "SUCCEEDED":
            detail = step.output.strip().splitlines()[-1] if step.output.strip() else step.status.lower()
            raise AppError(START_FAILED, f"the supervisor of {app.name} did not start: {detail}")

    async def stop(self, tc: ToolContext, app: App) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(stop_supervised, app.path)
        except OSError as exc:
            tc.note("stop", f"stopping {app.name} failed: {exc}", started, ok=False)
            raise AppError(STOP_FAILED, f"could not stop {app.name}: {exc.strerror or exc}") from None
        what = "stopped" if result["wasRunning"] else "was not running"
        if result["killed"]:
            what += f" (killed: {', '.join(result['killed'])})"
        tc.note("stop", f"{app.name} {what}", started)
        return result

    async def restart(self, tc: ToolContext, app: App) -> None:
        await self.start(tc, app)  # start stops a running supervisor first

    async def running(self, tc: ToolContext, app: App) -> dict[str, bool]:
        state = supervisor.read_state(app.path) or {}
        entries = state.get("processes") or {}
        out = {}
        for spec in app.manifest.processes:
            entry = entries.get(spec.name) or {}
            pid = entry.get("pid")
            out[spec.name] = isinstance(pid, int) and procfs.alive(pid, entry.get("startTime"))
        return out

    async def status(self, tc: ToolContext, app: App) -> dict[str, Any]:
        sup_pid = supervisor.running_pid(app.path)
        state = supervisor.read_state(app.path) or {}
        entries = state.get("processes") or {}
        processes = []
        for spec in app.manifest.processes:
            entry = entries.get(spec.name) or {}
            pid = entry.get("pid")
            alive = isinstance(pid, int) and procfs.alive(pid, entry.get("startTime"))
            uptime = procfs.uptime_seconds(pid) if alive and isinstance(pid, int) else None
            processes.append(
                {
                    "name": spec.name,
                    "pid": pid if alive else None,
                    "port": spec.port,
                    "running": alive,
                    "uptimeSeconds": round(uptime, 1) if uptime is not None else None,
                    "restarts": entry.get("restarts", 0),
                    "status": (entry.get("status") if sup_pid else None)
                    or ("running" if alive else "stopped"),
                    "lastExit": entry.get("lastExit"),
                }
            )
        any_alive = any(p["running"] for p in processes)
        if sup_pid is not None:
            state_name = "running" if processes and all(p["running"] for p in processes) else "degraded"
        else:
            state_name = "orphaned" if any_alive else "stopped"
        sup_uptime = procfs.uptime_seconds(sup_pid) if sup_pid else None
        return {
            "state": state_name,
            "running": state_name == "running",
            "dockerRunning": None,  # not a compose app
            "supervisor": {
                "running": sup_pid is not None,
                "pid": sup_pid,
                "uptimeSeconds": round(sup_uptime, 1) if sup_uptime is not None else None,
            },
            "processes": processes,
        }

    async def logs(self, tc: ToolContext, app: App, lines: int, process: str | None) -> list[dict[str, Any]]:
        lines = min(lines, MAX_LOG_LINES)
        specs = [p for p in app.manifest.processes if process is None or p.name == process]
        return [
            {"process": spec.name, "lines": tail_lines(supervisor.log_path(app.path, spec.name), lines)}
            for spec in specs
        ]
