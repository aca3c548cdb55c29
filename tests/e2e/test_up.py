"""`ikoma up`: the API with a runner for this machine, so a ping succeeds right after start."""

from __future__ import annotations

import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import support

pytestmark = pytest.mark.e2e

ADMIN_KEY = "ika_up_test_0123456789abcdefghij"


def _start_up(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return support.start_up(tmp_path, port, ADMIN_KEY)


def _stop(process: subprocess.Popen[bytes]) -> None:
    support.stop_up(process)  # SIGTERM; past 30 s SIGKILL for it and its local runner


def _admin(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"x-ikoma-admin-key": ADMIN_KEY})


def _ping(admin: httpx.Client) -> dict[str, object]:
    server = admin.get("/v1/servers").json()[0]
    order = admin.post(
        "/v1/orders", json={"serverId": server["id"], "playbookKey": "system.test_ping"}
    ).json()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = admin.get(f"/v1/orders/{order['order']['id']}").json()
        if current["status"] not in ("QUEUED", "CLAIMED", "RUNNING"):
            return dict(current)
        time.sleep(0.1)
    raise AssertionError(f"ping did not end: {current}")


def test_up_runs_a_local_runner_that_completes_a_ping_and_is_reused_after_restart(tmp_path: Path) -> None:
    port = support.free_port()
    process = _start_up(tmp_path, port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"x-ikoma-admin-key": ADMIN_KEY}
        ) as admin:
            done = _ping(admin)
            assert done["status"] == "SUCCEEDED"
            assert done["reportVersion"] == "v2"
            # the tools find a writable apps root under the data dir, not /srv/apps
            platform = admin.post("/execute/platform.check", json={})
            assert platform.status_code == 200, platform.text
            apps_root = platform.json()["details"]["appsRoot"]
            assert apps_root["path"] == str((tmp_path / "data" / "apps").resolve())
            assert platform.json()["checks"]["appsRoot"] is True
    finally:
        _stop(process)
    credentials = tmp_path / "data" / "runner.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    process = _start_up(tmp_path, port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"x-ikoma-admin-key": ADMIN_KEY}
        ) as admin:
            assert _ping(admin)["status"] == "SUCCEEDED"
            assert len(admin.get("/v1/runners").json()) == 1  # the same local runner, not a new one
    finally:
        _stop(process)
