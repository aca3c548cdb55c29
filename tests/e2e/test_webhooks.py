"""Webhooks against a real `ikoma serve` and a real HTTP receiver started here (issue 12), both backends:
signed deliveries in event id order, retries then auto-disable, enable and redeliver, the CLI, and a
private target refused by a server that does not allow them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import support
from tests.integration.webhook_receiver import Received, Receiver

# short retries so the test sees them all; IKOMA_WEBHOOK_ALLOW_PRIVATE: the receiver is on 127.0.0.1
WEBHOOK_ENV = {
    "IKOMA_WEBHOOK_ALLOW_PRIVATE": "1",
    "IKOMA_WEBHOOK_RETRY_BASE": "0.2",
    "IKOMA_WEBHOOK_RETRY_MAX_DELAY": "0.5",
    "IKOMA_WEBHOOK_DISABLE_AFTER": "3",
    "IKOMA_WEBHOOK_POLL_INTERVAL": "0.2",
    # longer than any held answer below: a held request must not time out into a retry
    "IKOMA_WEBHOOK_TIMEOUT": "120",
}
WAIT_S = 60.0


@pytest.fixture(scope="module", params=support.BACKENDS)
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    yield from support.live_server_per_module(request, tmp_path_factory, extra_env=WEBHOOK_ENV)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


def eventually(check: Callable[[], Any], what: str, server: support.LiveServer) -> Any:
    """`check()`'s first truthy answer; fails with the server's log after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {WAIT_S} s\n{server.log_tail()}")


def received(receiver: Receiver, count: int, server: support.LiveServer) -> list[Received]:
    """The receiver's first `count` requests; fails with the server's log if they do not come."""
    try:
        return receiver.wait_for(count, timeout=WAIT_S)
    except AssertionError as late:
        raise AssertionError(f"{late}\n{server.log_tail()}") from None


def create_server(admin: httpx.Client) -> dict[str, Any]:
    name = f"web-{uuid.uuid4().hex[:8]}"
    answer = admin.post("/v1/servers", json={"name": name, "hostname": f"{name}.example.net"})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def test_signed_deliveries_arrive_in_event_id_order_and_only_admins_manage_webhooks(
    live_server: support.LiveServer, receiver: Receiver
) -> None:
    with live_server.admin() as admin:
        answer = admin.post("/v1/webhooks", json={"url": receiver.url, "events": ["server.created"]})
        assert answer.status_code == 201, answer.text
        hook = answer.json()
        secret = hook.pop("secret")
        assert admin.get(f"/v1/webhooks/{hook['id']}").json() == hook  # the secret is never shown again
        made = [create_server(admin) for _ in range(3)]

        got = received(receiver, 3, live_server)
        assert [r.event["serverId"] for r in got] == [s["id"] for s in made]
        ids = [r.event["id"] for r in got]
        assert ids == sorted(ids)
        assert all(r.signature_valid(secret) for r in got)
        assert {r.headers["x-ikoma-event"] for r in got} == {"server.created"}

        log = eventually(
            lambda: [
                d
                for d in admin.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
                if d["status"] == "delivered"
            ][2:],
            "three deliveries logged as delivered",
            live_server,
        )
        assert log[0]["statusCode"] == 204

        observer = admin.post(
            "/v1/api-clients", json={"name": f"obs-{uuid.uuid4().hex[:6]}", "role": "observer"}
        )
        token = observer.json()["token"]
        for method, path in (("GET", "/v1/webhooks"), ("POST", "/v1/webhooks")):
            refused = httpx.request(
                method, live_server.url + path, headers={"Authorization": f"Bearer {token}"}, json={}
            )
            assert refused.status_code == 403, refused.text
        audited = admin.get("/v1/audit", params={"action": "POST /v1/webhooks"}).json()["items"]
        assert {e["outcome"] for e in audited} >= {"allowed", "denied"}
        # the secret was shown once: no answer, audit entry, event or log line holds it since
        events = admin.get("/v1/events", params={"kind": "webhook"}).text
        assert secret not in json.dumps(audited) + events + live_server.read_log()
        metrics = httpx.get(f"{live_server.url}/metrics").text
        assert 'ikoma_webhook_deliveries_total{outcome="delivered"}' in metrics
        admin.delete(f"/v1/webhooks/{hook['id']}")


