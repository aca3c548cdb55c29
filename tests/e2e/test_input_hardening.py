"""Hostile or careless input over real HTTP (issue 9): nulls, NUL characters, body sizes and media
types, huge echoes, unknown query parameters, label filters, one not-found reason per kind.

One server process per backend serves the module, started with small body limits so the size tests
send kilobytes, not megabytes; each test creates what it uses under unique names.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import support
from tests.e2e.test_api_errors import Runner, assert_error, error_paths, new_runner, unique

pytestmark = [pytest.mark.e2e]

ADMIN_LIMIT = 64 * 1024
RUNNER_LIMIT = 16 * 1024
LOGS_LIMIT = 128 * 1024


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    limits = {
        "IKOMA_BODY_LIMIT_ADMIN": str(ADMIN_LIMIT),
        "IKOMA_BODY_LIMIT_RUNNER": str(RUNNER_LIMIT),
        "IKOMA_BODY_LIMIT_LOGS": str(LOGS_LIMIT),
    }
    live = None
    for live in support.live_server_per_module(request, tmp_path_factory, extra_env=limits):
        yield live
    log = live.read_log() if live else ""
    assert "Traceback" not in log, log
    assert "request_failed" not in log, log  # a 500 or 503 (api/errors.failure_response)


@pytest.fixture
def admin(server: support.LiveServer) -> Iterator[httpx.Client]:
    with server.admin() as client:
        yield client


@pytest.fixture
def runner(server: support.LiveServer, admin: httpx.Client) -> Iterator[Runner]:
    r = new_runner(server, admin)
    yield r
    r.client.close()


def new_server(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = admin.post(
        "/v1/servers", json={"name": unique("web"), "hostname": "web.example.net", **fields}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def raw_post(
    server: support.LiveServer, path: str, headers: dict[str, str], chunks: list[bytes] | None = None
) -> tuple[int, dict[str, Any]]:
    """POST with exactly these headers; `chunks` are sent chunked (without the final empty chunk),
    none at all when None: the server must answer from the headers and what it has read."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        for chunk in chunks or []:
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- 2: explicit null on a field that cannot be empty -------------------------------------------
@pytest.mark.parametrize("field", ["name", "hostname", "port", "labels", "osFamily"])
def test_null_for_a_server_field_that_cannot_be_empty_is_422_at_its_path_and_changes_nothing(
    admin: httpx.Client, field: str
) -> None:
    created = new_server(admin, labels={"env": "prod"})
    body = assert_error(
        admin.patch(f"/v1/servers/{created['id']}", json={field: None}), 422, "validation_error"
    )
    assert error_paths(body) == [field], body
    assert admin.get(f"/v1/servers/{created['id']}").json() == created
    listed = admin.get("/v1/servers")
    assert listed.status_code == 200, listed.text


def test_null_for_a_nullable_server_field_clears_it(admin: httpx.Client) -> None:
    created = new_server(admin, osVersion="24.04")
    response = admin.patch(f"/v1/servers/{created['id']}", json={"osVersion": None})
    assert response.status_code == 200, response.text
    assert response.json()["osVersion"] is None


# --- 3: NUL characters ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"name": "web\u0000"}, "name"),
        ({"labels": {"env": "pro\u0000d"}}, "labels.env"),
        ({"labels": {"e\u0000nv": "prod"}}, "labels.e\\u0000nv"),
    ],
)
def test_nul_in_a_server_body_is_422_nul_character_and_nothing_is_stored(
    admin: httpx.Client, fields: dict[str, Any], path: str
) -> None:
    name = unique("nul")
    response = admin.post("/v1/servers", json={"name": name, "hostname": "h.example.net", **fields})
    body = assert_error(response, 422, "nul_character")
    assert error_paths(body) == [path], body
    assert name not in [s["name"] for s in admin.get("/v1/servers").json()]


def test_nul_in_order_params_is_422_at_its_nested_path(admin: httpx.Client, runner: Runner) -> None:
    response = admin.post(
        "/v1/orders",
        json={
            "serverId": runner.server_id,
            "playbookKey": "system.test_ping",
            "params": {"message": "a\u0000"},
        },
    )
    assert error_paths(assert_error(response, 422, "nul_character")) == ["params.message"]


