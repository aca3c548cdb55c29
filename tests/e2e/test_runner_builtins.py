"""The built-in playbooks through a real server and a real runner process, on this machine.

Only read-only playbooks run for real; apt.upgrade runs with dryRun (a simulation) and
docker.prune is left to the unit tests, which use a fake docker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e.fleet import Fleet, attach_fleet, unique

pytestmark = [pytest.mark.e2e]

BUILTIN_KEYS = {
    "system.facts",
    "system.metrics",
    "apt.analyze",
    "apt.upgrade",
    "docker.status",
    "docker.prune",
}


@pytest.fixture
def fleet(shared_server: support.LiveServer, tmp_path: Path) -> Iterator[Fleet]:
    """On the module's server (one per backend): a server and runner of the test's own."""
    fleet = attach_fleet(shared_server, tmp_path, name=unique("host"))
    fleet.start_runner()
    yield fleet
    fleet.stop_runners()


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


def test_apt_upgrade_rejects_a_package_name_that_looks_like_an_option(fleet: Fleet) -> None:
    with fleet.server.admin() as admin:
        response = admin.post(
            "/v1/orders",
            json={"serverId": fleet.server_id, "playbookKey": "apt.upgrade", "params": {"packages": ["-y"]}},
        )
    # the catalog schema stops it at the API; the runner checks the same pattern again
    assert response.status_code == 422, response.text
