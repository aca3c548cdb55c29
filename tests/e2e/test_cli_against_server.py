"""The `ikoma` admin commands against a real `ikoma serve` process: what an operator types and reads."""

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ikoma.cli.main import app

pytestmark = pytest.mark.e2e

Ikoma = Callable[..., Result]


class LiveServer(Protocol):
    """What the `live_server` fixture of tests/conftest.py yields."""

    url: str
    admin_key: str


def unique(prefix: str) -> str:
    # The server may be shared by several tests: unique names keep them from colliding (409 conflict).
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def invoke(url: str, admin_key: str, *args: str) -> Result:
    # COLUMNS keeps table rows on one line; NO_COLOR keeps escape codes out of the asserted text.
    env = {"IKOMA_API_URL": url, "IKOMA_ADMIN_KEY": admin_key, "COLUMNS": "250", "NO_COLOR": "1"}
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def live_server(shared_server: LiveServer) -> LiveServer:
    """One server per backend for the module: every test creates what it uses under unique names."""
    return shared_server


@pytest.fixture
def ikoma(live_server: LiveServer) -> Ikoma:
    """Run one `ikoma` command line against the live server."""

    def run(*args: str) -> Result:
        return invoke(live_server.url, live_server.admin_key, *args)

    return run


def run_json(ikoma: Ikoma, *args: str) -> Any:
    result = ikoma(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def server(ikoma: Ikoma) -> dict[str, Any]:
    created: dict[str, Any] = run_json(
        ikoma, "servers", "create", unique("web"), "--hostname", "web.example.net", "--label", "env=e2e"
    )
    return created


@pytest.fixture
def playbook_key(ikoma: Ikoma) -> str:
    key = f"e2e.{unique('cli').replace('-', '_')}"
    run_json(ikoma, "playbooks", "create", key, "--name", "CLI e2e", "--max-attempts", "1")
    return key


def test_server_create_keeps_string_labels(server: dict[str, Any]) -> None:
    assert server["labels"] == {"env": "e2e"}
    assert server["runnerId"] is None


def test_runner_token_is_printed_once_and_runner_list_shows_the_attached_server(
    ikoma: Ikoma, server: dict[str, Any]
) -> None:
    name = unique("runner")
    created = ikoma("runners", "create", name)
    assert created.exit_code == 0, created.output
    assert "token: ikr_" in created.stdout
    assert "will not be shown again" in created.stderr

    runner = next(r for r in run_json(ikoma, "runners", "list") if r["name"] == name)
    assert "token" not in runner
    attached = run_json(ikoma, "servers", "attach", server["id"], "--runner", runner["id"])
    assert attached["runnerId"] == runner["id"]

    listed = ikoma("runners", "list")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if name in line)
    assert server["name"] in row


def test_order_created_with_json_is_queued_then_filtered_by_status_and_cancelled(
    ikoma: Ikoma, server: dict[str, Any], playbook_key: str
) -> None:
    created = run_json(
        ikoma, "orders", "create", "--server", server["id"], "--playbook", playbook_key, "--param", "count=2"
    )
    order = created["order"]
    assert order["status"] == "QUEUED"
    assert order["params"] == {"count": 2}

    def ids_with_status(status: str) -> list[str]:
        page = run_json(ikoma, "orders", "list", "--status", status, "--server", server["id"])
        return [item["id"] for item in page["items"]]

    assert ids_with_status("QUEUED") == [order["id"]]
    assert ids_with_status("CANCELLED") == []

    cancelled = run_json(ikoma, "orders", "cancel", order["id"], "--reason", "e2e cancel")
    assert cancelled["status"] == "CANCELLED"
    assert ids_with_status("QUEUED") == []
    assert ids_with_status("CANCELLED") == [order["id"]]


def test_cancelling_an_ended_order_prints_invalid_status_and_exits_1(
    ikoma: Ikoma, server: dict[str, Any], playbook_key: str
) -> None:
    order = run_json(ikoma, "orders", "create", "--server", server["id"], "--playbook", playbook_key)["order"]
    run_json(ikoma, "orders", "cancel", order["id"])

    again = ikoma("orders", "cancel", order["id"])
    assert again.exit_code == 1
    assert "error: invalid_status:" in again.stderr


def test_waiting_on_an_order_no_runner_serves_exits_3_at_the_timeout(
    ikoma: Ikoma, server: dict[str, Any], playbook_key: str
) -> None:
    result = ikoma(
        "orders", "create", "--server", server["id"], "--playbook", playbook_key, "--wait", "--timeout", "1"
    )
    assert result.exit_code == 3, result.output
    assert "error: wait_timeout:" in result.stderr
    assert "QUEUED" in result.stdout


def test_unknown_order_id_prints_order_not_found_and_exits_1(ikoma: Ikoma) -> None:
    result = ikoma("orders", "show", str(uuid.uuid4()))
    assert result.exit_code == 1
    assert "error: order_not_found:" in result.stderr
    assert result.stdout == ""


def test_wrong_admin_key_prints_unauthorized_and_exits_1(live_server: LiveServer) -> None:
    result = invoke(live_server.url, "not-the-key", "servers", "list")
    assert result.exit_code == 1
    assert "error: unauthorized:" in result.stderr


def test_unreachable_api_prints_api_unreachable_and_exits_1() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed: the connection is refused.
    result = invoke(f"http://127.0.0.1:{free_port}", "any-key", "servers", "list")
    assert result.exit_code == 1
    assert "error: api_unreachable:" in result.stderr
