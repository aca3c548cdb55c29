"""A Mock deployment over a real `ikoma serve` (SQLite and PostgreSQL): POST /deployments → the
machine boots a real runner process that enrols with the instance's one-time token → `ready` →
`system.test_ping` runs on its server → DELETE → `terminated` and the runner process gone. And a crash
(SIGKILL) between the provider's create and the database commit ends, after restart, with one machine
for the instance, adopted by its tag, not two.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ikoma.providers import base
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.scenarios import parse_rule
from ikoma.providers.mock.store import DatabaseStore
from ikoma.providers.registry import MOCK_MACHINES_DIR
from ikoma.storage.database import Database
from tests import processes, support

pytestmark = pytest.mark.e2e
ENV = {
    "IKOMA_MOCK_BOOT_SECONDS": "0",
    "IKOMA_MOCK_TICK_INTERVAL": "0.2",
    "IKOMA_INSTANCE_LOOP_INTERVAL": "0.5",
    "IKOMA_INSTANCE_LEASE": "3",
}


@pytest.fixture
def server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    with support.LiveServer(
        database_url=server_database_url, data_dir=tmp_path / "data", extra_env=ENV
    ) as live:
        yield live


def wait_for(check: Callable[[], bool], what: str, server: support.LiveServer, timeout: float = 0) -> None:
    deadline = time.monotonic() + (timeout or processes.START_TIMEOUT)
    while not check():
        if time.monotonic() > deadline:
            logs = "".join(
                f"\n--- {p}:\n{processes.read_tail(p)}"
                for p in (server.data_dir / MOCK_MACHINES_DIR).glob("*/runner.log")
            )
            pytest.fail(f"{what}: not in time\nserver log:\n{server.log_tail()}{logs}")
        time.sleep(0.3)


def deployment(admin: httpx.Client) -> dict[str, str]:
    kind = next(t for t in admin.get("/instance_types").json() if t["code"] == "MOCK-GPU-S")
    zone = next(z for z in admin.get("/zones").json() if z["code"] == "mock-par-1")
    model = next(m for m in admin.get("/models").json() if m["name"] == "Qwen/Qwen2.5-0.5B-Instruct")
    return {"instance_type_id": kind["id"], "zone_id": zone["id"], "model_id": model["id"]}


def pids_of(marker: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(marker).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def state(admin: httpx.Client, instance_id: str) -> str:
    return str(admin.get(f"/instances/{instance_id}").json()["state"])


def machines_tagged(server: support.LiveServer, instance_id: str) -> list[Any]:
    async def read() -> list[Any]:
        db = Database(server.database_url)
        try:
            machines = await MockCloud(DatabaseStore(db)).tick()
            return [m for m in machines if m.visible and m.tags.get(base.INSTANCE_TAG) == instance_id]
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_a_mock_deployment_runs_a_ping_on_its_own_runner_and_is_terminated(
    server: support.LiveServer,
) -> None:
    with server.admin() as admin:
        created = admin.post("/deployments", json=deployment(admin))
        assert created.status_code == 201, created.text
        instance = created.json()
        wait_for(lambda: state(admin, instance["id"]) == "ready", "the instance became ready", server)
        machine_dir = (server.data_dir / MOCK_MACHINES_DIR / instance["providerId"]).resolve()
        assert pids_of(machine_dir), "its runner is a real process started from the machine's data dir"
        shown = admin.get(f"/instances/{instance['id']}").json()
        assert shown["runnerId"] is not None

        order = admin.post(
            "/v1/orders", json={"serverId": shown["serverId"], "playbookKey": "system.test_ping"}
        )
        assert order.status_code == 201, order.text
        order_id = order.json()["order"]["id"]
        final = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"}
        wait_for(
            lambda: admin.get(f"/v1/orders/{order_id}").json()["status"] in final, "the ping ended", server
        )
        assert admin.get(f"/v1/orders/{order_id}").json()["status"] == "SUCCEEDED"

        deleted = admin.delete(f"/instances/{instance['id']}")
        assert (deleted.status_code, deleted.json()["state"]) == (202, "terminating")
        wait_for(lambda: state(admin, instance["id"]) == "terminated", "the instance was terminated", server)
        wait_for(lambda: not pids_of(machine_dir), "its runner process is gone", server)
        kinds = [
            e["kind"]
            for e in admin.get("/v1/events", params={"kind": "instance", "limit": 1000}).json()["events"]
            if (e.get("data") or {}).get("instanceId") == instance["id"]
        ]
        assert kinds == [
            "instance.provisioning",
            "instance.booting",
            "instance.ready",
            "instance.terminating",
            "instance.terminated",
        ]


def test_a_crash_between_create_and_commit_ends_with_one_machine(server: support.LiveServer) -> None:
    async def slow_create() -> None:
        db = Database(server.database_url)
        try:  # the next create takes effect, then answers 30 s late: the server dies in between
            await MockCloud(DatabaseStore(db)).add_rule(parse_rule("latency:30", zone="mock-par-1", calls=1))
        finally:
            await db.dispose()

    with server.admin() as admin:
        fields = deployment(admin)
        asyncio.run(slow_create())
        answers: list[Any] = []

        def post() -> None:
            try:
                answers.append(admin.post("/deployments", json=fields, timeout=60))
            except httpx.HTTPError as exc:
                answers.append(exc)

        caller = threading.Thread(target=post)
        caller.start()
        found: list[dict[str, Any]] = []

        def created_at_provider() -> bool:
            found[:] = admin.get("/instances").json()
            return bool(found) and bool(machines_tagged(server, found[0]["id"]))

        wait_for(created_at_provider, "the provider created the machine", server)
        assert found[0]["state"] == "provisioning"  # the create's answer has not come back
        server.stop(signal.SIGKILL)
        caller.join(timeout=60)
        assert answers
        assert isinstance(answers[0], httpx.HTTPError)
    server.start()
    with server.admin() as admin:
        instance_id = found[0]["id"]
        wait_for(lambda: state(admin, instance_id) in ("booting", "ready"), "the machine was adopted", server)
        assert len(admin.get("/instances").json()) == 1
        assert len(machines_tagged(server, instance_id)) == 1
        entries = admin.get("/action_logs", params={"channel": "system"}).json()["items"]
        actions = [e["action"] for e in entries]
        # adopted, never created a second time
        assert [a for a in actions if a.startswith("provider.")] == ["provider.adopt"]
        assert {"instance.provisioning", "instance.booting"} <= set(actions)


def run_cli(server: support.LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env.update(
        {"IKOMA_API_URL": server.url, "IKOMA_API_KEY": server.admin_key, "COLUMNS": "250", "NO_COLOR": "1"}
    )
    return processes.run([sys.executable, "-m", "ikoma", *args], text=True, env=env, timeout=180)


def test_the_readme_three_commands_deploy_and_delete_with_the_cli(server: support.LiveServer) -> None:
    created = run_cli(
        server,
        "instances",
        "create",
        "--type",
        "MOCK-GPU-S",
        "--zone",
        "mock-par-1",
        "--model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--name",
        "from-cli",
        "--timeout",
        "120",
    )
    assert created.returncode == 0, created.stderr + server.log_tail()
    listed = run_cli(server, "instances", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [instance] = json.loads(listed.stdout)
    assert (instance["name"], instance["state"]) == ("from-cli", "ready")
    deleted = run_cli(server, "instances", "delete", instance["id"][:8], "--timeout", "120")
    assert deleted.returncode == 0, deleted.stderr
    shown = run_cli(server, "instances", "show", instance["id"], "--json")
    assert json.loads(shown.stdout)["state"] == "terminated"
    unknown = run_cli(server, "instances", "create", "--type", "NOPE", "--zone", "mock-par-1", "--model", "x")
    assert unknown.returncode == 1
    assert "not_found" in unknown.stderr
