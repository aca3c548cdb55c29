"""Every refused tool call is in the audit log under its tool (`execute:<tool>`, `mcp:<tool>`), the name
allowed calls use, whatever refused it: the policy (no credential, X-Role above the credential, an unknown
role), the tool path, or a name too long to be a tool. On SQLite and PostgreSQL (whose columns refuse an
over-long value, so nothing too long may reach them).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests import support

pytestmark = pytest.mark.e2e

ACCEPT = {"Accept": "application/json, text/event-stream"}


def api_key(server: support.LiveServer, role: str) -> str:
    with server.admin() as admin:
        created = admin.post("/v1/api-clients", json={"name": f"caller-{role}", "role": role})
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def denied(server: support.LiveServer) -> list[dict[str, Any]]:
    with server.admin() as admin:
        page = admin.get("/v1/audit", params={"outcome": "denied", "limit": 500})
    assert page.status_code == 200, page.text
    return list(reversed(page.json()["items"]))


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def test_policy_refusals_of_execute_are_audited_under_the_tool(live_server: support.LiveServer) -> None:
    observer = api_key(live_server, "observer")
    body = {"appName": "shop", "serverId": "web-1", "wait": 0}
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        escalated = http.post(
            "/execute/deploy.up", json=body, headers={"X-Api-Key": observer, "X-Role": "admin"}
        )
        unknown_role = http.post(
            "/execute/apps.status", json=body, headers={"X-Api-Key": observer, "X-Role": "root"}
        )
        anonymous = http.post("/execute/apps.logs", json=body)
        wrong_key = http.post("/execute/db.status", json=body, headers={"X-Api-Key": "ikoma_not-a-key"})
    assert (escalated.status_code, escalated.json()["reason"]) == (403, "role_escalation")
    assert (unknown_role.status_code, unknown_role.json()["reason"]) == (400, "invalid_role")
    assert anonymous.status_code == wrong_key.status_code == 401

    entries = denied(live_server)
    assert [(e["action"], e["channel"], e["reason"]) for e in entries] == [
        ("execute:deploy.up", "execute", "role_escalation"),
        ("execute:apps.status", "execute", "invalid_role"),
        ("execute:apps.logs", "execute", "unauthorized"),
        ("execute:db.status", "execute", "unauthorized"),
    ]
    assert entries[0]["tokenPrefix"] == entries[1]["tokenPrefix"] == observer[:14]
    assert entries[2]["actorKind"] == "anonymous"
    assert entries[3]["tokenPrefix"] == "ikoma_no"
    # filtering the audit by tool finds the refusal
    with live_server.admin() as admin:
        found = admin.get("/v1/audit", params={"action": "execute:deploy.up"}).json()["items"]
    assert [e["reason"] for e in found] == ["role_escalation"]


def test_a_tool_name_too_long_to_exist_is_refused_and_audited_cut_short(
    live_server: support.LiveServer,
) -> None:
    name = "x" * 5000
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        known_caller = http.post(f"/execute/{name}", json={}, headers={"X-Api-Key": live_server.admin_key})
        anonymous = http.post(f"/execute/{name}", json={})
    assert (known_caller.status_code, known_caller.json()["reason"]) == (404, "tool_not_found")
    assert len(known_caller.json()["details"]["tool"]) < 300
    assert anonymous.status_code == 401

    entries = denied(live_server)
    assert [e["reason"] for e in entries] == ["tool_not_found", "unauthorized"]
    for entry in entries:
        assert entry["action"].startswith("execute:xxxx")
        assert entry["action"].endswith("…")
        assert len(entry["action"]) <= 200


def test_mcp_tool_calls_refused_by_the_policy_are_audited_under_the_tool(
    live_server: support.LiveServer,
) -> None:
    observer = api_key(live_server, "observer")
    call = tool_call("deploy.up", {"appName": "shop"})
    with httpx.Client(base_url=live_server.url, timeout=30, headers=ACCEPT) as http:
        escalated = http.post(
            "/mcp", json=call, headers={"Authorization": f"Bearer {observer}", "X-Role": "admin"}
        )
        anonymous = http.post("/mcp", json=tool_call("apps.status", {}))
        listing = http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert (escalated.status_code, escalated.json()["reason"]) == (403, "role_escalation")
    assert anonymous.status_code == listing.status_code == 401

    assert [(e["action"], e["channel"], e["reason"]) for e in denied(live_server)] == [
        ("mcp:deploy.up", "mcp", "role_escalation"),
        ("mcp:apps.status", "mcp", "unauthorized"),
        ("POST /mcp", "mcp", "unauthorized"),  # not a tool call: the route is what was refused
    ]


def test_mcp_call_with_a_malformed_server_id_is_audited_as_refused(live_server: support.LiveServer) -> None:
    observer = api_key(live_server, "observer")
    with httpx.Client(base_url=live_server.url, timeout=30, headers=ACCEPT) as http:
        answer = http.post(
            "/mcp",
            json=tool_call("apps.status", {"appName": "shop", "serverId": 7}),
            headers={"Authorization": f"Bearer {observer}"},
        )
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    assert result["isError"] is True
    assert result["structuredContent"]["reason"] == "validation_error"
    [entry] = denied(live_server)
    assert (entry["action"], entry["reason"], entry["params"]) == (
        "mcp:apps.status",
        "validation_error",
        {"appName": "shop"},
    )
