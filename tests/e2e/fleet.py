"""One server with one attached runner identity, and the real runner processes started for it.

Shared by the e2e tests that run `python -m ikoma runner` against a real server. Runners are started
in process groups of their own (tests/processes.py): `stop_runners`/`kill` reach the whole group, and
the session's safety net kills any a test left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import processes, support

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"}


@dataclass
class Fleet:
    server: support.LiveServer
    server_id: str
    runner_id: str
    token: str
    workdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def order(self, playbook: str, params: dict[str, Any], **extra: Any) -> str:
        with self.server.admin() as admin:
            response = admin.post(
                "/v1/orders",
                json={"serverId": self.server_id, "playbookKey": playbook, "params": params, **extra},
            )
        assert response.status_code == 201, response.text
        return str(response.json()["order"]["id"])

    def get(self, order_id: str) -> dict[str, Any]:
        with self.server.admin() as admin:
            response = admin.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def events(self, order_id: str) -> list[dict[str, Any]]:
        with self.server.admin() as admin:
            response = admin.get(f"/v1/orders/{order_id}/events")
        assert response.status_code == 200, response.text
        return list(response.json())

    def wait_status(self, order_id: str, statuses: set[str], timeout: float = 60.0) -> dict[str, Any]:
        """The order once its status is in `statuses`; generous by default (a loaded machine is slow,
        not wrong): a test that proves a bound passes its own `timeout`."""
        deadline = time.monotonic() + timeout
        order = self.get(order_id)
        while order["status"] not in statuses and time.monotonic() < deadline:
            time.sleep(0.1)
            order = self.get(order_id)
        assert order["status"] in statuses, (
            f"order {order['status']}, wanted {statuses}: {order}\n{self.logs_tail()}"
        )
        return order

    def logs_tail(self) -> str:
        """The last lines of the server's log and of each runner's, for a failure message."""
        parts = [f"--- server log:\n{self.server.log_tail()}"]
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}:\n{processes.read_tail(path)}")
        return "\n".join(parts)

    def wait_done(self, order_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.wait_status(order_id, FINAL, timeout=timeout)

    def start_runner(self, name: str = "runner", parallel: int = 1) -> subprocess.Popen[bytes]:
        env = support.clean_env()
        env["IKOMA_CLAIM_LEASE"] = "3"  # the runner heartbeats its orders every second (lease / 3)
        argv = [
            sys.executable, "-m", "ikoma", "runner",
            "--api-url", self.server.url, "--runner-id", self.runner_id, "--token", self.token,
            "--state-dir", str(self.workdir / "state"), "--kill-grace", "1", "--heartbeat-interval", "1",
            "--claim-wait", "2", "--spool-retry-interval", "1", "--log-level", "info",
            "--parallel", str(parallel),
        ]  # fmt: skip
        proc = processes.spawn(argv, env=env, log_path=self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def runner_log(self, name: str = "runner") -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def read_logs(self, order_id: str, *, limit: int = 1000, wait: float = 1.0) -> tuple[list[Any], Any]:
        """Every chunk, page after page (afterSeq = nextSeq - 1) until `done`; and the last page."""
        items: list[dict[str, Any]] = []
        after = -1
        deadline = time.monotonic() + 60
        with self.server.admin() as admin:
            while True:
                response = admin.get(
                    f"/v1/orders/{order_id}/logs", params={"afterSeq": after, "limit": limit, "wait": wait}
                )
                assert response.status_code == 200, response.text
                page = response.json()
                assert len(page["items"]) <= limit
                items += page["items"]
                after = page["nextSeq"] - 1
                if page["done"]:
                    return items, page
                assert time.monotonic() < deadline, f"logs never done; last page {page}"

    def stop_runners(self) -> None:
        for proc in self.procs:
            kill(proc)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a runner and its process group (its steps run in groups of their own)."""
    processes.kill(proc)


def unique(prefix: str) -> str:
    """A name no other test on a shared server uses (names are unique: a second `web-1` is a 409)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def attach_fleet(server: support.LiveServer, workdir: Path, name: str = "web-1") -> Fleet:
    """A server `name` with a runner `runner-<name>` attached, on a running API.

    On a server shared by several tests, pass `name=unique("web")`.
    """
    with server.admin() as admin:
        srv = admin.post("/v1/servers", json={"name": name, "hostname": f"{name}.example.net"})
        assert srv.status_code == 201, srv.text
        runner = admin.post("/v1/runners", json={"name": f"runner-{name}"})
        assert runner.status_code == 201, runner.text
        attach = admin.patch(f"/v1/servers/{srv.json()['id']}", json={"runnerId": runner.json()["id"]})
        assert attach.status_code == 200, attach.text
    return Fleet(server, srv.json()["id"], runner.json()["id"], runner.json()["token"], workdir)