def test_nul_in_a_query_parameter_is_422_nul_character(admin: httpx.Client) -> None:
    body = assert_error(admin.get("/v1/orders", params={"playbookKey": "a\u0000"}), 422, "nul_character")
    assert error_paths(body) == ["playbookKey"]


def test_nul_in_a_runner_body_is_422_nul_character(runner: Runner) -> None:
    response = runner.post("/v1/runner/heartbeat", json={"hostname": "h\u0000", "capabilities": []})
    assert error_paths(assert_error(response, 422, "nul_character")) == ["hostname"]


# --- 4: body limits, checked after authentication, as the body streams in --------------------------
def test_admin_body_declared_past_the_limit_is_413_without_being_read(server: support.LiveServer) -> None:
    headers = {"x-api-key": server.admin_key, "content-type": "application/json"}
    status, body = raw_post(server, "/v1/servers", {**headers, "content-length": str(200 * 1024 * 1024)})
    assert (status, body["reason"]) == (413, "payload_too_large"), body
    assert body["details"] == {"limitBytes": ADMIN_LIMIT, "setting": "IKOMA_BODY_LIMIT_ADMIN"}


def test_admin_body_streamed_past_the_limit_is_413(server: support.LiveServer) -> None:
    headers = {"x-api-key": server.admin_key, "transfer-encoding": "chunked"}
    status, body = raw_post(server, "/v1/servers", headers, [b"[" + b" " * 16 * 1024] * 8)
    assert (status, body["reason"]) == (413, "payload_too_large"), body


def test_oversize_body_with_a_bad_key_is_401_not_413(server: support.LiveServer) -> None:
    status, body = raw_post(
        server, "/v1/servers", {"x-api-key": "ika_wrong", "content-length": str(200 * 1024 * 1024)}
    )
    assert (status, body["reason"]) == (401, "unauthorized"), body


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "chunked"])
def test_oversize_runner_body_is_401_for_a_bad_token_and_413_for_the_runner(
    server: support.LiveServer, runner: Runner, streamed: bool
) -> None:
    def post(token: str) -> tuple[int, dict[str, Any]]:
        headers = {"x-runner-id": runner.id, "x-runner-token": token}
        if streamed:
            return raw_post(
                server, "/v1/runner/heartbeat", {**headers, "transfer-encoding": "chunked"}, [b" " * 8192] * 4
            )
        return raw_post(server, "/v1/runner/heartbeat", {**headers, "content-length": str(50 * 1024 * 1024)})

    status, body = post(runner.token + "x")
    assert (status, body["reason"]) == (401, "unauthorized"), body
    status, body = post(runner.token)
    assert (status, body["reason"]) == (413, "payload_too_large"), body
    assert body["details"]["setting"] == "IKOMA_BODY_LIMIT_RUNNER"


def test_a_log_batch_past_the_runner_limit_is_taken_under_the_logs_limit(
    admin: httpx.Client, runner: Runner
) -> None:
    admin.post("/v1/orders", json={"serverId": runner.server_id, "playbookKey": "system.test_ping"})
    claimed = runner.post("/v1/runner/orders/claim-next").json()
    chunks = [{"seq": i, "stream": "stdout", "data": "x" * 8000} for i in range(4)]  # ~32 KB > runner limit
    response = runner.post(
        f"/v1/runner/orders/{claimed['id']}/logs",
        json={"leaseToken": claimed["leaseToken"], "chunks": chunks},
    )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 4


# --- 5: echoed values are clipped --------------------------------------------------------------------
def test_a_huge_invalid_value_is_not_echoed_whole(admin: httpx.Client, runner: Runner) -> None:
    huge = "x" * 60_000
    response = admin.post(
        "/v1/orders",
        json={"serverId": runner.server_id, "playbookKey": "system.test_ping", "params": {"message": huge}},
    )
    assert_error(response, 422, "validation_error")
    assert len(response.content) < 2000, len(response.content)
    response = admin.put(f"/v1/playbooks/{'a.' + 'b' * 5000}", json={"key": "a.b"})
    assert_error(response, 422, "validation_error")
    assert len(response.content) < 2000, len(response.content)


