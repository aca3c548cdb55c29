"""Scenario 14 over real HTTP: a secret order param is sealed in the database, a placeholder in every
answer, and in clear only in the claim of the runner that holds the lease."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import support

pytestmark = [pytest.mark.e2e]

PASSWORD = "hunter2-" + uuid.uuid4().hex
DSN_SECRET = "dsn-" + uuid.uuid4().hex


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    yield from support.live_server_per_module(request, tmp_path_factory)


def _database_bytes(server: support.LiveServer) -> bytes:
    """Everything the database holds, as an attacker with the file or a dump would see it."""
    if server.database_url.startswith("sqlite"):
        path = Path(server.database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # db, -wal, -shm
    dump = subprocess.run(
        ["pg_dump", "--no-owner", server.database_url], capture_output=True, check=True, timeout=120
    )
    return dump.stdout


def test_a_secret_param_is_sealed_at_rest_hidden_in_answers_and_clear_for_the_lease_holder(
    server: support.LiveServer,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    with server.admin() as admin:
        playbook = admin.post(
            "/v1/playbooks",
            json={
                "key": f"db.rotate-{suffix}",
                "paramsSchema": {
                    "type": "object",
                    "properties": {
                        "user": {"type": "string"},
                        "password": {"type": "string"},
                        "dsn": {"type": "string", "writeOnly": True},
                    },
                },
            },
        )
        assert playbook.status_code == 201, playbook.text
        machine = admin.post("/v1/servers", json={"name": f"db-{suffix}", "hostname": f"db-{suffix}.test"})
        assert machine.status_code == 201, machine.text
        runner = admin.post("/v1/runners", json={"name": f"runner-db-{suffix}"})
        assert runner.status_code == 201, runner.text
        attached = admin.patch(f"/v1/servers/{machine.json()['id']}", json={"runnerId": runner.json()["id"]})
        assert attached.status_code == 200, attached.text

        created = admin.post(
            "/v1/orders",
            json={
                "serverId": machine.json()["id"],
                "playbookKey": f"db.rotate-{suffix}",
                "params": {
                    "user": "app",
                    "password": PASSWORD,
                    "dsn": f"postgresql://app:{DSN_SECRET}@db/app",
                },
            },
        )
        assert created.status_code == 201, created.text
        order = created.json()["order"]
        assert order["params"] == {"user": "app", "password": "********", "dsn": "********"}
        shown = admin.get(f"/v1/orders/{order['id']}").json()
        listed = admin.get("/v1/orders", params={"serverId": machine.json()["id"]}).json()
        assert [item["params"] for item in listed["items"]] == [order["params"]]

    for answer in (shown, listed):
        assert PASSWORD not in str(answer)
        assert DSN_SECRET not in str(answer)
    at_rest = _database_bytes(server)
    assert PASSWORD.encode() not in at_rest
    assert DSN_SECRET.encode() not in at_rest

    headers = {"x-runner-id": runner.json()["id"], "x-runner-token": runner.json()["token"]}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as as_runner:
        claim = as_runner.post("/v1/runner/orders/claim-next")
        assert claim.status_code == 200, claim.text
        assert claim.json()["params"]["password"] == PASSWORD
        assert claim.json()["params"]["dsn"] == f"postgresql://app:{DSN_SECRET}@db/app"
        started = as_runner.post(
            f"/v1/runner/orders/{order['id']}/start", json={"leaseToken": claim.json()["leaseToken"]}
        )
        assert started.status_code == 200, started.text
        assert PASSWORD not in started.text  # only the claim carries it
    assert PASSWORD not in server.read_log()
