"""The compose runtime: the exact docker commands (with a fake docker), and a real engine when one answers."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ikoma.runner.apps import manifest as manifests
from ikoma.runner.builtins import _common
from tests.integration.apps.conftest import Apps, answers, unique_app

PUBLISHED = {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": 8100, "Protocol": "tcp"}
PS_RUNNING = json.dumps(
    {
        "Name": "ikoma-x-web-1",
        "Service": "web",
        "State": "running",
        "Health": "",
        "Status": "Up 3 seconds",
        "ExitCode": 0,
        "Publishers": [PUBLISHED],
    }
)


def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A docker that logs its argv (one JSON list per line) and answers `ps` with one running service."""
    calls = tmp_path / "docker-calls.jsonl"
    script = tmp_path / "docker"
    dump = "import json,sys; print(json.dumps(sys.argv[1:]))"
    log = f"{shlex.quote(sys.executable)} -c '{dump}' \"$@\" >> {shlex.quote(str(calls))}"
    script.write_text(
        "#!/bin/sh\n"
        f"{log}\n"
        'for a in "$@"; do\n'
        '  if [ "$a" = ps ]; then echo ' + shlex.quote(PS_RUNNING) + "; fi\n"
        '  if [ "$a" = logs ]; then echo "web-1  | hello"; fi\n'
        "done\n"
        'if [ "$1" = info ]; then echo 27.3.1; fi\n'
    )
    script.chmod(0o755)
    monkeypatch.setattr(_common, "which", lambda program: str(script) if program == "docker" else None)
    return calls


async def test_compose_apps_run_exactly_the_expected_docker_commands(
    apps: Apps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_docker(tmp_path, monkeypatch)
    app = unique_app("cmp")
    await apps.ok("apps.init", appName=app, runtime="compose")
    path = apps.path(app)
    data = yaml.safe_load((path / manifests.MANIFEST_FILE).read_text())
    data["database"] = False
    data["variables"] = []
    del data["processes"][0]["health"]  # nothing really listens behind the fake: health = running
    (path / manifests.MANIFEST_FILE).write_text(yaml.safe_dump(data))
    (path / ".env").write_text("A=1\n")
    calls.unlink(missing_ok=True)

    assert (await apps.ok("apps.validate", appName=app))["valid"] is True
    up = await apps.ok("deploy.up", appName=app)
    assert up["health"] == "healthy"
    status = await apps.ok("apps.status", appName=app)
    assert status["dockerRunning"] is True
    assert status["processes"][0]["name"] == "web"
    logs = await apps.ok("apps.logs", appName=app, lines=20, process="web")
    assert logs["logs"] == [{"process": "web", "lines": ["web-1  | hello"]}]
    await apps.ok("deploy.restart", appName=app)
    await apps.ok("deploy.down", appName=app)

    base = [
        "compose", "--project-name", f"ikoma-{app}", "--project-directory", str(path.resolve()),
        "--file", str(path.resolve() / "docker-compose.yml"), "--env-file", str(path.resolve() / ".env"),
    ]  # fmt: skip
    ran = [json.loads(line) for line in calls.read_text().splitlines()]
    assert ran == [
        [*base, "config", "--quiet"],  # apps.validate
        [*base, "up", "--detach", "--build", "--remove-orphans"],  # deploy.up
        [*base, "ps", "--all", "--format", "json"],  # deploy.up's health wait
        [*base, "ps", "--all", "--format", "json"],  # apps.status
        [*base, "logs", "--no-color", "--tail", "20", "web"],  # apps.logs
        [*base, "restart"],  # deploy.restart
        [*base, "ps", "--all", "--format", "json"],  # its health wait
        [*base, "down", "--remove-orphans"],  # deploy.down
    ]


def docker_engine_answers() -> tuple[bool, str]:
    docker = shutil.which("docker")
    if docker is None:
        return False, "the docker CLI is not installed"
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "`docker info` did not answer within 20 s"
    if probe.returncode != 0 or not probe.stdout.strip():
        reason = (probe.stderr.strip().splitlines() or ["no server version"])[-1]
        return False, f"the docker CLI is here but no engine answers `docker info` ({reason})"
    return True, probe.stdout.strip()


async def test_a_compose_app_deploys_on_a_real_docker_engine(apps: Apps) -> None:
    ok, detail = docker_engine_answers()
    if not ok:
        pytest.skip(
            f"compose runtime integration not run: {detail}; its exact commands are covered by "
            "test_compose_apps_run_exactly_the_expected_docker_commands"
        )
    app = unique_app("dock")
    init = await apps.ok("apps.init", appName=app, runtime="compose")
    path = apps.path(app)
    (path / "src" / "index.html").write_text("hello from compose\n")
    data = yaml.safe_load((path / manifests.MANIFEST_FILE).read_text())
    data["database"] = False
    (path / manifests.MANIFEST_FILE).write_text(yaml.safe_dump(data))
    (path / ".env").write_text("APP_ENV=test\n")
    try:
        up = await apps.ok("deploy.up", appName=app)
        assert up["health"] == "healthy"
        status = await apps.ok("apps.status", appName=app)
        assert status["dockerRunning"] is True
        assert answers(init["port"], "/index.html") == 200
        assert (await apps.ok("artifact.verify_release", appName=app))["verified"] is True
        await apps.ok("deploy.down", appName=app)
        assert (await apps.ok("apps.status", appName=app))["dockerRunning"] is False
    finally:
        await apps.call("apps.remove", appName=app, confirm=app)
