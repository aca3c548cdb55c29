"""The built-in playbooks through a real server and a real runner process, on this machine.

Only read-only playbooks run for real; apt.upgrade runs with dryRun (a simulation) and
docker.prune is left to the unit tests, which use a fake docker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import support

pytestmark = [pytest.mark.e2e]

BUILTIN_KEYS = {
    "system.facts",
    "system.metrics",
    "apt.analyze",
    "apt.upgrade",
    "docker.status",
    "docker.prune",
}


@dataclass
class Fleet:
    """One server with one runner attached (same pattern as test_runner_agent.py)."""

    server: support.LiveServer
    server_id: str
    runner_id: str
    token: str
    workdir: Path

    def order(self, playbook: str, params: dict[str, Any]) -> str:
        with self.server.admin() as admin:
            response = admin.post(
                "/v1/orders", json={"serverId": self.server_id, "playbookKey": playbook, "params": params}
            )
        assert response.status_code == 201, response.text
        return str(response.json()["order"]["id"])

    def get(self, order_id: str) -> dict[str, Any]:
        with self.server.admin() as admin:
            response = admin.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_done(self, order_id: str, timeout: float = 60.0) -> dict[str, Any]:
        final = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"}
        deadline = time.monotonic() + timeout
        order = self.get(order_id)
        while order["status"] not in final and time.monotonic() < deadline:
            time.sleep(0.2)
            order = self.get(order_id)
        assert order["status"] in final, f"order still {order['status']}: {self.runner_log()}"
        return order

    def start_runner(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
        argv = [
            sys.executable, "-m", "ikoma", "runner",
            "--api-url", self.server.url, "--runner-id", self.runner_id, "--token", self.token,
            "--state-dir", str(self.workdir / "state"), "--kill-grace", "1", "--heartbeat-interval", "1",
            "--claim-wait", "2", "--spool-retry-interval", "1", "--log-level", "info",
        ]  # fmt: skip
        with (self.workdir / "runner.log").open("ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def runner_log(self) -> str:
        path = self.workdir / "runner.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def fleet(live_server: support.LiveServer, tmp_path: Path) -> Iterator[Fleet]:
    with live_server.admin() as admin:
        srv = admin.post("/v1/servers", json={"name": "host-1", "hostname": "host-1.example.net"})
        assert srv.status_code == 201, srv.text
        runner = admin.post("/v1/runners", json={"name": "runner-host-1"})
        assert runner.status_code == 201, runner.text
        attach = admin.patch(f"/v1/servers/{srv.json()['id']}", json={"runnerId": runner.json()["id"]})
        assert attach.status_code == 200, attach.text
    fleet = Fleet(live_server, srv.json()["id"], runner.json()["id"], runner.json()["token"], tmp_path)
    proc = fleet.start_runner()
    yield fleet
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _succeeded(fleet: Fleet, order: dict[str, Any]) -> dict[str, Any]:
    assert order["status"] == "SUCCEEDED", (order.get("report"), fleet.runner_log()[-3000:])
    report: dict[str, Any] = order["report"]
    assert report["version"] == "v2"
    assert report["errors"] == []
    return report


def _data(report: dict[str, Any], step: str) -> dict[str, Any]:
    chosen = next(s for s in report["steps"] if s["name"] == step)
    assert chosen["status"] == "SUCCEEDED"
    return dict(chosen["data"])


def test_read_only_builtins_on_this_machine(fleet: Fleet) -> None:
    started = time.monotonic()
    orders = {
        "facts": fleet.order("system.facts", {}),
        "metrics": fleet.order("system.metrics", {}),
        "apt": fleet.order("apt.analyze", {}),
        "dry_run": fleet.order("apt.upgrade", {"dryRun": True}),
        "docker": fleet.order("docker.status", {}),
    }

    report = _succeeded(fleet, fleet.wait_done(orders["facts"]))
    facts = _data(report, "facts")
    assert report["steps"][-1]["name"] == "facts"
    assert facts["cpu"]["cores"] >= 1
    assert facts["memory"]["totalBytes"] > 0
    assert len(facts["disks"]) >= 1
    assert facts["kernel"] == os.uname().release
    assert facts["arch"] == os.uname().machine
    assert facts["os"]["family"] in {"debian", "ubuntu"}
    assert isinstance(facts["network"]["interfaces"], list)
    assert f"{facts['cpu']['cores']} cores" in report["summary"]

    report = _succeeded(fleet, fleet.wait_done(orders["metrics"]))
    metrics = _data(report, "metrics")
    assert {"load1", "load5", "load15"} <= set(metrics["load"])
    assert metrics["memory"]["availableBytes"] > 0
    assert all(0 <= fs["usedPercent"] <= 100 for fs in metrics["filesystems"])
    assert metrics["filesystems"]

    report = _succeeded(fleet, fleet.wait_done(orders["apt"]))
    analysis = _data(report, "analysis")
    assert analysis["applicable"] is True
    assert isinstance(analysis["upgrades"], list)
    assert analysis["counts"]["upgradable"] == len(analysis["upgrades"])
    assert isinstance(analysis["rebootRequired"], bool)
    assert isinstance(analysis["held"], list)

    report = _succeeded(fleet, fleet.wait_done(orders["dry_run"]))
    assert [s["name"] for s in report["steps"]] == ["plan", "result"]  # simulated only, never applied
    outcome = _data(report, "result")
    assert outcome["dryRun"] is True
    assert outcome["applied"] is False
    assert report["summary"].startswith("dry run: ")

    # Decided behaviour: no docker, or an engine that is not running, is a SUCCEEDED order whose
    # last step says applicable == false with a reason; it is not a failure of the playbook.
    report = _succeeded(fleet, fleet.wait_done(orders["docker"]))
    status = report["steps"][-1]["data"]
    if status["applicable"]:
        assert isinstance(status["containers"], list)
    else:
        assert status["reason"] in {"docker not found", "engine not running"}
        assert report["summary"].startswith("not applicable")

    with fleet.server.admin() as admin:
        me = next(r for r in admin.get("/v1/runners").json() if r["id"] == fleet.runner_id)
    assert set(me["capabilities"]) >= BUILTIN_KEYS
    assert time.monotonic() - started < 60


def test_apt_upgrade_rejects_a_package_name_that_looks_like_an_option(fleet: Fleet) -> None:
    with fleet.server.admin() as admin:
        response = admin.post(
            "/v1/orders",
            json={"serverId": fleet.server_id, "playbookKey": "apt.upgrade", "params": {"packages": ["-y"]}},
        )
    # the catalog schema stops it at the API; the runner checks the same pattern again
    assert response.status_code == 422, response.text
