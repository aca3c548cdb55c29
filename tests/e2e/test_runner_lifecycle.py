"""Runner lifecycle over real HTTP, the real CLI and a real `ikoma runner` process (issue 9).

One server process per backend serves the whole module; each test builds its own server/runner with
unique names. Revoking a runner mid-order: its next call is refused (401) and the order is requeued or
ended as its retry policy says, never lost.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from ikoma.cli.main import app
from tests import support
from tests.e2e.fleet import Fleet, attach_fleet

pytestmark = [pytest.mark.e2e]

# long enough to revoke the runner while it runs; short enough that nothing outlives the test for long
STEP = [sys.executable, "-c", "import time; time.sleep(6)"]


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    """A real `ikoma serve` process shared by this module, on each backend."""
    live = None
    for live in support.live_server_per_module(request, tmp_path_factory):
        yield live
    log = live.read_log() if live else ""
    assert "Traceback" not in log, log


@pytest.fixture
def fleet(server: support.LiveServer, tmp_path: Path) -> Iterator[Fleet]:
    built = attach_fleet(server, tmp_path, name=f"web-{uuid.uuid4().hex[:8]}")
    try:
        yield built
    finally:
        built.stop_runners()


def ikoma(server: support.LiveServer, *args: str) -> Result:
    env = {
        "IKOMA_API_URL": server.url,
        "IKOMA_ADMIN_KEY": server.admin_key,
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, list(args), env=env)


def runner_client(server: support.LiveServer, runner_id: str, token: str) -> httpx.Client:
    headers = {"x-runner-id": runner_id, "x-runner-token": token}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def runner_name(fleet: Fleet) -> str:
    with fleet.server.admin() as admin:
        return str(admin.get(f"/v1/runners/{fleet.runner_id}").json()["name"])


def wait_for_log(fleet: Fleet, text: str, name: str = "runner", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in fleet.runner_log(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in fleet.runner_log(name), fleet.runner_log(name)


def audit_actions(server: support.LiveServer, prefix: str) -> list[tuple[str, str, str]]:
    with server.admin() as admin:
        page = admin.get("/v1/audit", params={"action": prefix, "limit": 1000}).json()
    return [(e["action"], e["target"], e["outcome"]) for e in page["items"]]


# --- defect 1: a seed-style runner must not break the runner list ---------------------------------


def test_seed_style_heartbeats_leave_the_runner_list_readable_for_everyone(fleet: Fleet) -> None:
    server = fleet.server
    with runner_client(server, fleet.runner_id, fleet.token) as runner:
        for body in (None, {}, {"version": "1.0.0"}):  # exactly what seed 000 clients send
            answer = runner.post("/v1/runner/heartbeat", json=body)
            assert answer.status_code == 200, answer.text
    with server.admin() as admin:
        listed = admin.get("/v1/runners")
        assert listed.status_code == 200, listed.text
        scoped = admin.post(
            "/v1/api-clients",
            json={
                "name": f"watch-{uuid.uuid4().hex[:6]}",
                "role": "observer",
                "serverIds": [fleet.server_id],
            },
        ).json()
    mine = next(r for r in listed.json() if r["id"] == fleet.runner_id)
    assert (mine["capabilities"], mine["version"], mine["online"]) == ([], "1.0.0", True)
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": scoped["token"]}, timeout=30) as http:
        seen = http.get("/v1/runners")
    assert seen.status_code == 200, seen.text
    assert [r["id"] for r in seen.json()] == [fleet.runner_id]
    result = ikoma(server, "runners", "list")
    assert result.exit_code == 0, result.output
    assert mine["name"] in result.stdout


# --- revoke a real runner mid-order ----------------------------------------------------------------


def test_revoking_a_runner_mid_order_refuses_its_next_call_and_loses_no_order(fleet: Fleet) -> None:
    server = fleet.server
    fleet.start_runner()
    once = fleet.order("shell.exec", {"argv": STEP})  # shell.exec: one attempt, never re-run
    fleet.wait_status(once, {"RUNNING"})

    result = ikoma(server, "runners", "revoke", runner_name(fleet), "--json")

    assert result.exit_code == 0, result.output
    revoked = json.loads(result.stdout)
    assert revoked["revokedBy"] == "admin"
    assert revoked["endedOrderIds"] == [once]
    ended = fleet.get(once)
    assert (ended["status"], ended["statusReason"]) == ("STALE", "runner_revoked")
    last = fleet.events(once)[-1]
    assert (last["toStatus"], last["reason"], last["actor"]) == ("STALE", "runner_revoked", "admin")
    with runner_client(server, fleet.runner_id, fleet.token) as runner:
        refused = runner.post("/v1/runner/heartbeat", json={})
        claim = runner.post("/v1/runner/orders/claim-next")
    assert (refused.status_code, refused.json()["reason"]) == (401, "unauthorized")
    assert claim.status_code == 401
    # the agent's own next call is refused too, and its late report is not taken: the order stays ended
    wait_for_log(fleet, "401 unauthorized")
    assert fleet.get(once)["status"] == "STALE"
    assert ("POST /v1/runners/{runner}/revoke", f"/v1/runners/{fleet.runner_id}/revoke", "allowed") in (
        audit_actions(server, "POST /v1/runners/")
    )
    with server.admin() as admin:
        timeline = admin.get(f"/v1/servers/{fleet.server_id}/timeline").json()
    assert any(item["type"] == "runner.revoked" for item in timeline["items"]), timeline


def test_a_long_poll_in_progress_when_the_runner_is_revoked_gets_401_and_no_order(fleet: Fleet) -> None:
    server = fleet.server
    answers: list[httpx.Response] = []
    with runner_client(server, fleet.runner_id, fleet.token) as runner:
        poll = threading.Thread(
            target=lambda: answers.append(runner.post("/v1/runner/orders/claim-next", params={"wait": 20}))
        )
        poll.start()
        try:
            with server.admin() as admin:
                assert admin.post(f"/v1/runners/{fleet.runner_id}/revoke").status_code == 200
            order = fleet.order("system.test_ping", {})  # what the waiting poll must not be handed
        finally:
            poll.join(timeout=30)

    assert [a.status_code for a in answers] == [401], [a.text for a in answers]
    assert answers[0].json()["reason"] == "unauthorized"
    assert fleet.get(order)["status"] == "QUEUED"


def test_an_order_with_attempts_left_is_requeued_and_run_by_the_replacement_runner(fleet: Fleet) -> None:
    server = fleet.server
    fleet.start_runner("revoked")
    order = fleet.order("shell.exec", {"argv": STEP}, maxAttempts=2)
    fleet.wait_status(order, {"RUNNING"})

    with server.admin() as admin:
        answer = admin.post(f"/v1/runners/{fleet.runner_id}/revoke")
        assert answer.status_code == 200, answer.text
        assert answer.json()["requeuedOrderIds"] == [order]
        assert fleet.get(order)["status"] == "QUEUED"
        spare = admin.post("/v1/runners", json={"name": f"spare-{uuid.uuid4().hex[:8]}"}).json()
        attached = admin.patch(f"/v1/servers/{fleet.server_id}", json={"runnerId": spare["id"]})
        assert attached.status_code == 200, attached.text
    replacement = dataclasses.replace(fleet, runner_id=spare["id"], token=spare["token"], procs=[])
    try:
        replacement.start_runner("replacement")
        done = replacement.wait_done(order, timeout=60)
    finally:
        replacement.stop_runners()

    assert done["status"] == "SUCCEEDED", (done, replacement.runner_log("replacement"))
    assert [(a["attempt"], a["runnerId"], a["outcome"]) for a in done["attempts"]] == [
        (1, fleet.runner_id, "STALE"),
        (2, spare["id"], "SUCCEEDED"),
    ]


# --- show, rotate, delete through the CLI ----------------------------------------------------------


def test_rotated_token_is_printed_once_and_the_old_one_is_refused_at_once(fleet: Fleet) -> None:
    name = runner_name(fleet)
    shown = ikoma(fleet.server, "runners", "show", name)
    assert shown.exit_code == 0, shown.output
    assert fleet.runner_id in shown.stdout  # an object shows its full id (tables shorten it)

    rotated = ikoma(fleet.server, "runners", "rotate-token", name)

    assert rotated.exit_code == 0, rotated.output
    assert "will not be shown again" in rotated.stderr
    new_token = rotated.stdout.split("token: ", 1)[1].strip()
    with runner_client(fleet.server, fleet.runner_id, fleet.token) as old:
        assert old.post("/v1/runner/heartbeat", json={}).status_code == 401
    with runner_client(fleet.server, fleet.runner_id, new_token) as new:
        assert new.post("/v1/runner/heartbeat", json={}).status_code == 200


def test_delete_refuses_a_used_runner_and_removes_a_never_used_one(fleet: Fleet) -> None:
    with runner_client(fleet.server, fleet.runner_id, fleet.token) as runner:
        fleet.order("system.test_ping", {})
        assert runner.post("/v1/runner/orders/claim-next").status_code == 200
    name = runner_name(fleet)

    used = ikoma(fleet.server, "runners", "delete", name)

    assert used.exit_code == 1
    assert "runner_in_use" in used.stderr
    with fleet.server.admin() as admin:
        spare = admin.post("/v1/runners", json={"name": f"spare-{uuid.uuid4().hex[:8]}"}).json()
        assert admin.delete(f"/v1/runners/{spare['name']}").status_code == 204
        assert admin.get(f"/v1/runners/{spare['id']}").status_code == 404
        again = admin.delete(f"/v1/runners/{fleet.runner_id}")
    assert (again.status_code, again.json()["reason"]) == (409, "runner_in_use")


def test_runner_lifecycle_routes_need_the_admin_role(fleet: Fleet) -> None:
    with fleet.server.admin() as admin:
        operator = admin.post(
            "/v1/api-clients", json={"name": f"op-{uuid.uuid4().hex[:6]}", "role": "operator"}
        ).json()
    headers = {"X-Api-Key": operator["token"]}
    with httpx.Client(base_url=fleet.server.url, headers=headers, timeout=30) as http:
        answers = [
            http.get(f"/v1/runners/{fleet.runner_id}"),
            http.post(f"/v1/runners/{fleet.runner_id}/revoke"),
            http.post(f"/v1/runners/{fleet.runner_id}/rotate-token"),
            http.delete(f"/v1/runners/{fleet.runner_id}"),
        ]
    assert [(a.status_code, a.json()["reason"]) for a in answers] == [(403, "forbidden")] * 4
    with runner_client(fleet.server, fleet.runner_id, fleet.token) as runner:
        assert runner.post("/v1/runner/heartbeat", json={}).status_code == 200  # nothing was done
    assert ("POST /v1/runners/{runner}/revoke", f"/v1/runners/{fleet.runner_id}/revoke", "denied") in (
        audit_actions(fleet.server, "POST /v1/runners/")
    )
