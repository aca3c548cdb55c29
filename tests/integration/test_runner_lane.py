"""The runner lane (api/runner_lane.py): runner calls skip the admin middlewares and lose nothing.

The app is built as `ikoma serve` builds it (`served(create_app(...))`) on each backend and driven in
process. A runner call through the lane answers exactly what the full app answers for the same request
(status, body, media type), errors included, always with the request id; it never builds the admin
middleware stack; a database outage is 503 `database_unavailable`; every other path still goes to the
full app; the lane answers only routes the policy table lists as RUNNER.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from ikoma.api import runner
from ikoma.api.app import create_app, served
from ikoma.api.policy import POLICY, RUNNER, route_keys
from ikoma.api.runner_lane import RunnerLane
from ikoma.settings import Settings

BASE = "http://lane.test"
ERROR_KEYS = {"reason", "message", "details", "errors"}


@dataclass
class Served:
    app: FastAPI
    lane: RunnerLane
    admin: httpx.AsyncClient
    runner_headers: dict[str, str]
    server_id: str

    def client(self, target: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url=BASE, timeout=30)


@pytest.fixture
async def served_app(database_url: str) -> AsyncIterator[Served]:
    admin_key = "ika_test_" + secrets.token_urlsafe(24)
    settings = Settings(
        DATABASE_URL=database_url,
        IKOMA_ADMIN_KEY=admin_key,
        IKOMA_SSH_EXECUTOR=False,
        IKOMA_BODY_LIMIT_RUNNER=4096,
    )
    app = create_app(settings, run_migrations=False, run_reconciler=False)
    lane = served(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"x-ikoma-admin-key": admin_key}
        async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as admin:
            created = await admin.post("/v1/runners", json={"name": f"lane-{uuid.uuid4().hex[:8]}"})
            assert created.status_code == 201, created.text
            host = await admin.post(
                "/v1/servers", json={"name": f"web-{uuid.uuid4().hex[:8]}", "hostname": "web.example.net"}
            )
            assert host.status_code == 201, host.text
            attached = await admin.patch(
                f"/v1/servers/{host.json()['id']}", json={"runnerId": created.json()["id"]}
            )
            assert attached.status_code == 200, attached.text
            yield Served(
                app,
                lane,
                admin,
                {"x-runner-id": created.json()["id"], "x-runner-token": created.json()["token"]},
                host.json()["id"],
            )


def test_the_lane_answers_only_routes_the_policy_table_lists_as_runner_routes() -> None:
    keys = route_keys(runner.routes)
    assert keys  # the probe saw the routes
    assert {key: POLICY.get(key) for key in keys} == dict.fromkeys(keys, RUNNER)


async def test_a_runner_order_cycle_through_the_lane_never_builds_the_admin_middlewares(
    served_app: Served,
) -> None:
    # the fixture's admin calls went to the full app and built its stack; a fresh one must not be built
    served_app.app.middleware_stack = None
    created = await served_app.admin.post(
        "/v1/orders", json={"serverId": served_app.server_id, "playbookKey": "system.test_ping"}
    )
    assert created.status_code == 201, created.text
    served_app.app.middleware_stack = None
    async with served_app.client(served_app.lane) as lane:
        lane.headers.update(served_app.runner_headers)
        claimed = await lane.post("/v1/runner/orders/claim-next", headers={"x-request-id": "claim-1"})
        assert claimed.status_code == 200, claimed.text
        assert claimed.headers["x-request-id"] == "claim-1"
        order = claimed.json()
        lease = {"leaseToken": order["leaseToken"]}
        started = await lane.post(f"/v1/runner/orders/{order['id']}/start", json=lease)
        assert (started.status_code, started.json()["status"]) == (200, "RUNNING"), started.text
        report = {"version": "v2", "summary": "pong", "durationMs": 1, "steps": [], "errors": []}
        completed = await lane.post(
            f"/v1/runner/orders/{order['id']}/complete",
            json={**lease, "status": "SUCCEEDED", "report": report},
        )
        assert (completed.status_code, completed.json()["status"]) == (200, "SUCCEEDED"), completed.text
        assert len(completed.headers["x-request-id"]) == 32  # none given: one was made
    assert served_app.app.middleware_stack is None
    # and the full app still answers what is not a runner call
    async with served_app.client(served_app.lane) as lane:
        shown = await lane.get(f"/v1/orders/{order['id']}", headers=served_app.admin.headers)
        assert (shown.status_code, shown.json()["status"]) == (200, "SUCCEEDED"), shown.text
        assert (await lane.get("/v1/runners")).status_code == 401  # the policy, through the lane
    assert served_app.app.middleware_stack is not None


def _refusals(runner: dict[str, str]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """(method, url, headers, request options) of runner calls that each fail in their own way."""
    some_id = str(uuid.uuid4())
    bad_token = {**runner, "x-runner-token": "not-the-token"}
    return [
        ("POST", "/v1/runner/heartbeat", bad_token, {"json": {}}),
        ("POST", "/v1/runner/orders/claim-next", {}, {}),
        ("POST", "/v1/runner/nowhere", runner, {}),
        ("GET", "/v1/runner/orders/claim-next", runner, {}),
        ("POST", "/v1/runner/orders/claim-next?wait=1&page=2", runner, {}),
        ("POST", "/v1/runner/orders/claim-next?wait=1%00", runner, {}),
        ("POST", "/v1/runner/orders/claim-next?wait=forever", runner, {}),
        ("POST", "/v1/runner/orders/not-a-uuid/start", runner, {"json": {}}),
        ("POST", f"/v1/runner/orders/{some_id}/start", runner, {"json": {"leaseToken": 7}}),
        ("POST", f"/v1/runner/orders/{some_id}/start", runner, {"content": b"{not json"}),
        ("POST", f"/v1/runner/orders/{some_id}/start", runner, {"json": {}}),
        ("POST", "/v1/runner/heartbeat", runner, {"content": b"x" * 8192}),
        ("POST", "/v1/runner/heartbeat", {**runner, "content-type": "text/plain"}, {"content": b"{}"}),
        ("POST", f"/v1/runner/orders/{some_id}/complete", runner, {"json": {"status": "SUCCEEDED"}}),
        ("POST", "/v1/runner/register", {}, {"json": {"name": "x"}}),
    ]


async def test_every_refusal_through_the_lane_is_the_full_apps_answer_with_a_request_id(
    served_app: Served,
) -> None:
    async with served_app.client(served_app.lane) as lane, served_app.client(served_app.app) as full:
        for method, url, headers, options in _refusals(served_app.runner_headers):
            request_id = f"r-{uuid.uuid4().hex[:12]}"
            sent = {**options, "headers": {**headers, "x-request-id": request_id}}
            by_lane = await lane.request(method, url, **sent)
            by_app = await full.request(method, url, **sent)
            what = f"{method} {url}"
            assert by_lane.status_code >= 400, (what, by_lane.text)
            assert (by_lane.status_code, by_lane.json()) == (by_app.status_code, by_app.json()), what
            assert set(by_lane.json()) <= ERROR_KEYS, (what, by_lane.text)
            assert by_lane.headers["content-type"] == by_app.headers["content-type"], what
            assert by_lane.headers["x-request-id"] == request_id, what


async def test_a_database_outage_during_a_runner_call_is_503_database_unavailable_logged_once(
    served_app: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: Any, **__: Any) -> Any:
        raise OperationalError(
            "SELECT runners", {"token": "secret-param"}, sqlite3.OperationalError("database is locked")
        )

    monkeypatch.setattr(served_app.app.state.ctx.dispatcher, "authenticate", unreachable)
    async with served_app.client(served_app.lane) as lane:
        lane.headers.update(served_app.runner_headers)
        with structlog.testing.capture_logs() as logged:
            answer = await lane.post("/v1/runner/orders/claim-next?wait=5", headers={"x-request-id": "out-1"})
    assert (answer.status_code, answer.json()["reason"]) == (503, "database_unavailable"), answer.text
    assert answer.headers["x-request-id"] == "out-1"
    assert "secret-param" not in answer.text
    failed = [line for line in logged if line["event"] == "request_failed"]
    assert [(line["status"], line["request_id"]) for line in failed] == [(503, "out-1")]


async def test_an_unexpected_error_in_a_runner_call_is_500_internal_error_with_the_request_id(
    served_app: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(served_app.app.state.ctx.dispatcher, "authenticate", broken)
    async with served_app.client(served_app.lane) as lane:
        lane.headers.update(served_app.runner_headers)
        answer = await lane.post("/v1/runner/orders/claim-next?wait=5", headers={"x-request-id": "bug-1"})
    assert (answer.status_code, answer.json()["reason"]) == (500, "internal_error"), answer.text
    assert answer.headers["x-request-id"] == "bug-1"
