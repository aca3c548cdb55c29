"""The process runtime's supervisor: restarts crashed processes, outlives the runner, stops cleanly."""

# ruff: noqa: ASYNC220, ASYNC240 - a blocking child "runner" and /proc reads are the point here

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps import procfs, supervisor
from ikoma.runner.builtins import _common, deploy
from tests.integration.apps.conftest import Apps, answers, get, unique_app, wait_until


async def deployed(apps: Apps, prefix: str) -> tuple[str, int]:
    app = unique_app(prefix)
    await apps.ok("apps.init", appName=app, runtime="process")
    port = apps.install_tinyapp(app)
    (apps.path(app) / ".env").write_text("APP_ENV=test\n")
    set_database(apps, app, False)
    assert (await apps.ok("deploy.up", appName=app))["health"] == "healthy"
    return app, port


def set_database(apps: Apps, app: str, value: bool) -> None:
    path = apps.path(app) / manifests.MANIFEST_FILE
    data = yaml.safe_load(path.read_text())
    data["database"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def web_pid(apps: Apps, app: str) -> int | None:
    state = supervisor.read_state(apps.path(app)) or {}
    entry = (state.get("processes") or {}).get("web") or {}
    pid = entry.get("pid")
    return pid if isinstance(pid, int) and procfs.alive(pid, entry.get("startTime")) else None


async def test_a_process_killed_with_sigkill_is_restarted(apps: Apps) -> None:
    app, port = await deployed(apps, "crash")
    first = web_pid(apps, app)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: web_pid(apps, app) not in (None, first), what="a new web process")
    wait_until(lambda: answers(port) == 200, what="health")
    status = await apps.ok("apps.status", appName=app)
    assert status["processes"][0]["restarts"] == 1
    assert status["processes"][0]["lastExit"] == -signal.SIGKILL
    assert (await apps.ok("apps.health", appName=app))["health"] == "healthy"
    log = (apps.path(app) / ".ikoma" / "logs" / "web.log").read_text()
    assert "exited (-9), restart in" in log


