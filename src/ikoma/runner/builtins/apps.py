"""`apps.*` tools: init, env.example, validate, status, health, list, logs, remove.

Thin: params in, one call into `ikoma.runner.apps`, the answer out (see `apps/tool.py` for the
result convention). Every tool re-validates `appName` before touching the disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import time
from typing import Any

from ikoma.runner.apps import database, envfile, health, layout, names, releases, runtime
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps.errors import INVALID_PARAMS, AppError
from ikoma.runner.apps.tool import Answer, App, ToolContext, tool
from ikoma.runner.builtins import _common

RUNTIME_CHOICES = ("auto", "process", "compose")
DOCKER_PROBE_LIMIT = 15.0
SERVICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


async def docker_engine_answers(tc: ToolContext) -> bool:
    """`docker info` answers with a server version: an engine is there to run compose apps."""
    docker = _common.which("docker")
    if docker is None:
        return False
    step, text = await _common.run_captured(
        tc.ctx,
        "docker-info",
        [docker, "info", "--format", "{{.ServerVersion}}"],
        time_limit=DOCKER_PROBE_LIMIT,
    )
    ok = step.status == "SUCCEEDED" and bool(text.strip()) and "error" not in text.lower()
    tc.steps.append(_common.tolerate(step))  # "no engine" is an answer, not a failure
    return ok


@tool("apps.init", exclusive=True)
async def init(tc: ToolContext) -> Answer:
    app = tc.app_name()
    choice = tc.params.get("runtime", "auto")
    if choice not in RUNTIME_CHOICES:
        raise AppError(INVALID_PARAMS, f"runtime must be one of {', '.join(RUNTIME_CHOICES)}")
    if (tc.settings.apps_root / app).exists():  # checked before probing docker: refuse fast
        raise AppError("app_exists", f"app {app} already exists at {tc.settings.apps_root / app}")
    if choice == "auto":
        choice = "compose" if await docker_engine_answers(tc) else "process"
    started = time.monotonic()
    data = await asyncio.to_thread(layout.init, tc.settings.apps_root, app, choice)
    tc.note("init", f"created {data['path']} ({choice} runtime, port {data['port']})", started)
    return Answer(data, f"{app} created ({choice} runtime, port {data['port']})")


@tool("apps.env.example")
async def env_example(tc: ToolContext) -> Answer:
    app = tc.app()
    manifest = app.manifest
    if not manifest.database and "POSTGRES_DB" in envfile.read(app.path / envfile.ENV_FILE):
        manifest = dataclasses.replace(manifest, database=True)  # it has a database all the same
    template = manifests.env_template(manifest, app.path)
    variables = manifests.template_variables(manifest)
    return Answer(
        {"result": template, "variables": variables}, f"template for {app.name}: {len(variables)} variables"
    )


@tool("apps.validate")
async def validate(tc: ToolContext) -> Answer:
    app_name = tc.app_name()
    path = manifests.app_dir(tc.settings.apps_root, app_name)
    data = await asyncio.to_thread(layout.validate, path)
    if data["valid"] and data["runtime"] == "compose" and _common.which("docker"):
        # the compose CLI checks the file without an engine: interpolation, schema, env_file paths
        from ikoma.runner.apps import compose

        base = compose.base_argv(compose.docker_path(), app_name, path)
        step = await tc.run("compose-config", compose.config_argv(base), time_limit=60)
        if step.status != "SUCCEEDED":
            data["errors"].append(
                f"docker compose config: {step.output.strip().splitlines()[-1:] or 'failed'}"
            )
            data["valid"] = False
            _common.tolerate(step)  # an invalid app is this tool's answer, not its failure
    data = {"appName": app_name, **data}
    if data["valid"]:
        summary = f"{app_name} is valid"
    else:
        missing = ", ".join(data["missing"]) or "nothing"
        summary = f"{app_name} is not valid: {len(data['errors'])} errors, missing {missing}"
    return Answer(data, summary)


async def app_status(tc: ToolContext, app: App) -> dict[str, Any]:
    status = await runtime.for_app(app).status(tc, app)
    release = releases.current(app.path)
    return {
        "appName": app.name,
        "runtime": app.manifest.runtime,
        **status,
        "release": releases.summary(release) if release else None,
    }


@tool("apps.status")
async def status(tc: ToolContext) -> Answer:
    app = tc.app()
    data = await app_status(tc, app)
    running = sum(1 for p in data["processes"] if p["running"])
    return Answer(data, f"{app.name} {data['state']} ({running}/{len(data['processes'])} processes running)")


async def app_health(tc: ToolContext, app: App) -> dict[str, Any]:
    rt = runtime.for_app(app)
    running = await rt.running(tc, app)
    specs = app.manifest.processes
    if not specs:  # a compose app with no declared process: its containers are what runs
        specs = tuple(manifests.ProcessSpec(name=name) for name in sorted(running))
    processes = await health.check_processes(specs, running)
    healthy = bool(processes) and all(p["healthy"] for p in processes)
    return {"appName": app.name, "health": "healthy" if healthy else "unhealthy", "processes": processes}


@tool("apps.health")
async def app_health_tool(tc: ToolContext) -> Answer:
    app = tc.app()
    data = await app_health(tc, app)
    bad = [p["name"] for p in data["processes"] if not p["healthy"]]
    return Answer(data, f"{app.name} {data['health']}" + (f" ({', '.join(bad)})" if bad else ""))


@tool("apps.list")
async def list_apps(tc: ToolContext) -> Answer:
    root = tc.settings.apps_root
    apps: list[dict[str, Any]] = []
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for entry in entries:
        if not names.APP_NAME_RE.fullmatch(entry.name) or not (entry / manifests.MANIFEST_FILE).is_file():
            continue
        try:
            app = App(entry.name, entry, manifests.load(entry))
        except AppError as exc:
            apps.append(
                {
                    "name": entry.name,
                    "runtime": None,
                    "state": "invalid",
                    "running": False,
                    "release": None,
                    "error": exc.message,
                }
            )
            continue
        state = await runtime.for_app(app).status(tc, app)
        release = releases.current_id(entry)
        apps.append(
            {
                "name": app.name,
                "runtime": app.manifest.runtime,
                "state": state["state"],
                "running": state["running"],
                "release": release,
            }
        )
    running = sum(1 for a in apps if a["running"])
    return Answer({"appsRoot": str(root), "apps": apps}, f"{len(apps)} apps, {running} running")


@tool("apps.logs")
async def logs(tc: ToolContext) -> Answer:
    app = tc.app()
    lines = tc.param_int("lines", 100, 1, runtime.MAX_LOG_LINES)
    process = tc.param_str("process")
    if process is not None:
        known = {p.name for p in app.manifest.processes}
        if app.manifest.runtime == "process" and process not in known:
            raise AppError(
                INVALID_PARAMS, f"{app.name} has no process {process!r} (known: {', '.join(sorted(known))})"
            )
        if SERVICE_RE.fullmatch(process) is None:  # never an option ("--…") for docker compose
            raise AppError(INVALID_PARAMS, f"process {process!r} is not a valid process or service name")
    entries = await runtime.for_app(app).logs(tc, app, lines, process)
    count = sum(len(e["lines"]) for e in entries)
    data = {"appName": app.name, "runtime": app.manifest.runtime, "logs": entries}
    return Answer(data, f"{count} log lines of {app.name}")


@tool("apps.remove", exclusive=True)
async def remove(tc: ToolContext) -> Answer:
    app = tc.app()
    names.require_confirmation(tc.params, app.name)
    drop = tc.params.get("dropDatabase", False)
    if not isinstance(drop, bool):
        raise AppError(INVALID_PARAMS, "dropDatabase must be true or false")
    stopped = await runtime.for_app(app).stop(tc, app)
    db: dict[str, Any] = {"database": names.database_name(app.name), "databaseKept": None}
    if drop:
        dropped = await database.drop(app.name, tc.settings)
        db = {"database": dropped["database"], "databaseKept": False, "databaseDropped": dropped["dropped"]}
    elif tc.settings.database_url:
        try:
            db["databaseKept"] = await database.exists(app.name, tc.settings)
        except AppError:
            db["databaseKept"] = None  # unreachable: we cannot say, and we did not touch it
    started = time.monotonic()
    await asyncio.to_thread(shutil.rmtree, app.path)
    tc.note("remove", f"removed {app.path}", started)
    data = {
        "appName": app.name,
        "removed": True,
        "path": str(app.path),
        "wasRunning": stopped.get("wasRunning"),
        **db,
        "backupsKept": str(tc.settings.backups_dir / app.name),
    }
    kept = "database kept" if db.get("databaseKept") else ("database dropped" if drop else "no database")
    return Answer(data, f"{app.name} removed ({kept})")