def test_a_failing_receiver_gets_retries_then_the_webhook_is_disabled_and_enable_and_redeliver_send_again(
    live_server: support.LiveServer, receiver: Receiver
) -> None:
    receiver.answer = 500
    with live_server.admin() as admin:
        hook = admin.post("/v1/webhooks", json={"url": receiver.url, "events": ["server.created"]}).json()
        secret = hook["secret"]
        server = create_server(admin)

        received(receiver, 3, live_server)
        disabled = eventually(
            lambda: (found := admin.get(f"/v1/webhooks/{hook['id']}").json())["enabled"] is False and found,
            "the webhook disabled after 3 failed attempts",
            live_server,
        )
        assert (disabled["disabledReason"], disabled["consecutiveFailures"]) == ("consecutive_failures", 3)
        (pending,) = admin.get(f"/v1/webhooks/{hook['id']}/deliveries").json()
        assert (pending["status"], pending["attempts"], pending["statusCode"], pending["error"]) == (
            "pending",
            3,
            500,
            "HTTP 500",
        )
        refused = admin.post(f"/v1/webhooks/{hook['id']}/deliveries/{pending['id']}/redeliver")
        assert (refused.status_code, refused.json()["reason"]) == (409, "webhook_disabled")
        time.sleep(1)  # several retry periods: nothing more is sent while disabled
        assert len(receiver.snapshot()) == 3

        receiver.answer = 200
        assert admin.post(f"/v1/webhooks/{hook['id']}/enable").json()["enabled"] is True
        received(receiver, 4, live_server)
        again = admin.post(f"/v1/webhooks/{hook['id']}/deliveries/{pending['id']}/redeliver")
        assert again.status_code == 201, again.text
        got = received(receiver, 5, live_server)

    assert {r.event["serverId"] for r in got} == {server["id"]}
    assert all(r.signature_valid(secret) for r in got)
    delivery_ids = [r.headers["x-ikoma-delivery"] for r in got]
    assert delivery_ids[:4] == [pending["id"]] * 4  # retries keep the delivery's id
    assert delivery_ids[4] == again.json()["id"] != pending["id"]  # a redelivery is a new delivery


def test_a_receiver_that_holds_its_answer_delays_only_its_own_next_delivery(
    live_server: support.LiveServer, receiver: Receiver
) -> None:
    receiver.hold()
    with live_server.admin() as admin:
        hook = admin.post("/v1/webhooks", json={"url": receiver.url, "events": ["server.created"]}).json()
        first = create_server(admin)
        received(receiver, 1, live_server)  # in flight, unanswered
        # meanwhile the API serves, orders are created and dispatched as usual
        second = create_server(admin)
        order = admin.post("/v1/orders", json={"serverId": first["id"], "playbookKey": "system.test_ping"})
        assert order.status_code == 201, order.text
        assert admin.get(f"/v1/orders/{order.json()['order']['id']}").status_code == 200
        assert len(receiver.snapshot()) == 1  # the next event waits behind the one in flight
        receiver.release()
        got = received(receiver, 2, live_server)
        admin.delete(f"/v1/webhooks/{hook['id']}")
    assert [r.event["serverId"] for r in got] == [first["id"], second["id"]]


def test_the_cli_creates_lists_and_shows_the_delivery_log(
    live_server: support.LiveServer, receiver: Receiver
) -> None:
    def ikoma(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ikoma", "webhooks", *args, "--api-url", live_server.url],
            env=support.clean_env(IKOMA_ADMIN_KEY=live_server.admin_key),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    created = ikoma("create", receiver.url, "--event", "server.created", "--description", "cli")
    secret = created.rsplit("secret: ", 1)[1].strip()
    assert secret.startswith("whsec_")
    listed = ikoma("list", "--json")
    (hook,) = [w for w in json.loads(listed) if w["description"] == "cli"]
    with live_server.admin() as admin:
        create_server(admin)
    (delivery,) = received(receiver, 1, live_server)
    assert delivery.signature_valid(secret)
    eventually(
        lambda: [
            d for d in json.loads(ikoma("deliveries", hook["id"][:8], "--json")) if d["status"] == "delivered"
        ],
        "the delivery logged as delivered",
        live_server,
    )
    assert "DELIVERY" in ikoma("deliveries", hook["id"])
    ikoma("disable", hook["id"][:8])
    with live_server.admin() as admin:
        assert admin.get(f"/v1/webhooks/{hook['id']}").json()["enabled"] is False
    ikoma("delete", hook["id"])


def test_a_private_target_is_refused_by_a_server_without_the_flag(tmp_path: Path) -> None:
    with support.running_server("sqlite", tmp_path) as server, server.admin() as admin:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
            "http://10.0.0.7/",
        ):
            answer = admin.post("/v1/webhooks", json={"url": url, "events": ["order.failed"]})
            assert (answer.status_code, answer.json()["reason"]) == (422, "webhook_target_private"), (
                answer.text
            )
        bad = admin.post("/v1/webhooks", json={"url": "ftp://example.com/", "events": ["order"]})
        assert (bad.status_code, bad.json()["reason"]) == (422, "webhook_url_invalid")
        assert admin.get("/v1/webhooks").json() == []
