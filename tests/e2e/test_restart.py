"""Scenario 11: the API restarted between any two transitions ends where an uninterrupted run ends.

All state lives in the database (leases, attempts, events, token hashes), so a restart must be
invisible to a runner: its token, its lease token and its claimed order survive the process.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import support

pytestmark = [
    pytest.mark.e2e,
]

REPORT = {
    "version": "v2",
    "summary": "restart ok",
    "durationMs": 7,
    "steps": [{"name": "ping", "status": "SUCCEEDED", "durationMs": 3}],
    "errors": [],
}
# What must match between an interrupted and an uninterrupted run (ids and clock readings differ).
ORDER_FIELDS = (
    "status",
    "attempt",
    "maxAttempts",
    "timeoutSeconds",
    "playbookKey",
    "action",
    "params",
    "runnerId",
    "cancelRequested",
    "statusReason",
    "reportVersion",
    "reportSummary",
    "report",
)
SET_OR_NOT = ("claimedAt", "startedAt", "finishedAt", "leaseExpiresAt", "notBefore")
EVENT_FIELDS = ("fromStatus", "toStatus", "reason", "attempt", "actor", "details")
ATTEMPT_FIELDS = ("attempt", "runnerId", "outcome", "reason")


@dataclass
class Runner:
    """A runner's credentials; every call opens a fresh connection, as after a restart it must."""

    server: support.LiveServer
    id: str
    token: str
    server_id: str

    def post(self, path: str, json: Any = None) -> httpx.Response:
        headers = {"x-runner-id": self.id, "x-runner-token": self.token}
        return httpx.post(f"{self.server.url}{path}", json=json, headers=headers, timeout=30)


def admin_get(server: support.LiveServer, path: str) -> Any:
    with server.admin() as admin:
        response = admin.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def new_runner(server: support.LiveServer) -> Runner:
    suffix = uuid.uuid4().hex[:8]
    with server.admin() as admin:
        runner = admin.post("/v1/runners", json={"name": f"runner-{suffix}"})
        assert runner.status_code == 201, runner.text
        host = admin.post(
            "/v1/servers",
            json={"name": f"web-{suffix}", "hostname": "web.example.net", "runnerId": runner.json()["id"]},
        )
        assert host.status_code == 201, host.text
    return Runner(server, runner.json()["id"], runner.json()["token"], host.json()["id"])


