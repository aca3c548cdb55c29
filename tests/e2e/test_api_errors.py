"""Every refusal over real HTTP answers its status and reason in the one error shape (docs/api.md).

One server process per backend serves the whole module (starting one per test would dominate the
runtime); each test builds its own server/runner pair with unique names, so tests stay independent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests import support

pytestmark = [
    pytest.mark.e2e,
]

ERROR_KEYS = {"reason", "message", "details", "errors"}
REPORT_OK = {"version": "v2", "summary": "ok", "durationMs": 1, "steps": [], "errors": []}


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    """A real `ikoma serve` process shared by this module, on each backend."""
    tmp = tmp_path_factory.mktemp(f"api-errors-{request.param}")
    with support.running_server(request.param, tmp) as live:
        yield live
    log = live.read_log()
    assert "Traceback" not in log, log
    assert "request_failed" not in log, log  # a 500 or 503 (api/errors.failure_response)


@pytest.fixture
def admin(server: support.LiveServer) -> Iterator[httpx.Client]:
    with server.admin() as client:
        yield client


@dataclass
class Runner:
    id: str
    token: str
    server_id: str
    client: httpx.Client

    def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=json, **kwargs)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """The answer is `status` with the one error shape and `reason`; never a traceback."""
    assert "Traceback" not in response.text
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) <= ERROR_KEYS, body
    assert body["reason"] == reason, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    return body


def error_paths(body: dict[str, Any]) -> list[str]:
    return [e["path"] for e in body.get("errors", [])]


def new_runner(server: support.LiveServer, admin: httpx.Client) -> Runner:
    """A runner attached to a server of its own, with an httpx client carrying its credentials."""
    created = admin.post("/v1/runners", json={"name": unique("runner")})
    assert created.status_code == 201, created.text
    host = admin.post("/v1/servers", json={"name": unique("web"), "hostname": "web.example.net"})
    assert host.status_code == 201, host.text
    attached = admin.patch(f"/v1/servers/{host.json()['id']}", json={"runnerId": created.json()["id"]})
    assert attached.status_code == 200, attached.text
    client = httpx.Client(
        base_url=server.url,
        headers={"x-runner-id": created.json()["id"], "x-runner-token": created.json()["token"]},
        timeout=30,
    )
    return Runner(created.json()["id"], created.json()["token"], host.json()["id"], client)


@pytest.fixture
def runner(server: support.LiveServer, admin: httpx.Client) -> Iterator[Runner]:
    r = new_runner(server, admin)
    yield r
    r.client.close()


@pytest.fixture
def other_runner(server: support.LiveServer, admin: httpx.Client) -> Iterator[Runner]:
    r = new_runner(server, admin)
    yield r
    r.client.close()


def create_order(admin: httpx.Client, server_id: str, **extra: Any) -> dict[str, Any]:
    response = admin.post(
        "/v1/orders", json={"serverId": server_id, "playbookKey": "system.test_ping", **extra}
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()["order"]
    return order


def claim(runner: Runner) -> dict[str, Any]:
    response = runner.post("/v1/runner/orders/claim-next")
    assert response.status_code == 200, response.text
    claimed: dict[str, Any] = response.json()
    return claimed


def running_order(admin: httpx.Client, runner: Runner) -> dict[str, Any]:
    """An order of `runner`, claimed and started; carries its leaseToken."""
    create_order(admin, runner.server_id)
    claimed = claim(runner)
    started = runner.post(
        f"/v1/runner/orders/{claimed['id']}/start", json={"leaseToken": claimed["leaseToken"]}
    )
    assert started.status_code == 200, started.text
    return claimed


# --- identities ------------------------------------------------------------------------------------
def test_admin_route_without_key_is_401_unauthorized(server: support.LiveServer) -> None:
    assert_error(httpx.get(f"{server.url}/v1/servers"), 401, "unauthorized")


def test_admin_route_with_wrong_key_is_401_unauthorized(server: support.LiveServer) -> None:
    response = httpx.get(f"{server.url}/v1/servers", headers={"x-ikoma-admin-key": "ika_wrong"})
    assert_error(response, 401, "unauthorized")


def test_admin_key_is_checked_before_the_body_is_read(server: support.LiveServer) -> None:
    response = httpx.post(
        f"{server.url}/v1/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-credentials"),
        pytest.param({"x-runner-token": "ikr_x"}, id="missing-runner-id"),
        pytest.param("missing-token", id="missing-token"),
        pytest.param("wrong-token", id="wrong-token"),
        pytest.param("unknown-runner", id="unknown-runner-id"),
        pytest.param("malformed-runner", id="malformed-runner-id"),
    ],
)
def test_runner_routes_refuse_bad_credentials_with_401(
    server: support.LiveServer, runner: Runner, headers: dict[str, str] | str
) -> None:
    cases = {
        "missing-token": {"x-runner-id": runner.id},
        "wrong-token": {"x-runner-id": runner.id, "x-runner-token": runner.token + "x"},
        "unknown-runner": {"x-runner-id": str(uuid.uuid4()), "x-runner-token": runner.token},
        "malformed-runner": {"x-runner-id": "not-a-uuid", "x-runner-token": runner.token},
    }
    sent = cases[headers] if isinstance(headers, str) else headers
    for path in (
        "/v1/runner/heartbeat",
        "/v1/runner/orders/claim-next",
        f"/v1/runner/orders/{uuid.uuid4()}/start",
    ):
        # an invalid body too: credentials are refused before it is read
        response = httpx.post(f"{server.url}{path}", headers=sent, content=b"{not json")
        assert_error(response, 401, "unauthorized")


def test_runner_token_does_not_open_admin_routes(server: support.LiveServer, runner: Runner) -> None:
    assert_error(runner.client.get("/v1/servers"), 401, "unauthorized")


# --- admin routes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/servers/not-a-uuid"),
        ("PATCH", "/v1/servers/not-a-uuid"),
        ("GET", "/v1/orders/1234"),
        ("GET", "/v1/orders/not-a-uuid/events"),
        ("POST", "/v1/orders/not-a-uuid/cancel"),
    ],
)
def test_malformed_uuid_in_admin_path_is_422_validation_error(
    admin: httpx.Client, method: str, path: str
) -> None:
    body = assert_error(admin.request(method, path, json={}), 422, "validation_error")
    assert body["errors"], body


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/v1/servers/{id}", "server_not_found"),
        ("/v1/orders/{id}", "order_not_found"),
        ("/v1/orders/{id}/events", "order_not_found"),
        ("/v1/orders/{id}/logs", "order_not_found"),
    ],
)
def test_unknown_id_on_admin_route_is_404_with_the_kinds_reason(
    admin: httpx.Client, path: str, reason: str
) -> None:
    assert_error(admin.get(path.format(id=uuid.uuid4())), 404, reason)


def test_order_for_unknown_server_is_422_unknown_server(admin: httpx.Client) -> None:
    response = admin.post(
        "/v1/orders", json={"serverId": str(uuid.uuid4()), "playbookKey": "system.test_ping"}
    )
    assert_error(response, 422, "unknown_server")


def test_order_for_unknown_playbook_is_422_unknown_playbook(admin: httpx.Client, runner: Runner) -> None:
    response = admin.post(
        "/v1/orders", json={"serverId": runner.server_id, "playbookKey": "no.such_playbook"}
    )
    assert_error(response, 422, "unknown_playbook")


def test_order_for_unknown_runner_is_422_unknown_runner(admin: httpx.Client, runner: Runner) -> None:
    response = admin.post(
        "/v1/orders",
        json={"serverId": runner.server_id, "playbookKey": "system.test_ping", "runnerId": str(uuid.uuid4())},
    )
    assert_error(response, 422, "unknown_runner")


@pytest.mark.parametrize(
    ("params", "path"),
    [
        pytest.param({"message": 5}, "params.message", id="wrong-type"),
        pytest.param({"message": "x" * 1001}, "params.message", id="too-long"),
        pytest.param({"unexpected": True}, "params", id="extra-property"),
    ],
)
def test_params_breaking_the_playbook_schema_are_422_with_params_paths(
    admin: httpx.Client, runner: Runner, params: dict[str, Any], path: str
) -> None:
    response = admin.post(
        "/v1/orders", json={"serverId": runner.server_id, "playbookKey": "system.test_ping", "params": params}
    )
    body = assert_error(response, 422, "validation_error")
    paths = error_paths(body)
    assert paths, body
    assert all(p.startswith("params") for p in paths), body
    assert path in paths, body


def test_order_body_with_unknown_field_is_422_validation_error(admin: httpx.Client, runner: Runner) -> None:
    response = admin.post(
        "/v1/orders", json={"serverId": runner.server_id, "playbookKey": "system.test_ping", "bogus": 1}
    )
    body = assert_error(response, 422, "validation_error")
    assert "bogus" in error_paths(body), body


def test_idempotency_key_replays_same_body_and_refuses_another(admin: httpx.Client, runner: Runner) -> None:
    key = unique("idem")
    body = {"serverId": runner.server_id, "playbookKey": "system.test_ping", "params": {"message": "hi"}}
    first = admin.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    replay = admin.post("/v1/orders", json=body, headers={"Idempotency-Key": key})
    assert replay.status_code == 200, replay.text
    assert replay.json()["order"]["id"] == first.json()["order"]["id"]

    other = admin.post(
        "/v1/orders", json={**body, "params": {"message": "bye"}}, headers={"Idempotency-Key": key}
    )
    assert_error(other, 409, "idempotency_conflict")
    page = admin.get("/v1/orders", params={"serverId": runner.server_id}).json()
    assert [o["id"] for o in page["items"]] == [first.json()["order"]["id"]]


def test_duplicate_runner_name_is_409_conflict(admin: httpx.Client) -> None:
    name = unique("runner")
    assert admin.post("/v1/runners", json={"name": name}).status_code == 201
    assert_error(admin.post("/v1/runners", json={"name": name}), 409, "conflict")


# --- routing and bodies --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/servers/x/y/z"])
def test_unknown_route_is_404_route_not_found(admin: httpx.Client, path: str) -> None:
    assert_error(admin.get(path), 404, "route_not_found")


def test_wrong_method_is_405_method_not_allowed(admin: httpx.Client) -> None:
    assert_error(admin.put("/v1/servers", json={}), 405, "method_not_allowed")


def test_invalid_json_on_admin_route_is_400_invalid_json(admin: httpx.Client) -> None:
    response = admin.post("/v1/servers", content=b'{"name": ', headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")


def test_invalid_json_on_runner_route_is_400_invalid_json(runner: Runner) -> None:
    response = runner.client.post(
        "/v1/runner/heartbeat", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


# --- runner routes -------------------------------------------------------------------------------------
def test_start_on_a_queued_order_is_409_invalid_status(admin: httpx.Client, runner: Runner) -> None:
    order = create_order(admin, runner.server_id)
    body = assert_error(runner.post(f"/v1/runner/orders/{order['id']}/start"), 409, "invalid_status")
    assert body["details"]["status"] == "QUEUED"


def test_complete_on_a_claimed_order_is_409_invalid_status(admin: httpx.Client, runner: Runner) -> None:
    create_order(admin, runner.server_id)
    claimed = claim(runner)
    response = runner.post(
        f"/v1/runner/orders/{claimed['id']}/complete",
        json={"status": "SUCCEEDED", "report": REPORT_OK, "leaseToken": claimed["leaseToken"]},
    )
    assert_error(response, 409, "invalid_status")


def test_another_runners_order_is_409_wrong_runner(
    admin: httpx.Client, runner: Runner, other_runner: Runner
) -> None:
    create_order(admin, runner.server_id)
    claimed = claim(runner)
    for action in ("start", "heartbeat"):
        response = other_runner.post(f"/v1/runner/orders/{claimed['id']}/{action}")
        assert_error(response, 409, "wrong_runner")


def test_unknown_order_on_runner_route_is_409_order_not_found(runner: Runner) -> None:
    for action in ("start", "heartbeat"):
        assert_error(runner.post(f"/v1/runner/orders/{uuid.uuid4()}/{action}"), 409, "order_not_found")
    response = runner.post(
        f"/v1/runner/orders/{uuid.uuid4()}/complete", json={"status": "SUCCEEDED", "report": REPORT_OK}
    )
    assert_error(response, 409, "order_not_found")


def test_malformed_order_id_on_runner_route_is_422_validation_error(runner: Runner) -> None:
    assert_error(runner.post("/v1/runner/orders/not-a-uuid/start"), 422, "validation_error")


def test_lease_token_that_is_not_the_current_one_is_409_stale_lease(
    admin: httpx.Client, runner: Runner
) -> None:
    create_order(admin, runner.server_id)
    claimed = claim(runner)
    old = str(uuid.uuid4())
    for action in ("start", "heartbeat"):
        response = runner.post(f"/v1/runner/orders/{claimed['id']}/{action}", json={"leaseToken": old})
        assert_error(response, 409, "stale_lease")
    # the current lease still works: nothing was applied by the refused calls
    started = runner.post(
        f"/v1/runner/orders/{claimed['id']}/start", json={"leaseToken": claimed["leaseToken"]}
    )
    assert started.status_code == 200, started.text
    response = runner.post(
        f"/v1/runner/orders/{claimed['id']}/complete",
        json={"status": "SUCCEEDED", "report": REPORT_OK, "leaseToken": old},
    )
    assert_error(response, 409, "stale_lease")


def test_report_without_steps_is_422_with_report_steps_path(admin: httpx.Client, runner: Runner) -> None:
    order = running_order(admin, runner)
    report = {k: v for k, v in REPORT_OK.items() if k != "steps"}
    response = runner.post(
        f"/v1/runner/orders/{order['id']}/complete",
        json={"status": "SUCCEEDED", "report": report, "leaseToken": order["leaseToken"]},
    )
    body = assert_error(response, 422, "validation_error")
    assert "report.steps" in error_paths(body), body
    # the refused report changed nothing: the order is still RUNNING
    assert admin.get(f"/v1/orders/{order['id']}").json()["status"] == "RUNNING"


def test_complete_body_with_bad_status_is_422_validation_error(admin: httpx.Client, runner: Runner) -> None:
    order = running_order(admin, runner)
    response = runner.post(
        f"/v1/runner/orders/{order['id']}/complete", json={"status": "DONE", "report": REPORT_OK}
    )
    body = assert_error(response, 422, "validation_error")
    assert "status" in error_paths(body), body


@pytest.mark.parametrize("wait", ["99", "-1", "abc", "31"])
def test_claim_next_wait_out_of_range_is_422_validation_error(runner: Runner, wait: str) -> None:
    assert_error(runner.post(f"/v1/runner/orders/claim-next?wait={wait}"), 422, "validation_error")


def test_claim_next_with_nothing_eligible_answers_204_empty(runner: Runner) -> None:
    response = runner.post("/v1/runner/orders/claim-next?wait=0")
    assert response.status_code == 204
    assert response.content == b""


def test_long_poll_claim_is_answered_by_an_order_created_while_waiting(
    admin: httpx.Client, runner: Runner
) -> None:
    answer: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        answer["response"] = runner.post("/v1/runner/orders/claim-next?wait=25")
        answer["elapsed"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # let the claim start waiting before the order exists
    order = create_order(admin, runner.server_id)
    waiter.join(timeout=40)
    assert not waiter.is_alive()
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["id"] == order["id"]
    assert response.json()["status"] == "CLAIMED"
    assert response.json()["leaseToken"]
    # Answered when the order arrived (~0.5 s in), not when the wait ran out; the bound is loose on
    # purpose: wake-up latency is measured by the benchmark, not asserted here.
    assert answer["elapsed"] < 20, answer["elapsed"]  # the wait was 25 s: it did not run out


# --- cancel ----------------------------------------------------------------------------------------------
def test_cancel_of_a_queued_order_cancels_it_at_once(admin: httpx.Client, runner: Runner) -> None:
    order = create_order(admin, runner.server_id)
    response = admin.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "e2e"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert runner.post("/v1/runner/orders/claim-next").status_code == 204
    again = admin.post(f"/v1/orders/{order['id']}/cancel")
    assert_error(again, 409, "invalid_status")


def test_cancel_of_a_running_order_is_requested_and_seen_in_the_heartbeat(
    admin: httpx.Client, runner: Runner
) -> None:
    order = running_order(admin, runner)
    response = admin.post(f"/v1/orders/{order['id']}/cancel", json={"reason": "e2e"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "RUNNING"
    assert response.json()["cancelRequested"] is True

    beat = runner.post(f"/v1/runner/orders/{order['id']}/heartbeat", json={"leaseToken": order["leaseToken"]})
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancelRequested"] is True
    assert beat.json()["status"] == "RUNNING"


# --- health, metrics, docs ---------------------------------------------------------------------------------
def test_health_and_readiness_answer_200(server: support.LiveServer) -> None:
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "migrations": "current"}


def test_metrics_expose_claims_and_orders(server: support.LiveServer) -> None:
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert "ikoma_claims_total" in response.text
    assert "ikoma_orders" in response.text


def test_openapi_describes_the_runner_routes(server: support.LiveServer) -> None:
    response = httpx.get(f"{server.url}/openapi.json")
    assert response.status_code == 200
    assert "/v1/runner/orders/claim-next" in response.json()["paths"]
