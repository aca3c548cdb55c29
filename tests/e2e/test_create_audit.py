"""`POST /v1/orders` writes its audit entry in the order's own transaction (issue 11 target 7).

Over a real `ikoma serve` on both backends: a created order has exactly one `allowed` entry; a create
that commits nothing (refused by validation, an idempotent replay) is still audited (`allowed`, then
`error` for a refusal) before it is answered; with the audit table refusing inserts, a create is
refused with 503 `audit_unavailable` and no order exists, and a replay is not answered either. The chain
verifies at the end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ikoma.services import audit
from ikoma.services.tools import AUDIT_UNAVAILABLE
from ikoma.storage.database import Database
from tests import support
from tests.e2e.test_faults_audit import allow_audit, refuse_audit

pytestmark = [pytest.mark.e2e]

ACTION = "POST /v1/orders"
KEY = {"Idempotency-Key": "create-audit-1"}
UNAVAILABLE = {"reason": "audit_unavailable", "message": AUDIT_UNAVAILABLE}


@pytest.fixture
def live_server(shared_server: support.LiveServer) -> support.LiveServer:
    return shared_server


def _entries(admin: httpx.Client) -> list[dict[str, Any]]:
    """The create's audit entries, oldest first."""
    page = admin.get("/v1/audit", params={"action": ACTION, "limit": 500})
    assert page.status_code == 200, page.text
    return list(reversed(page.json()["items"]))


def _order_count(admin: httpx.Client) -> int:
    page = admin.get("/v1/orders", params={"limit": 500})
    assert page.status_code == 200, page.text
    return len(page.json()["items"])


def _verified(url: str) -> audit.VerifyReport:
    async def run() -> audit.VerifyReport:
        db = Database(url)
        try:
            return await audit.verify(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def test_a_create_is_audited_once_with_its_order_and_refused_when_its_entry_cannot_be_written(
    live_server: support.LiveServer,
) -> None:
    with live_server.admin() as admin:
        server = admin.post("/v1/servers", json={"name": "create-audit", "hostname": "ca.example.net"})
        assert server.status_code == 201, server.text
        body = {"serverId": server.json()["id"], "playbookKey": "system.test_ping"}
        before = len(_entries(admin))

        created = admin.post("/v1/orders", json=body)
        assert created.status_code == 201, created.text
        entries = _entries(admin)[before:]
        assert [(e["outcome"], e["statusCode"]) for e in entries] == [("allowed", None)]
        assert entries[0]["target"] == "/v1/orders"

        unknown = admin.post("/v1/orders", json={**body, "playbookKey": "no.such.playbook"})
        assert unknown.status_code == 422, unknown.text
        first = admin.post("/v1/orders", json=body, headers=KEY)
        replay = admin.post("/v1/orders", json=body, headers=KEY)
        assert (first.status_code, replay.status_code) == (201, 200), replay.text
        assert replay.json()["order"]["id"] == first.json()["order"]["id"]
        outcomes = [(e["outcome"], e["statusCode"]) for e in _entries(admin)[before + 1 :]]
        assert outcomes == [("allowed", None), ("error", 422), ("allowed", None), ("allowed", None)]

        orders = _order_count(admin)
        refuse_audit(live_server.database_url)
        try:
            refused = admin.post("/v1/orders", json=body)
            replay_refused = admin.post("/v1/orders", json=body, headers=KEY)
        finally:
            allow_audit(live_server.database_url)
        for answer in (refused, replay_refused):
            assert (answer.status_code, answer.json()) == (503, UNAVAILABLE), answer.text
        assert _order_count(admin) == orders  # no order without its audit entry

        again = admin.post("/v1/orders", json=body)
        assert again.status_code == 201, again.text
    report = _verified(live_server.database_url)
    assert report.ok, report.problem
