"""`/execute/<tool>` and `/v1/tools` over real HTTP: the role matrix, X-Role, hostile inputs, the audit trail.

Scenarios 17-20 of RELIABILITY.md for the tool path. No runner is attached: an allowed call answers 202
with its order (`wait: 0`), which is all the authorization matrix needs to see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import processes, support

pytestmark = pytest.mark.e2e

RANK = {"observer": 1, "builder": 2, "operator": 3, "admin": 4}
# seed 001 and issue 5: each tool's role is a promise
SEED_ROLES = {
    "apps.env.example": "observer",
    "apps.validate": "observer",
    "apps.status": "observer",
    "apps.health": "observer",
    "apps.list": "observer",
    "apps.logs": "observer",
    "db.status": "observer",
    "artifact.verify_release": "observer",
    "platform.check": "observer",
    "apps.init": "builder",
    "db.create": "builder",
    "db.migrate": "builder",
    "deploy.up": "operator",
    "deploy.down": "operator",
    "deploy.restart": "operator",
    "db.backup": "operator",
    "deploy.rollback": "operator",
    "db.restore": "operator",
    "apps.remove": "operator",
}
DESTRUCTIVE = {"deploy.rollback", "db.restore", "apps.remove"}
# a valid value for every required param of the catalog; a new required param fails the matrix loudly
SAMPLES: dict[str, Any] = {
    "appName": "shop",
    "confirm": "shop",
    "backupName": "shop-1.dump",
    "argv": ["true"],
}
HOSTILE_NAMES = ["../x", "%2e%2e", "a\u0000b", "/etc", "MyApp", "a;rm -rf /", "$(id)", "shop\r\n", "-rf"]


@pytest.fixture
def server_database_url(tmp_path: Path) -> str:
    """SQLite only here: these prove the HTTP and CLI surface
    (the tool path's integration tests run on both backends)."""
    return f"sqlite:///{tmp_path / 'server.db'}"


@pytest.fixture
def server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    with support.LiveServer(
        database_url=server_database_url,
        data_dir=tmp_path / "data",
        extra_env={"IKOMA_AUDIT_LOG": str(tmp_path / "audit.jsonl")},
    ) as live:
        yield live


def client(server: support.LiveServer, key: str, role: str | None = None) -> httpx.Client:
    headers = {"X-Api-Key": key, **({"X-Role": role} if role else {})}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def api_client_token(server: support.LiveServer, role: str) -> str:
    with server.admin() as admin:
        created = admin.post("/v1/api-clients", json={"name": f"ci-{role}", "role": role})
    assert created.status_code == 201, created.text
    return str(created.json()["token"])


def params_for(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool["paramsSchema"]
    required = schema.get("required", [])
    missing = [name for name in required if name not in SAMPLES]
    assert not missing, f"{tool['key']}: no sample value for required params {missing}"
    return {name: SAMPLES[name] for name in required}


def all_audit(server: support.LiveServer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    with server.admin() as admin:
        while True:
            page = admin.get("/v1/audit", params={"limit": 200, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor = page.json()["nextCursor"]
            if not cursor:
                return items


def order_count(server: support.LiveServer) -> int:
    with server.admin() as admin:
        return len(admin.get("/v1/orders", params={"limit": 500}).json()["items"])


def test_every_tool_by_every_role_is_allowed_exactly_when_the_role_reaches_the_tools_role(
    server: support.LiveServer, tmp_path: Path
) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
        catalog = admin.get("/v1/tools").json()
    by_key = {t["key"]: t for t in catalog}
    for key, role in SEED_ROLES.items():
        assert by_key[key]["minRole"] == role, key
        assert by_key[key]["destructive"] == (key in DESTRUCTIVE), key
        assert by_key[key]["readOnly"] == (role == "observer"), key

    tokens = {role: api_client_token(server, role) for role in RANK}
    callers = {f"client:{role}": (tokens[role], role) for role in RANK} | {
        "admin-key": (server.admin_key, "admin")
    }
    expected_denials = 0
    denied_roles: set[str] = set()
    for caller, (token, role) in callers.items():
        with client(server, token) as http:
            listed = {t["key"]: t["allowed"] for t in http.get("/v1/tools").json()}
            for tool in catalog:
                allowed = RANK[role] >= RANK[tool["minRole"]]
                assert listed[tool["key"]] is allowed, (caller, tool["key"])
                body = {**params_for(tool), "serverId": "web-1", "wait": 0}
                answer = http.post(f"/execute/{tool['key']}", json=body)
                if allowed:
                    assert answer.status_code == 202, (caller, tool["key"], answer.text)
                    assert answer.headers["X-Order-Id"] == answer.json()["orderId"]
                else:
                    expected_denials += 1
                    denied_roles.add(role)
                    assert answer.status_code == 403, (caller, tool["key"], answer.text)
                    assert answer.json()["reason"] == "forbidden"
                    assert answer.json()["details"]["required"] == tool["minRole"]
                    assert "X-Order-Id" not in answer.headers

    entries = all_audit(server)
    denied = [e for e in entries if e["outcome"] == "denied" and e["action"].startswith("execute:")]
    assert len(denied) == expected_denials
    assert {e["tokenPrefix"] for e in denied} == {tokens[r][:14] for r in denied_roles}
    assert denied_roles == {"observer", "builder", "operator"}
    # no secret ever reaches the audit log or its mirror: only token prefixes
    stored = str(entries) + (tmp_path / "audit.jsonl").read_text()
    for secret in [*tokens.values(), server.admin_key]:
        assert secret not in stored
    # an arbitrary command is the admin's alone
    assert (by_key["shell.exec"]["minRole"], by_key["shell.exec"]["destructive"]) == ("admin", True)


def test_x_role_lowers_a_role_and_never_raises_it(server: support.LiveServer) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
    observer = api_client_token(server, "observer")
    with client(server, observer, role="admin") as http:
        raised = http.post("/execute/deploy.up", json={"appName": "shop", "serverId": "web-1", "wait": 0})
    assert raised.status_code == 403
    assert raised.json()["reason"] == "role_escalation"
    with client(server, observer) as http:
        forwarded = http.post(
            "/execute/deploy.up",
            json={"appName": "shop", "serverId": "web-1", "wait": 0},
            headers={"X-Forwarded-User": "admin", "X-Forwarded-Role": "admin", "X-User-Role": "admin"},
        )
    assert forwarded.status_code == 403
    assert forwarded.json()["details"]["required"] == "operator"
    with client(server, server.admin_key, role="observer") as http:
        lowered = http.post("/execute/deploy.up", json={"appName": "shop", "serverId": "web-1", "wait": 0})
        seen = http.post("/execute/apps.status", json={"appName": "shop", "serverId": "web-1", "wait": 0})
    assert lowered.status_code == 403
    assert lowered.json()["details"] == {"tool": "deploy.up", "required": "operator", "role": "observer"}
    assert seen.status_code == 202
    assert order_count(server) == 1

    escalation = [e for e in all_audit(server) if e["reason"] == "role_escalation"]
    assert len(escalation) == 1
    assert escalation[0]["outcome"] == "denied"
    assert escalation[0]["tokenPrefix"] == observer[:14]


@pytest.mark.parametrize("tool", ["apps.init", "deploy.up", "apps.remove"])
def test_hostile_app_names_are_refused_with_422_before_any_order(
    server: support.LiveServer, tool: str
) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
    with client(server, server.admin_key) as http:
        for name in HOSTILE_NAMES:
            answer = http.post(
                f"/execute/{tool}", json={"appName": name, "confirm": name, "serverId": "web-1", "wait": 0}
            )
            assert answer.status_code == 422, (name, answer.text)
            reasons = ("validation_error", "confirmation_required", "nul_character")
            assert answer.json()["reason"] in reasons, answer.text
            assert "X-Order-Id" not in answer.headers
        # a tool name is one path segment: an encoded traversal finds no tool
        assert http.post("/execute/..%2f..%2fetc%2fpasswd", json={}).status_code == 404
        assert (
            http.post("/execute/apps.init;id", json={"appName": "shop"}).json()["reason"] == "tool_not_found"
        )
    assert order_count(server) == 0
    denied = [e for e in all_audit(server) if e["outcome"] == "denied" and e["action"] == f"execute:{tool}"]
    assert len(denied) == len(HOSTILE_NAMES)


def test_execute_reads_the_body_as_json_whatever_the_content_type(server: support.LiveServer) -> None:
    """`curl -d` sends form encoding: the seed's commands must work as written."""
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
    with client(server, server.admin_key) as http:
        answer = http.post(
            "/execute/apps.status",
            content=b'{"appName":"shop","serverId":"web-1","wait":0}',
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 202, answer.text
        assert http.post("/execute/apps.status", content=b"{nope").json()["reason"] == "invalid_json"
        assert http.post("/execute/apps.status", content=b"[1]").status_code == 422
        wrong_wait = http.post(
            "/execute/apps.status", json={"appName": "shop", "serverId": "web-1", "wait": "x"}
        )
        assert wrong_wait.status_code == 422
        none = http.post("/execute/apps.status", json={"appName": "shop", "serverId": "nowhere"})
        assert (none.status_code, none.json()["reason"]) == (404, "server_not_found")
        anonymous = httpx.post(f"{server.url}/execute/apps.status", json={"appName": "shop"})
        assert anonymous.status_code == 401
    unreadable = [e for e in all_audit(server) if e["reason"] in ("invalid_json", "validation_error")]
    assert len(unreadable) == 3
    assert all(e["outcome"] == "denied" and e["action"] == "execute:apps.status" for e in unreadable)


def test_audit_route_filters_and_pages_and_is_admin_only(server: support.LiveServer) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
    operator = api_client_token(server, "operator")
    with client(server, operator) as http:
        for _ in range(3):
            http.post("/execute/apps.status", json={"appName": "shop", "serverId": "web-1", "wait": 0})
        http.post("/execute/apps.init", json={"appName": "../x", "serverId": "web-1"})
        assert http.get("/v1/audit").status_code == 403
    with server.admin() as admin:
        mine = admin.get("/v1/audit", params={"actor": operator[:14]}).json()["items"]
        assert len(mine) == 4
        denied = admin.get("/v1/audit", params={"outcome": "denied", "action": "execute:"}).json()["items"]
        assert [e["action"] for e in denied] == ["execute:apps.init"]
        by_target = admin.get("/v1/audit", params={"target": "web-1/shop"}).json()["items"]
        assert len(by_target) == 3
        assert all(e["orderId"] for e in by_target)
        first = admin.get("/v1/audit", params={"limit": 2, "action": "execute:apps.status"}).json()
        second = admin.get(
            "/v1/audit", params={"limit": 2, "action": "execute:apps.status", "cursor": first["nextCursor"]}
        ).json()
        assert [e["id"] for e in first["items"]] > [e["id"] for e in second["items"]]
        assert len(first["items"]) + len(second["items"]) == 3
        assert second["nextCursor"] is None
        future = admin.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"}).json()["items"]
        assert future == []


def run_cli(server: support.LiveServer, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    # COLUMNS keeps table rows on one line whatever terminal (or none) the suite runs in
    env.update({"IKOMA_API_URL": server.url, "IKOMA_API_KEY": key, "COLUMNS": "250", "NO_COLOR": "1"})
    return processes.run([sys.executable, "-m", "ikoma", *args], text=True, env=env, timeout=60)


def test_cli_lists_tools_runs_one_and_reads_the_audit_log(server: support.LiveServer) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1"}).status_code == 201
    builder = api_client_token(server, "builder")

    listed = run_cli(server, builder, "tools", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    allowed = {t["key"]: t["allowed"] for t in json.loads(listed.stdout)}
    assert (allowed["db.migrate"], allowed["deploy.up"]) == (True, False)
    table = run_cli(server, builder, "tools", "list")
    assert "apps.env.example" in table.stdout

    # no runner: the call is still queued when --wait runs out (exit 3, the order named)
    queued = run_cli(
        server, builder, "tools", "run", "apps.init", "--app", "shop", "--server", "web-1", "--wait", "0"
    )
    assert queued.returncode == 3, queued.stderr
    assert "still QUEUED" in queued.stderr
    denied = run_cli(server, builder, "tools", "run", "deploy.up", "--app", "shop", "--server", "web-1")
    assert denied.returncode == 1
    assert "forbidden" in denied.stderr
    assert "required=operator" in denied.stderr

    entries = run_cli(server, server.admin_key, "audit", "list", "--action", "execute:", "--json")
    assert entries.returncode == 0, entries.stderr
    actions = [(e["action"], e["outcome"]) for e in json.loads(entries.stdout)["items"]]
    assert actions == [("execute:deploy.up", "denied"), ("execute:apps.init", "allowed")]
    as_builder = run_cli(server, builder, "audit", "list")
    assert as_builder.returncode == 1
    table = run_cli(server, server.admin_key, "audit", "list", "--outcome", "denied")
    assert "execute:deploy.up" in table.stdout
