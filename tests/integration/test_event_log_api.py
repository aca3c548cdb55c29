"""GET /v1/events over real HTTP against a real `ikoma serve` (one per module and backend): id order,
cursor paging, filters, scoped visibility, refused parameters."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests import support


@pytest.fixture
def live_server(shared_server: support.LiveServer) -> support.LiveServer:
    return shared_server


def new_server(admin: httpx.Client, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    answer = admin.post("/v1/servers", json={"name": name, "hostname": f"{name}.example.net"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def client_token(admin: httpx.Client, *, server_ids: list[str] | None, role: str = "observer") -> str:
    body: dict[str, Any] = {"name": f"c-{uuid.uuid4().hex[:8]}", "role": role}
    if server_ids is not None:
        body["serverIds"] = server_ids
    answer = admin.post("/v1/api-clients", json=body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def every_event(http: httpx.Client, *, limit: int = 1000, **params: Any) -> list[dict[str, Any]]:
    """Page from the start until a page comes back empty."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        answer = http.get("/v1/events", params={"after": after, "limit": limit, **params})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        if not page["events"]:
            assert page["next"] == after
            return found
        found += page["events"]
        assert page["next"] == page["events"][-1]["id"]
        after = page["next"]


def test_pages_follow_ids_without_gap_or_repeat_and_filters_narrow(live_server: support.LiveServer) -> None:
    with live_server.admin() as admin:
        server_id = new_server(admin, "ev")
        answer = admin.post("/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping"})
        assert answer.status_code in (200, 201), answer.text
        order_id = answer.json()["order"]["id"]

        whole = every_event(admin)
        paged = every_event(admin, limit=1)
        assert [e["id"] for e in paged] == [e["id"] for e in whole]
        assert [e["id"] for e in whole] == sorted({e["id"] for e in whole})

        mine = every_event(admin, serverId=server_id)
        assert [e["kind"] for e in mine] == ["server.created", "order.created"]
        created = mine[1]
        shape = {"id", "ts", "kind", "topic", "serverId", "orderId", "runnerId", "actor", "data"}
        assert set(created) == shape
        assert (created["orderId"], created["topic"], created["actor"]) == (order_id, "order", "admin")
        assert created["ts"].endswith("Z")

        assert [e["kind"] for e in every_event(admin, orderId=order_id)] == ["order.created"]
        servers_only = every_event(admin, kind=["server"])
        assert servers_only
        assert {e["topic"] for e in servers_only} == {"server"}
        both = every_event(admin, kind=["server.created", "order."], serverId=server_id)
        assert [e["kind"] for e in both] == ["server.created", "order.created"]


def test_a_scoped_client_sees_only_its_servers_events(live_server: support.LiveServer) -> None:
    with live_server.admin() as admin:
        mine, other = new_server(admin, "mine"), new_server(admin, "other")
        token = client_token(admin, server_ids=[mine])
        everything = every_event(admin)
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {token}"}) as scoped:
        seen = every_event(scoped)
        assert seen
        assert {e["serverId"] for e in seen} == {mine}
        assert {e["serverId"] for e in everything} >= {mine, other, None}
        assert every_event(scoped, serverId=mine) == seen
        refused = scoped.get("/v1/events", params={"serverId": other})
        assert refused.status_code == 404
        assert refused.json()["reason"] == "server_not_found"


def test_bad_parameters_are_refused_with_a_reason(live_server: support.LiveServer) -> None:
    with live_server.admin() as admin:
        unknown = admin.get("/v1/events", params={"afterr": 3})
        assert unknown.status_code == 422
        assert unknown.json()["reason"] == "unknown_query_parameter"
        for params in ({"after": -1}, {"limit": 0}, {"limit": 1001}, {"kind": "Order!"}, {"serverId": "x"}):
            answer = admin.get("/v1/events", params=params)
            assert answer.status_code == 422, (params, answer.text)
            assert answer.json()["reason"] == "validation_error"
    no_credential = httpx.get(f"{live_server.url}/v1/events")
    assert no_credential.status_code == 401


def test_revoking_an_api_client_over_http_names_who_revoked_it(live_server: support.LiveServer) -> None:
    with live_server.admin() as admin:
        created = admin.post(
            "/v1/api-clients", json={"name": f"c-{uuid.uuid4().hex[:8]}", "role": "observer"}
        )
        assert created.status_code == 201, created.text
        client_id = created.json()["id"]
        assert admin.delete(f"/v1/api-clients/{client_id}").status_code == 200
        revoked = [
            e for e in every_event(admin, kind="api_client.revoked") if e["data"].get("clientId") == client_id
        ]
    assert [e["actor"] for e in revoked] == ["admin"]