def walk_order(server: support.LiveServer, runner: Runner, between: Callable[[], None]) -> str:
    """create → claim → start → heartbeat → complete, calling `between` between each two steps."""
    with server.admin() as admin:
        created = admin.post(
            "/v1/orders",
            json={
                "serverId": runner.server_id,
                "playbookKey": "system.test_ping",
                "params": {"message": "hi"},
            },
        )
    assert created.status_code == 201, created.text
    order_id: str = created.json()["order"]["id"]
    between()

    claimed = runner.post("/v1/runner/orders/claim-next")
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["id"] == order_id
    lease = {"leaseToken": claimed.json()["leaseToken"]}
    between()

    started = runner.post(f"/v1/runner/orders/{order_id}/start", lease)
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "RUNNING"
    between()

    beat = runner.post(f"/v1/runner/orders/{order_id}/heartbeat", lease)
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancelRequested"] is False
    between()

    done = runner.post(
        f"/v1/runner/orders/{order_id}/complete", {"status": "SUCCEEDED", "report": REPORT, **lease}
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "SUCCEEDED"
    return order_id


def outcome(server: support.LiveServer, order_id: str) -> dict[str, Any]:
    """The order, its attempts and its events, without what legitimately differs between two runs."""
    order = admin_get(server, f"/v1/orders/{order_id}")
    events = admin_get(server, f"/v1/orders/{order_id}/events")
    return {
        "order": {k: order[k] for k in ORDER_FIELDS},
        "timestamps set": {k: order[k] is not None for k in SET_OR_NOT},
        "attempts": [{k: a[k] for k in ATTEMPT_FIELDS} for a in order["attempts"]],
        "attempt timestamps set": [
            [a[k] is not None for k in ("claimedAt", "startedAt", "endedAt")] for a in order["attempts"]
        ],
        "events": [{k: e[k] for k in EVENT_FIELDS} for e in events],
    }


def test_restart_between_every_transition_ends_like_an_uninterrupted_run(
    live_server: support.LiveServer,
) -> None:
    runner = new_runner(live_server)
    reference = outcome(live_server, walk_order(live_server, runner, between=lambda: None))

    restarted = outcome(live_server, walk_order(live_server, runner, between=live_server.restart))

    assert restarted == reference
    assert restarted["order"]["status"] == "SUCCEEDED"
    assert restarted["order"]["attempt"] == 1
    assert len(restarted["attempts"]) == 1
    assert [(e["toStatus"], e["reason"]) for e in restarted["events"]] == [
        ("QUEUED", "created"),
        ("CLAIMED", "claimed"),
        ("RUNNING", "started"),
        ("SUCCEEDED", "completed"),
    ]


def test_order_created_before_a_restart_is_claimed_after_it_with_the_same_runner_token(
    live_server: support.LiveServer,
) -> None:
    runner = new_runner(live_server)
    with live_server.admin() as admin:
        created = admin.post(
            "/v1/orders", json={"serverId": runner.server_id, "playbookKey": "system.test_ping"}
        )
    assert created.status_code == 201, created.text

    live_server.restart()

    beat = runner.post("/v1/runner/heartbeat", {"version": "e2e"})
    assert beat.status_code == 200, beat.text
    assert beat.json()["serverId"] == runner.server_id
    claimed = runner.post("/v1/runner/orders/claim-next")
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["id"] == created.json()["order"]["id"]
    assert claimed.json()["attempt"] == 1


# --- the generated admin key -----------------------------------------------------------------------------
class GeneratedKeyServer(support.LiveServer):
    """A server started without IKOMA_ADMIN_KEY: it generates its own key."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        del env["IKOMA_ADMIN_KEY"]
        return env


GENERATED = re.compile(r"admin key \(generated, shown this once, stored hashed\): (ika_\S+)")


async def _pg_rows(url: str) -> list[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [repr(tuple(r)) for r in await conn.fetch("SELECT * FROM admin_keys")]
    finally:
        await conn.close()


def stored_admin_key_bytes(database_url: str) -> bytes:
    """Everything the database holds for admin keys: the raw SQLite files, or the PostgreSQL rows."""
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        files = sorted(path.parent.glob(path.name + "*"))  # the database, its WAL and shared memory
        assert files
        return b"".join(f.read_bytes() for f in files)
    return "\n".join(asyncio.run(_pg_rows(database_url))).encode()


def test_generated_admin_key_is_shown_once_kept_across_restart_and_stored_only_hashed(
    server_database_url: str, tmp_path: Path
) -> None:
    server = GeneratedKeyServer(database_url=server_database_url, data_dir=tmp_path / "data")
    server.start()
    try:
        found = GENERATED.findall(server.read_log())
        assert len(found) == 1, server.read_log()
        key = found[0]
        server.admin_key = key
        with server.admin() as admin:
            assert admin.get("/v1/servers").status_code == 200
        assert (
            httpx.get(f"{server.url}/v1/servers", headers={"x-ikoma-admin-key": "ika_wrong"}).status_code
            == 401
        )

        server.restart()
        log = server.read_log()
        assert "generated earlier" in log, log
        assert GENERATED.findall(log) == [key], "the key is printed only when it is generated"
        assert f"generated earlier ({key[:8]}…)" in log, log
        with server.admin() as admin:
            assert admin.get("/v1/servers").status_code == 200
    finally:
        server.stop()

    stored = stored_admin_key_bytes(server_database_url)
    assert stored, "the admin key row was not found"
    assert key.encode() not in stored
    assert key[8:].encode() not in stored  # not even the secret part without its visible prefix
