"""Data the browser tests look at, made through the product's own HTTP API with the admin key."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from ikoma.services.local_runner import local_names

# an apt.analyze run that failed: its error becomes an important message of the server
FAILED_APT_REPORT: dict[str, Any] = {
    "version": "v2",
    "summary": "apt simulation failed: E: Unable to locate package nope",
    "durationMs": 5,
    "steps": [{"name": "simulate", "status": "FAILED", "exitCode": 100, "output": "E: nope"}],
    "errors": [
        {"message": "step simulate ended FAILED (exit 100)", "code": "step_failed", "step": "simulate"}
    ],
}


def local_server_id(api: httpx.Client) -> str:
    """The id of the server `ikoma up` made for this machine."""
    name, _ = local_names()
    servers = api.get("/v1/servers")
    assert servers.status_code == 200, servers.text
    found = [s["id"] for s in servers.json() if s["name"] == name]
    assert found, f"no server named {name} in {servers.json()}"
    return str(found[0])


def server_with_an_important_message(api: httpx.Client) -> tuple[str, str]:
    """(server id, message id): a new server whose test runner completed a failed apt.analyze through
    the runner routes, as a real runner would, leaving one new important message."""
    name = f"browser-{secrets.token_hex(4)}"
    runner = api.post("/v1/runners", json={"name": f"runner-{name}"})
    assert runner.status_code == 201, runner.text
    headers = {"x-runner-id": runner.json()["id"], "x-runner-token": runner.json()["token"]}
    server = api.post(
        "/v1/servers",
        json={"name": name, "hostname": f"{name}.example.net", "runnerId": runner.json()["id"]},
    )
    assert server.status_code == 201, server.text
    server_id = str(server.json()["id"])
    order = api.post("/v1/orders", json={"serverId": server_id, "playbookKey": "apt.analyze"})
    assert order.status_code == 201, order.text
    claimed = api.post("/v1/runner/orders/claim-next", headers=headers)
    assert claimed.status_code == 200, claimed.text
    order_id, lease = claimed.json()["id"], claimed.json()["leaseToken"]
    started = api.post(f"/v1/runner/orders/{order_id}/start", headers=headers, json={"leaseToken": lease})
    assert started.is_success, started.text
    done = api.post(
        f"/v1/runner/orders/{order_id}/complete",
        headers=headers,
        json={"leaseToken": lease, "status": "FAILED", "report": FAILED_APT_REPORT},
    )
    assert done.status_code == 200, done.text
    messages = api.get(f"/v1/servers/{server_id}/important-messages", params={"new": "true"})
    assert messages.status_code == 200, messages.text
    assert messages.json(), "the failed run left no important message"
    return server_id, str(messages.json()[0]["id"])