# --- 6: media types ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded"])
def test_a_json_body_without_json_content_type_is_read_as_json(
    admin: httpx.Client, content_type: str | None
) -> None:
    name = unique("curl")
    headers = {"content-type": content_type} if content_type else {}
    content = f'{{"name": "{name}", "hostname": "h.example.net"}}'.encode()
    response = admin.post("/v1/servers", content=content, headers=headers)
    assert response.request.headers.get("content-type") == content_type
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


def test_form_data_that_is_not_json_is_400_invalid_json_saying_so(admin: httpx.Client) -> None:
    response = admin.post("/v1/servers", data={"name": "web", "hostname": "h"})
    body = assert_error(response, 400, "invalid_json")
    assert "application/x-www-form-urlencoded" in body["message"], body


@pytest.mark.parametrize("path", ["/v1/servers", "/execute/system.ping"])
def test_another_media_type_is_415_on_admin_routes(admin: httpx.Client, path: str) -> None:
    response = admin.post(path, content=b"<server/>", headers={"content-type": "text/xml"})
    assert_error(response, 415, "unsupported_media_type")


def test_another_media_type_is_415_on_runner_routes(runner: Runner) -> None:
    response = runner.client.post(
        "/v1/runner/heartbeat", content=b"<beat/>", headers={"content-type": "text/xml"}
    )
    assert_error(response, 415, "unsupported_media_type")


# --- 9: camelCase paths, unknown query parameters, label filters, not-found reasons -----------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/servers/not-a-uuid", "serverId"),
        ("/v1/orders/not-a-uuid", "orderId"),
        ("/v1/servers/not-a-uuid/timeline", "serverId"),
    ],
)
def test_path_parameter_errors_use_camel_case_paths(admin: httpx.Client, path: str, expected: str) -> None:
    assert error_paths(assert_error(admin.get(path), 422, "validation_error")) == [expected]


@pytest.mark.parametrize(
    "path",
    ["/v1/servers?lable=env", "/v1/orders?bogus=1", "/v1/servers/{id}/timeline?typ=x", "/v1/tools?x=1"],
)
def test_unknown_query_parameter_is_422_naming_it(admin: httpx.Client, path: str) -> None:
    created = new_server(admin)
    response = admin.get(path.format(id=created["id"]))
    body = assert_error(response, 422, "unknown_query_parameter")
    name = path.split("?")[1].split("=")[0]
    assert error_paths(body) == [name], body
    assert body["details"]["parameter"] == name


def test_unknown_query_parameter_on_a_runner_route_is_422(runner: Runner) -> None:
    response = runner.post("/v1/runner/orders/claim-next?wiat=5")
    assert_error(response, 422, "unknown_query_parameter")


def test_label_filters_select_servers_by_value_or_key_all_required(admin: httpx.Client) -> None:
    team = unique("team")
    prod = new_server(admin, labels={"team": team, "env": "prod", "tier": "web"})
    dev = new_server(admin, labels={"team": team, "env": "dev"})
    new_server(admin, labels={"env": "prod"})

    def names(*filters: str) -> list[str]:
        response = admin.get("/v1/servers", params=[("label", f) for f in filters])
        assert response.status_code == 200, response.text
        return [s["name"] for s in response.json()]

    assert names(f"team={team}") == [prod["name"], dev["name"]]
    assert names(f"team={team}", "env=prod") == [prod["name"]]
    assert names(f"team={team}", "tier") == [prod["name"]]
    assert names(f"team={team}", "env=staging") == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/servers/{id}"),
        ("PATCH", "/v1/servers/{id}"),
        ("DELETE", "/v1/servers/{id}"),
        ("GET", "/v1/servers/{id}/state"),
        ("GET", "/v1/servers/{id}/timeline"),
    ],
)
def test_unknown_server_is_404_server_not_found_on_every_route(
    admin: httpx.Client, method: str, path: str
) -> None:
    body = {"port": 2222} if method == "PATCH" else None
    response = admin.request(method, path.format(id=uuid.uuid4()), json=body)
    assert_error(response, 404, "server_not_found")