RUNNER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from ikoma.runner.execution import ExecutionContext
    from ikoma.runner.playbooks import REGISTRY

    async def main():
        params = {"appName": sys.argv[1]}
        result = await REGISTRY["deploy.up"](ExecutionContext("o", params), params)
        print(json.dumps({"errors": result.errors, "data": result.steps[-1].data}))

    asyncio.run(main())
    """
)


async def test_the_supervisor_survives_the_runner_process_that_started_it(apps: Apps) -> None:
    app = unique_app("survive")
    await apps.ok("apps.init", appName=app, runtime="process")
    port = apps.install_tinyapp(app)
    (apps.path(app) / ".env").write_text("APP_ENV=test\n")
    set_database(apps, app, False)
    # a separate "runner" process deploys, then exits
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, app],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["errors"] == []
    sup = supervisor.running_pid(apps.path(app).resolve())
    assert sup is not None
    assert answers(port) == 200
    # not the runner's child, not in its session or process group: nothing ties it to the runner
    parent = int(Path(f"/proc/{sup}/stat").read_text().rpartition(")")[2].split()[1])
    assert parent != runner.pid
    assert os.getsid(sup) not in (os.getsid(os.getpid()), runner.pid)
    assert os.getpgid(sup) != runner.pid
    status = await apps.ok("apps.status", appName=app)
    assert status["state"] == "running"
    assert status["supervisor"]["pid"] == sup
    down = await apps.ok("deploy.down", appName=app)
    assert down["wasRunning"] is True
    assert supervisor.running_pid(apps.path(app).resolve()) is None
    assert answers(port) is None


async def test_down_sweeps_the_processes_of_a_supervisor_that_was_killed(apps: Apps) -> None:
    app, port = await deployed(apps, "orphan")
    sup = supervisor.running_pid(apps.path(app).resolve())
    child = web_pid(apps, app)
    assert sup is not None
    assert child is not None
    os.kill(sup, signal.SIGKILL)
    wait_until(lambda: supervisor.running_pid(apps.path(app).resolve()) is None, what="supervisor gone")
    assert (await apps.ok("apps.status", appName=app))["state"] == "orphaned"
    assert answers(port) == 200  # the app itself still serves
    down = await apps.ok("deploy.down", appName=app)
    assert down["killed"] == ["web"]
    wait_until(lambda: not procfs.alive(child), what="orphaned process stopped")
    assert (await apps.ok("apps.status", appName=app))["state"] == "stopped"


async def test_an_app_that_keeps_crashing_fails_deploy_but_its_release_is_recorded(
    apps: Apps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "HEALTH_TIMEOUT", 3.0)
    app = unique_app("bad")
    await apps.ok("apps.init", appName=app, runtime="process")
    apps.install_tinyapp(app)
    (apps.path(app) / ".env").write_text("APP_ENV=test\n")
    set_database(apps, app, False)
    (apps.path(app) / "src" / "server.py").write_text("import sys\nprint('boom', flush=True)\nsys.exit(3)\n")
    failed = await apps.refused("deploy.up", "deploy_unhealthy", appName=app)
    assert "not running" in failed["error"]["message"] or "ConnectError" in failed["error"]["message"]
    status = await apps.ok("apps.status", appName=app)
    assert status["release"] is not None
    assert status["processes"][0]["lastExit"] == 3
    assert status["processes"][0]["restarts"] >= 1
    logs = await apps.ok("apps.logs", appName=app, process="web")
    assert "boom" in logs["logs"][0]["lines"]


async def test_the_processes_environment_is_the_apps_not_the_runners(
    apps: Apps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IKOMA_RUNNER_TOKEN", "runner-secret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-apps")
    app, port = await deployed(apps, "env")
    config = get(port, "/config").json()
    assert config["ikomaVariables"] == []
    environ = Path(f"/proc/{web_pid(apps, app)}/environ").read_bytes().split(b"\0")
    keys = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert "AWS_SECRET_ACCESS_KEY" not in keys
    assert "IKOMA_RUNNER_TOKEN" not in keys
    assert {"PORT", "APP_ENV", "GREETING", "PATH"} <= keys


async def test_logs_params_are_checked(apps: Apps) -> None:
    app = unique_app("logs")
    await apps.ok("apps.init", appName=app, runtime="process")
    for params in ({"lines": 0}, {"lines": 5001}, {"lines": "10"}, {"process": "nope"}, {"process": "--all"}):
        await apps.refused("apps.logs", "invalid_params", appName=app, **params)
    assert (await apps.ok("apps.logs", appName=app))["logs"] == [{"process": "web", "lines": []}]


async def test_auto_runtime_picks_compose_only_when_a_docker_engine_answers(
    apps: Apps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(_common, "which", lambda program: str(fake) if program == "docker" else None)
    assert (await apps.ok("apps.init", appName="auto-down"))["runtime"] == "process"
    fake.write_text("#!/bin/sh\necho 27.3.1\n")
    assert (await apps.ok("apps.init", appName="auto-up"))["runtime"] == "compose"
    manifest = manifests.load(apps.path("auto-up"))
    assert manifest.runtime == "compose"
    monkeypatch.setattr(_common, "which", lambda program: None)
    assert (await apps.ok("apps.init", appName="auto-none"))["runtime"] == "process"


async def test_deploy_refuses_a_port_another_program_holds(apps: Apps) -> None:
    app = unique_app("busy")
    await apps.ok("apps.init", appName=app, runtime="process")
    port = apps.install_tinyapp(app)
    (apps.path(app) / ".env").write_text("APP_ENV=test\n")
    set_database(apps, app, False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        failed = await apps.refused("deploy.up", "port_in_use", appName=app)
    assert f"{port} (web)" in failed["error"]["message"]
    assert supervisor.running_pid(apps.path(app).resolve()) is None
    assert (await apps.ok("deploy.up", appName=app))["health"] == "healthy"  # once it is free
