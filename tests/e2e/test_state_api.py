"""The machine-state API over HTTP: a real server, orders completed through the runner routes with real
reports, then state, timeline, messages, reports, artifacts and the fleet summary, with server scope
and roles enforced for API clients."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest

from tests import support
from tests.state_reports import live

pytestmark = pytest.mark.e2e


def _server_with_runner(admin: httpx.Client, name: str) -> tuple[str, dict[str, str]]:
    runner = admin.post("/v1/runners", json={"name": f"runner-{name}"}).json()
    server = admin.post(
        "/v1/servers", json={"name": name, "hostname": f"{name}.example.net", "runnerId": runner["id"]}
    )
    assert server.status_code == 201, server.text
    return server.json()["id"], {"x-runner-id": runner["id"], "x-runner-token": runner["token"]}


def _run(
    admin: httpx.Client, runner: dict[str, str], server_id: str, key: str, report: dict[str, Any], status: str
) -> str:
    order = admin.post("/v1/orders", json={"serverId": server_id, "playbookKey": key})
    assert order.status_code == 201, order.text
    claimed = admin.post("/v1/runner/orders/claim-next", headers=runner)
    assert claimed.status_code == 200, claimed.text
    order_id, lease = claimed.json()["id"], claimed.json()["leaseToken"]
    assert admin.post(
        f"/v1/runner/orders/{order_id}/start", headers=runner, json={"leaseToken": lease}
    ).is_success
    logged = admin.post(
        f"/v1/runner/orders/{order_id}/logs",
        headers=runner,
        json={"leaseToken": lease, "chunks": [{"seq": 0, "stream": "stdout", "data": f"{key} ran\n"}]},
    )
    assert logged.is_success, logged.text
    done = admin.post(
        f"/v1/runner/orders/{order_id}/complete",
        headers=runner,
        json={"leaseToken": lease, "status": status, "report": report},
    )
    assert done.status_code == 200, done.text
    return str(order_id)


def _client(admin: httpx.Client, base: str, role: str, server_ids: list[str] | None) -> httpx.Client:
    body: dict[str, Any] = {"name": f"{role}-{len(server_ids or [])}", "role": role}
    if server_ids is not None:
        body["serverIds"] = server_ids
    issued = admin.post("/v1/api-clients", json=body)
    assert issued.status_code == 201, issued.text
    return httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {issued.json()['token']}"}, timeout=30
    )


def test_state_routes_over_http_with_scope_and_roles(live_server: support.LiveServer) -> None:
    facts = asyncio.run(live("system.facts"))
    metrics = asyncio.run(live("system.metrics"))
    failing = {
        "version": "v2",
        "summary": "apt simulation failed: E: Unable to locate package nope",
        "durationMs": 5,
        "steps": [{"name": "simulate", "status": "FAILED", "exitCode": 100, "output": "E: nope"}],
        "errors": [
            {"message": "step simulate ended FAILED (exit 100)", "code": "step_failed", "step": "simulate"}
        ],
    }
    with live_server.admin() as admin:
        mine, mine_runner = _server_with_runner(admin, "web-a")
        theirs, their_runner = _server_with_runner(admin, "web-b")
        _run(admin, mine_runner, mine, "system.facts", facts.report, facts.status)
        _run(admin, mine_runner, mine, "system.metrics", metrics.report, metrics.status)
        failed_order = _run(admin, their_runner, theirs, "apt.analyze", failing, "FAILED")

        state = admin.get(f"/v1/servers/{mine}/state").json()
        assert state["up"] is False  # no heartbeat was sent
        assert state["metrics"]["collectedAt"] is not None
        assert state["metrics"]["load1"] is not None
        assert state["factsCollectedAt"] is not None
        hardware = admin.get(f"/v1/servers/{mine}/hardware").json()
        assert hardware["cpuCores"] >= 1
        series = admin.get(f"/v1/servers/{mine}/metrics", params={"step": 3600}).json()
        assert sum(p["samples"] for p in series["points"]) == 1
        assert admin.get(f"/v1/servers/{theirs}/hardware").json()["reason"] == "hardware_unknown"

        their_state = admin.get(f"/v1/servers/{theirs}/state").json()
        assert their_state["lastError"]["orderId"] == failed_order
        assert their_state["health"] == "error"
        timeline = admin.get(f"/v1/servers/{theirs}/timeline", params={"severity": "error"}).json()
        assert {i["type"] for i in timeline["items"]} >= {"order.failed", "state.error"}
        reports = admin.get(f"/v1/servers/{theirs}/reports").json()["items"]
        report = admin.get(f"/v1/reports/{reports[0]['id']}").json()
        assert "## Errors" in report["markdown"]
        download = admin.get(f"/v1/artifacts/{report['artifactId']}")
        assert download.status_code == 200
        assert download.content == b"apt.analyze ran\n"
        assert download.headers["X-Content-SHA256"] == hashlib.sha256(download.content).hexdigest()

        observer = _client(admin, live_server.url, "observer", [mine])
        operator = _client(admin, live_server.url, "operator", [theirs])
        with observer, operator:
            assert observer.get(f"/v1/servers/{mine}/state").status_code == 200
            for path in (
                f"/v1/servers/{theirs}/state",
                f"/v1/servers/{theirs}/timeline",
                f"/v1/reports/{report['id']}",
                f"/v1/artifacts/{report['artifactId']}",
            ):
                refused = observer.get(path)
                assert refused.status_code == 404, (path, refused.text)
            summary = observer.get("/v1/fleet/summary").json()
            assert [s["serverId"] for s in summary["items"]] == [mine]
            assert (
                admin.get("/v1/fleet/summary").json()["items"][0]["serverId"] == theirs
            )  # most pressing first

            message = admin.get(f"/v1/servers/{theirs}/important-messages", params={"new": "true"}).json()[0]
            ack_path = f"/v1/servers/{theirs}/important-messages/{message['id']}/ack"
            assert (
                observer.post(f"/v1/servers/{mine}/important-messages/{message['id']}/ack").status_code == 403
            )
            acked = operator.post(ack_path)
            assert acked.status_code == 200, acked.text
            assert acked.json()["acknowledged"] is True
            assert acked.json()["acknowledgedBy"].startswith("api_client:")
            assert observer.post(f"/v1/artifacts/{report['artifactId']}/pin").status_code == 403
            pinned = operator.post(f"/v1/artifacts/{report['artifactId']}/pin")
            assert pinned.status_code == 200
            assert pinned.json()["retentionPolicy"] == "pinned"
            unpinned = operator.delete(f"/v1/artifacts/{report['artifactId']}/pin")
            assert unpinned.json()["retentionPolicy"] == "failed"

            assert observer.put(f"/v1/servers/{mine}/schedules", json={"schedules": []}).status_code == 403
            put = operator.put(
                f"/v1/servers/{theirs}/schedules",
                json={"schedules": [{"playbookKey": "system.metrics", "intervalSeconds": 600}]},
            )
            assert put.status_code == 200, put.text
            assert [(s["playbookKey"], s["intervalSeconds"], s["enabled"]) for s in put.json()] == [
                ("system.metrics", 600, True)
            ]

        rebuilt = admin.post("/v1/state/rebuild", json={})
        assert rebuilt.status_code == 200
        assert rebuilt.json()["rebuilt"] == 2
        assert admin.get(f"/v1/servers/{theirs}/state").json()["lastError"] == their_state["lastError"]
