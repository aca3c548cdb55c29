"""Scenarios 14, 16, 17, 18 against a real server: every route and every identity matches the policy table.

Path parameters are random ids, so an allowed request ends in 404/422 without changing anything; what
is checked is the policy's answer: 401 for no/unknown/revoked/runner credentials, 403 naming the role
needed when the role is too low, anything else when it is high enough.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ikoma.api.policy import POLICY, PUBLIC, RUNNER
from ikoma.domain.roles import Role
from ikoma.storage.database import Database
from tests.support import LiveServer

pytestmark = pytest.mark.e2e

ROLE_NAMES = ("observer", "builder", "operator", "admin")


@dataclass(frozen=True)
class Identity:
    name: str
    headers: dict[str, str]
    role: Role | None  # None: must be refused with 401


def _concrete(template: str) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "key":
            return "no.such-playbook"
        if name == "tool":
            return "no.such-tool"
        return str(uuid.uuid4())

    return re.sub(r"\{(\w+)\}", fill, template)


def _identities(server: LiveServer) -> list[Identity]:
    with server.admin() as admin:
        tokens = {}
        for role in ROLE_NAMES:
            created = admin.post("/v1/api-clients", json={"name": f"matrix-{role}", "role": role})
            assert created.status_code == 201, created.text
            tokens[role] = created.json()["token"]
        revoked = admin.post("/v1/api-clients", json={"name": "gone", "role": "admin"}).json()
        assert admin.delete(f"/v1/api-clients/{revoked['id']}").status_code == 200
        runner = admin.post("/v1/runners", json={"name": "matrix-runner"}).json()
    found = [
        Identity("admin-key", {"X-Api-Key": server.admin_key}, Role.ADMIN),
        Identity("admin-key-bearer", {"Authorization": f"Bearer {server.admin_key}"}, Role.ADMIN),
        Identity("none", {}, None),
        Identity("garbage", {"X-Api-Key": "ikoma_" + "x" * 38}, None),
        Identity("revoked", {"X-Api-Key": revoked["token"]}, None),
        Identity("runner-token", {"Authorization": f"Bearer {runner['token']}"}, None),
        # scenario 18: headers that claim a role or a user never raise privileges
        Identity(
            "observer+x-role-admin-spoof",
            {"X-Api-Key": tokens["observer"], "X-Forwarded-User": "admin", "X-Ikoma-Role": "admin"},
            Role.OBSERVER,
        ),
        Identity(
            "admin-key-lowered-to-observer",
            {"X-Api-Key": server.admin_key, "X-Role": "observer"},
            Role.OBSERVER,
        ),
    ]
    for role in ROLE_NAMES:
        found.append(
            Identity(f"client-{role}", {"Authorization": f"Bearer {tokens[role]}"}, Role.parse(role))
        )
    return found


def test_every_route_answers_every_identity_as_the_policy_table_says(live_server: LiveServer) -> None:
    identities = _identities(live_server)
    mismatches = []
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for (method, template), access in sorted(POLICY.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if access in (PUBLIC, RUNNER):
                continue
            assert isinstance(access, Role)
            url = _concrete(template)
            for who in identities:
                body = {} if method in ("POST", "PUT", "PATCH") else None
                # an SSE stream (`…/stream`) answers forever: its status is what is checked here
                with http.stream(method, url, headers=who.headers, json=body) as answer:
                    if not answer.headers.get("content-type", "").startswith("text/event-stream"):
                        answer.read()
                if who.role is None:
                    expected = "401"
                    ok = answer.status_code == 401
                elif who.role >= access:
                    expected = "not 401/403"
                    ok = answer.status_code not in (401, 403)
                else:
                    expected = f"403 requiring {access.label}"
                    reply = answer.json() if answer.status_code == 403 else {}
                    ok = (
                        reply.get("reason") == "forbidden"
                        and reply.get("details", {}).get("required") == access.label
                    )
                if not ok:
                    mismatches.append(
                        f"{method} {template} as {who.name}: {answer.status_code}, wanted {expected}"
                    )
    assert mismatches == []


def test_runner_routes_refuse_admin_and_client_credentials(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        token = admin.post("/v1/api-clients", json={"name": "ops", "role": "admin"}).json()["token"]
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        for credential in (live_server.admin_key, token):
            answer = http.post(
                "/v1/runner/heartbeat", headers={"Authorization": f"Bearer {credential}"}, json={}
            )
            assert answer.status_code == 401, answer.text


def test_x_role_above_the_credential_is_refused_and_audited(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        observer = admin.post("/v1/api-clients", json={"name": "watcher", "role": "observer"}).json()
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            answer = http.post(
                "/v1/servers",
                headers={"X-Api-Key": observer["token"], "X-Role": "admin"},
                json={"name": "sneaky", "hostname": "sneaky.example.net"},
            )
            invalid = http.get("/v1/servers", headers={"X-Api-Key": observer["token"], "X-Role": "root"})
        assert answer.status_code == 403
        assert answer.json()["reason"] == "role_escalation"
        assert invalid.status_code == 400
        assert invalid.json()["reason"] == "invalid_role"
        assert [s["name"] for s in admin.get("/v1/servers").json()] == []
        denied = admin.get("/v1/audit", params={"outcome": "denied"}).json()["items"]
    entry = next(e for e in denied if e["action"] == "POST /v1/servers")
    assert entry["tokenPrefix"] == observer["tokenPrefix"]
    assert entry["actorId"] == observer["id"]
    assert entry["reason"] == "role_escalation"


def test_scoped_client_sees_only_its_servers_and_their_orders(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        mine = admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1.example.net"}).json()
        other = admin.post("/v1/servers", json={"name": "db-1", "hostname": "db-1.example.net"}).json()
        foreign_order = admin.post(
            "/v1/orders", json={"serverId": other["id"], "playbookKey": "system.test_ping"}
        ).json()["order"]
        client = admin.post(
            "/v1/api-clients", json={"name": "web-deployer", "role": "operator", "serverIds": [mine["id"]]}
        ).json()
    headers = {"X-Api-Key": client["token"]}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        assert [s["id"] for s in http.get("/v1/servers").json()] == [mine["id"]]
        assert http.get(f"/v1/servers/{other['id']}").status_code == 404
        assert http.get(f"/v1/orders/{foreign_order['id']}").status_code == 404
        assert http.post(f"/v1/orders/{foreign_order['id']}/cancel", json={}).status_code == 404
        refused = http.post("/v1/orders", json={"serverId": other["id"], "playbookKey": "system.test_ping"})
        assert refused.status_code == 404
        created = http.post("/v1/orders", json={"serverId": mine["id"], "playbookKey": "system.test_ping"})
        assert created.status_code == 201, created.text
        events = http.get(f"/v1/orders/{created.json()['order']['id']}/events").json()
        assert events[0]["actor"] == f"api_client:{client['id']}"  # who queued it, on its history
        assert [o["serverId"] for o in http.get("/v1/orders").json()["items"]] == [mine["id"]]


def test_order_creation_needs_the_playbooks_own_role(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        server = admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1.example.net"}).json()
        observer = admin.post("/v1/api-clients", json={"name": "watcher", "role": "observer"}).json()
    with httpx.Client(base_url=live_server.url, headers={"X-Api-Key": observer["token"]}, timeout=30) as http:
        shell = http.post(
            "/v1/orders",
            json={"serverId": server["id"], "playbookKey": "shell.exec", "params": {"argv": ["id"]}},
        )
        ping = http.post("/v1/orders", json={"serverId": server["id"], "playbookKey": "system.test_ping"})
    assert shell.status_code == 403
    assert shell.json()["details"]["required"] == "admin"
    assert ping.status_code == 201


def test_revocation_takes_effect_at_the_next_request(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        client = admin.post("/v1/api-clients", json={"name": "ci", "role": "observer"}).json()
        with httpx.Client(
            base_url=live_server.url, headers={"X-Api-Key": client["token"]}, timeout=30
        ) as http:
            assert http.get("/v1/servers").status_code == 200
            assert admin.delete(f"/v1/api-clients/{client['id']}").status_code == 200
            assert http.get("/v1/servers").status_code == 401
        listed = admin.get("/v1/api-clients").json()
    assert listed[0]["lastUsedAt"] is not None
    assert listed[0]["revokedAt"] is not None
    assert "token" not in listed[0]


# reads the SQLite file itself; PostgreSQL rows are checked in tests/integration/test_api_clients_and_audit.py
@pytest.mark.parametrize("server_database_url", ["sqlite"], indirect=True)
def test_no_token_in_the_database_file_or_any_response(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        client = admin.post("/v1/api-clients", json={"name": "ci", "role": "operator"}).json()
        runner = admin.post("/v1/runners", json={"name": "r1"}).json()
        responses = [admin.get(path).text for path in ("/v1/api-clients", "/v1/runners", "/v1/audit")]
    secrets = (client["token"], runner["token"], live_server.admin_key)
    database_file = Path(live_server.database_url.removeprefix("sqlite:///"))
    stored = b"".join(p.read_bytes() for p in database_file.parent.glob(database_file.name + "*"))
    for secret in secrets:
        assert secret.encode() not in stored
        assert all(secret not in text for text in responses)


async def _rename_audit_table(database_url: str, old: str, new: str) -> None:
    db = Database(database_url)
    try:
        async with db.write() as tx:
            await tx.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
    finally:
        await db.dispose()


def test_a_mutation_whose_audit_entry_cannot_be_written_does_not_happen(live_server: LiveServer) -> None:
    asyncio.run(_rename_audit_table(live_server.database_url, "audit_log", "audit_log_away"))
    with live_server.admin() as admin:
        refused = admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1.example.net"})
        assert refused.status_code == 503
        assert refused.json()["reason"] == "audit_unavailable"
        assert admin.get("/v1/servers").json() == []  # reads are not audited: they still answer
        asyncio.run(_rename_audit_table(live_server.database_url, "audit_log_away", "audit_log"))
        created = admin.post("/v1/servers", json={"name": "web-1", "hostname": "web-1.example.net"})
    assert created.status_code == 201
