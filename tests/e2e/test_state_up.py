"""A fresh `ikoma up`: its first scheduled facts, metrics and apt orders fill the local server's state and
timeline, seen through the API and `ikoma servers show`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import processes, support

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ika_state_up_0123456789abcdefghij"


def _start_up(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    # a tick every second; default schedules are on for `ikoma up` and due at once
    return support.start_up(tmp_path, port, ADMIN_KEY, {"IKOMA_RECONCILE_INTERVAL": "1"})


def _collected(state: dict[str, Any]) -> bool:
    return bool(
        state["factsCollectedAt"] and state["metrics"]["collectedAt"] and state["apt"]["status"] is not None
    )


def test_up_collects_facts_metrics_and_apt_on_schedule_and_shows_them(tmp_path: Path) -> None:
    port = support.free_port()
    process = _start_up(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"X-Api-Key": ADMIN_KEY}, timeout=30) as admin:
            server = admin.get("/v1/servers").json()[0]
            deadline = time.monotonic() + 120
            state = admin.get(f"/v1/servers/{server['id']}/state").json()
            while not _collected(state) and time.monotonic() < deadline:
                time.sleep(0.5)
                state = admin.get(f"/v1/servers/{server['id']}/state").json()
            assert _collected(state), (state, (tmp_path / "up.log").read_text()[-3000:])
            assert state["up"] is True
            assert state["health"] in ("ok", "warning", "error")
            assert state["metrics"]["load1"] is not None
            schedules = admin.get(f"/v1/servers/{server['id']}/schedules").json()
            assert {s["playbookKey"] for s in schedules} >= {"system.metrics", "apt.analyze", "system.facts"}
            assert all(s["lastOrderId"] for s in schedules)
            hardware = admin.get(f"/v1/servers/{server['id']}/hardware").json()
            assert hardware["cpuCores"] >= 1
            timeline = admin.get(f"/v1/servers/{server['id']}/timeline", params={"limit": 200}).json()
            types = {i["type"] for i in timeline["items"]}
            assert {"order.queued", "order.succeeded"} <= types
            assert "runner.online" in types
            reports = admin.get(f"/v1/servers/{server['id']}/reports").json()["items"]
            assert {"system.facts", "system.metrics", "apt.analyze"} <= {r["playbookKey"] for r in reports}
            summary = admin.get("/v1/fleet/summary").json()
            assert summary["servers"] == 1

        cli_env = {k: v for k, v in os.environ.items() if not k.startswith("IKOMA_")}
        cli_env.update({"IKOMA_API_URL": base, "IKOMA_API_KEY": ADMIN_KEY, "COLUMNS": "160"})
        shown = processes.run(
            [sys.executable, "-m", "ikoma", "servers", "show", server["name"]],
            env=cli_env,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        for label in ("Up", "Updates", "Reboot", "Docker", "Now", "Hardware", "Timeline", server["name"]):
            assert label in shown.stdout, (label, shown.stdout)
        assert "order.succeeded" in shown.stdout
        as_json = processes.run(
            [sys.executable, "-m", "ikoma", "servers", "show", server["id"], "--json"],
            env=cli_env,
            text=True,
            timeout=60,
        )
        assert as_json.returncode == 0, as_json.stderr
        document = json.loads(as_json.stdout)
        assert document["state"]["serverId"] == server["id"]
        assert document["timeline"]
    finally:
        support.stop_up(process)
