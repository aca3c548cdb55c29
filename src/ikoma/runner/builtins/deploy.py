"""`deploy.*` tools (up, down, restart, rollback) and `artifact.verify_release`.

`deploy.up` validates, records a release (sha256 manifest + copy of the files), starts the app
through its runtime and waits for it to answer healthy. The release is recorded even when the app
then turns out unhealthy: those files *were* deployed, and `deploy.rollback` goes back from them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ikoma.runner.apps import health, layout, names, releases, runtime
from ikoma.runner.apps.errors import APP_INVALID, RELEASE_NOT_FOUND, AppError
from ikoma.runner.apps.tool import Answer, App, ToolContext, tool

HEALTH_TIMEOUT = 30.0
UNHEALTHY = "deploy_unhealthy"


async def _wait_health(tc: ToolContext, app: App) -> dict[str, Any]:
    rt = runtime.for_app(app)
    started = time.monotonic()

    async def running() -> dict[str, bool]:
        return await rt.running(tc, app)

    if app.manifest.processes:
        processes = await health.wait_healthy(app.manifest.processes, running, HEALTH_TIMEOUT)
    else:  # compose without declared processes: running containers are all we can check
        state = await running()
        processes = [
            {"name": name, "healthy": up, "status": None, "detail": "running" if up else "not running"}
            for name, up in sorted(state.items())
        ]
    healthy = bool(processes) and all(p["healthy"] for p in processes)
    tc.note("health", f"{app.name} {'healthy' if healthy else 'unhealthy'}", started, ok=True)
    return {"health": "healthy" if healthy else "unhealthy", "processes": processes}


def _require_healthy(app: App, checked: dict[str, Any], what: str, **details: Any) -> None:
    if checked["health"] != "healthy":
        bad = [f"{p['name']}: {p['detail']}" for p in checked["processes"] if not p["healthy"]]
        raise AppError(
            UNHEALTHY,
            f"{what} {app.name} but it is not healthy after {HEALTH_TIMEOUT:.0f}s: "
            f"{'; '.join(bad) or 'no process'} (see apps.logs)",
            processes=checked["processes"],
            **details,
        )


@tool("deploy.up", exclusive=True)
async def up(tc: ToolContext) -> Answer:
    app = tc.app()
    checked = await asyncio.to_thread(layout.validate, app.path)
    if not checked["valid"]:
        raise AppError(
            APP_INVALID,
            f"{app.name} is not valid: "
            + "; ".join(checked["errors"] + [f"missing {v}" for v in checked["missing"]]),
            errors=checked["errors"],
            missing=checked["missing"],
        )
    started = time.monotonic()
    release = await asyncio.to_thread(releases.record, app.path, tc.settings.releases_keep)
    tc.note(
        "release",
        f"release {release['id']}: {len(release['files'])} files, {release['fingerprint'][:12]}",
        started,
    )
    await runtime.for_app(app).start(tc, app)
    outcome = await _wait_health(tc, app)
    await asyncio.to_thread(releases.mark_health, app.path, release["id"], outcome["health"] == "healthy")
    _require_healthy(app, outcome, "started", release=release["id"])
    data = {
        "appName": app.name,
        "runtime": app.manifest.runtime,
        "release": releases.summary(release),
        **outcome,
    }
    return Answer(data, f"{app.name} deployed, release {release['id']}, {outcome['health']}")


@tool("deploy.down", exclusive=True)
async def down(tc: ToolContext) -> Answer:
    app = tc.app()
    result = await runtime.for_app(app).stop(tc, app)
    data = {"appName": app.name, "runtime": app.manifest.runtime, "stopped": True, **result}
    return Answer(
        data, f"{app.name} stopped" + ("" if result.get("wasRunning") is not False else " (was not running)")
    )


@tool("deploy.restart", exclusive=True)
async def restart(tc: ToolContext) -> Answer:
    app = tc.app()
    await runtime.for_app(app).restart(tc, app)
    outcome = await _wait_health(tc, app)
    _require_healthy(app, outcome, "restarted")
    data = {"appName": app.name, "runtime": app.manifest.runtime, "restarted": True, **outcome}
    return Answer(data, f"{app.name} restarted, {outcome['health']}")


@tool("artifact.verify_release")
async def verify_release(tc: ToolContext) -> Answer:
    app = tc.app()
    data = {"appName": app.name, **await asyncio.to_thread(releases.verify, app.path)}
    if data["release"] is None:
        return Answer(data, f"{app.name}: no release recorded yet")
    verdict = "verified" if data["verified"] else f"{len(data['differences'])} files differ"
    return Answer(data, f"{app.name} release {data['release']['id']}: {verdict}")


@tool("deploy.rollback", exclusive=True)
async def rollback(tc: ToolContext) -> Answer:
    app = tc.app()
    names.require_confirmation(tc.params, app.name)
    wanted = tc.param_str("release")
    current = releases.current_id(app.path)
    target = wanted or releases.previous_id(app.path)
    if target is None:
        raise AppError(
            RELEASE_NOT_FOUND, f"{app.name} has no release before {current or 'now'} to roll back to"
        )
    started = time.monotonic()
    restored = await asyncio.to_thread(releases.restore, app.path, target)  # refuses an unknown id
    tc.note(
        "restore",
        f"release {target}: {len(restored['restored'])} files restored, {len(restored['removed'])} removed",
        started,
    )
    app = tc.app()  # the manifest itself may differ in the restored release
    await runtime.for_app(app).start(tc, app)
    outcome = await _wait_health(tc, app)
    _require_healthy(app, outcome, f"rolled back to {target}", release=target)
    verified = await asyncio.to_thread(releases.verify, app.path)
    data = {
        "appName": app.name,
        "release": restored["release"],
        "previousRelease": current,
        "restored": restored["restored"],
        "removed": restored["removed"],
        "verified": verified["verified"],
        "differences": verified["differences"],
        **outcome,
    }
    return Answer(data, f"{app.name} rolled back from {current} to {target}, {outcome['health']}")
