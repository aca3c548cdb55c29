"""Declarative playbooks: a YAML file registered with `ikoma playbooks apply`, run by a real runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes, support
from tests.e2e.fleet import Fleet, attach_fleet, kill, unique

pytestmark = pytest.mark.e2e

HOSTILE = ["; rm -rf /tmp/x", "$(id)", "`uname`", 'it\'s "quoted"', "two\nlines", "-rf", "--help", "a b"]

ECHO_JSON = "import json, sys; print(json.dumps(sys.argv[1:]))"
ECHO_PLAYBOOK = f"""
key: ops.echo_args
name: Echo the arguments back
minRole: operator
maxAttempts: 1
defaultTimeoutSeconds: 60
params:
  words: {{type: array, items: {{type: string}}}}
  label: {{type: string, default: plain}}
required: [words]
steps:
  - name: label
    argv: ["{sys.executable}", "-I", "-c", "import sys; print(sys.argv[1])", "{{{{ label }}}}"]
  - name: echo
    argv: ["{sys.executable}", "-I", "-c", "{ECHO_JSON}", "{{{{ words }}}}"]
  - name: fails
    argv: ["{sys.executable}", "-I", "-c", "raise SystemExit(3)"]
    continueOnError: true
  - name: after
    argv: ["{sys.executable}", "-I", "-c", "print('still ran')"]
"""


def ikoma(server: support.LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
    env.update({"IKOMA_API_URL": server.url, "IKOMA_ADMIN_KEY": server.admin_key})
    return processes.run([sys.executable, "-m", "ikoma", *args], env=env, text=True, timeout=60)


@pytest.fixture
def live_server(shared_server: support.LiveServer) -> support.LiveServer:
    """One server per backend for the module: each test attaches its own server and runner."""
    return shared_server


@pytest.fixture
def fleet(live_server: support.LiveServer, tmp_path: Path) -> Fleet:
    return attach_fleet(live_server, tmp_path, unique("web"))


@pytest.fixture
def runner(fleet: Fleet) -> Iterator[subprocess.Popen[bytes]]:
    proc = fleet.start_runner()
    yield proc
    kill(proc)


def test_applied_yaml_playbook_runs_with_params_as_inert_whole_argv_items(
    fleet: Fleet, runner: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    definition = tmp_path / "echo.yaml"
    definition.write_text(ECHO_PLAYBOOK)
    applied = ikoma(fleet.server, "playbooks", "apply", str(definition), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["steps"][1]["name"] == "echo"

    order_id = fleet.order("ops.echo_args", {"words": HOSTILE})
    done = fleet.wait_status(order_id, {"SUCCEEDED", "FAILED"})
    steps = {s["name"]: s for s in done["report"]["steps"]}
    assert steps, done["report"]
    assert json.loads(steps["echo"]["output"]) == HOSTILE
    assert steps["label"]["output"].strip() == "plain"  # the schema default was applied
    assert steps["fails"]["status"] == "FAILED"
    assert steps["after"]["output"].strip() == "still ran"  # continueOnError let it run
    assert done["status"] == "FAILED"  # a failed step fails the order, even when later ones ran
    assert done["params"] == {"words": HOSTILE, "label": "plain"}


def test_reapplying_changes_the_playbook_but_not_orders_already_queued(fleet: Fleet, tmp_path: Path) -> None:
    definition = tmp_path / "echo.yaml"
    definition.write_text(ECHO_PLAYBOOK)
    assert ikoma(fleet.server, "playbooks", "apply", str(definition)).returncode == 0
    queued = fleet.order("ops.echo_args", {"words": ["x"]})
    definition.write_text(ECHO_PLAYBOOK.replace("name: Echo the arguments back", "name: Echo v2"))
    assert ikoma(fleet.server, "playbooks", "apply", str(definition)).returncode == 0
    with fleet.server.admin() as admin:
        names = {p["key"]: p["name"] for p in admin.get("/v1/playbooks").json()}
    assert names["ops.echo_args"] == "Echo v2"
    assert fleet.get(queued)["status"] == "QUEUED"


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ('{name: s, argv: ["echo", "--x={{ label }}"]}', "steps.0.argv.1", "whole argv item"),
        ('{name: s, argv: ["{{ label }}", "x"]}', "steps.0.argv.0", "argv[0]"),
        ('{name: s, argv: ["echo", "{{ nope }}"]}', "steps.0.argv.1", "unknown parameter"),
        ("{name: s, argv: []}", "steps.0.argv", ""),
        ('{name: s, argv: ["echo"], shell: true}', "steps.0.shell", ""),
    ],
)
def test_an_invalid_definition_is_refused_with_the_path_of_the_error(
    live_server: support.LiveServer, tmp_path: Path, step: str, path: str, message: str
) -> None:
    definition = tmp_path / "bad.yaml"
    definition.write_text(f"key: ops.bad\nparams: {{label: {{type: string}}}}\nsteps:\n  - {step}\n")
    result = ikoma(live_server, "playbooks", "apply", str(definition))
    assert result.returncode == 1
    assert path in result.stderr
    assert message in result.stderr
    with live_server.admin() as admin:
        assert "ops.bad" not in {p["key"] for p in admin.get("/v1/playbooks").json()}


def test_a_builtin_playbook_cannot_be_replaced(live_server: support.LiveServer, tmp_path: Path) -> None:
    definition = tmp_path / "ping.yaml"
    definition.write_text('key: system.test_ping\nsteps:\n  - {name: s, argv: ["true"]}\n')
    result = ikoma(live_server, "playbooks", "apply", str(definition))
    assert result.returncode == 1
    assert "conflict" in result.stderr
