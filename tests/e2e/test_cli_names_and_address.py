"""The `ikoma` commands against a real server: names and short ids wherever an id is, tables that fit
100 columns, and one address (IKOMA_API_URL, else PORT) for every command and for `ikoma wait`."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from ikoma.cli.main import app
from tests import support

pytestmark = pytest.mark.e2e


@pytest.fixture
def live_server(shared_server: support.LiveServer) -> support.LiveServer:
    """One server per backend for the module: every test creates what it uses under unique names."""
    return shared_server


def ikoma(server: support.LiveServer, *args: str, columns: int = 100, **env: str | None) -> Result:
    """One command line as typed in a 100-column terminal; the address comes from PORT alone."""
    base: dict[str, str | None] = {
        "IKOMA_API_URL": None,
        "PORT": str(server.port),
        "IKOMA_ADMIN_KEY": server.admin_key,
        "COLUMNS": str(columns),
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, list(args), env={**base, **env})


def ok_json(server: support.LiveServer, *args: str) -> Any:
    result = ikoma(server, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def fleet(live_server: support.LiveServer) -> dict[str, str]:
    """A server with a runner, attached by their names, and a playbook."""
    names = {"server": unique("web"), "runner": unique("runner"), "playbook": f"e2e.{unique('n')}"}
    names["playbook"] = names["playbook"].replace("-", "_")
    ok_json(live_server, "servers", "create", names["server"], "--hostname", "web.example.net")
    ok_json(live_server, "runners", "create", names["runner"])
    attached = ok_json(live_server, "servers", "attach", names["server"], "--runner", names["runner"])
    assert attached["runnerName"] == names["runner"]
    ok_json(live_server, "playbooks", "create", names["playbook"], "--name", "e2e names")
    return names


def test_orders_are_created_listed_and_shown_by_server_name_and_short_id(
    live_server: support.LiveServer, fleet: dict[str, str]
) -> None:
    server, playbook = fleet["server"], fleet["playbook"]
    order = ok_json(live_server, "orders", "create", "--server", server, "--playbook", playbook)["order"]
    short = order["id"][:8]

    listed = ikoma(live_server, "orders", "list", "--server", server)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, listed.stdout
    assert "…" not in listed.stdout
    row = next(line for line in lines if line.startswith(short))
    assert server in row
    assert playbook in row
    assert "QUEUED" in row
    assert order["id"] not in listed.stdout
    assert order["serverId"] not in listed.stdout

    wide = ikoma(live_server, "orders", "list", "--server", server, "--wide", columns=250)
    assert order["id"] in wide.stdout

    shown = ok_json(live_server, "orders", "show", short)
    assert shown["id"] == order["id"]
    by_runner = ok_json(live_server, "orders", "list", "--runner", fleet["runner"], "--status", "QUEUED")
    assert [o["id"] for o in by_runner["items"]] == [order["id"]]
    cancelled = ok_json(live_server, "orders", "cancel", short)
    assert cancelled["status"] == "CANCELLED"


def test_servers_are_shown_updated_detached_and_deleted_by_name(
    live_server: support.LiveServer, fleet: dict[str, str]
) -> None:
    server = fleet["server"]
    listed = ikoma(live_server, "servers", "list")
    row = next(line for line in listed.stdout.splitlines() if server in line)
    assert fleet["runner"] in row
    assert max(len(line) for line in listed.stdout.splitlines()) <= 100, listed.stdout

    shown = ok_json(live_server, "servers", "show", server)
    assert shown["server"]["name"] == server
    by_prefix = ok_json(live_server, "servers", "show", shown["server"]["id"][:8])
    assert by_prefix["server"]["id"] == shown["server"]["id"]
    assert ok_json(live_server, "servers", "update", server, "--port", "2222")["port"] == 2222
    assert ok_json(live_server, "servers", "detach", server)["runnerId"] is None
    deleted = ikoma(live_server, "servers", "delete", server)
    assert deleted.exit_code == 0, deleted.output
    assert server not in [s["name"] for s in ok_json(live_server, "servers", "list")]


def test_a_bootstrap_token_names_its_server_and_runners_list_fits_100_columns(
    live_server: support.LiveServer, fleet: dict[str, str]
) -> None:
    bare = ok_json(live_server, "servers", "create", unique("db"), "--hostname", "db.example.net")
    issued = ok_json(live_server, "runners", "bootstrap-token", "--server", bare["name"])
    assert issued["serverId"] == bare["id"]
    listed = ikoma(live_server, "runners", "list")
    assert listed.exit_code == 0, listed.output
    assert max(len(line) for line in listed.stdout.splitlines()) <= 100, listed.stdout
    row = next(line for line in listed.stdout.splitlines() if fleet["runner"] in line)
    assert fleet["server"] in row


def test_api_clients_are_scoped_and_revoked_by_name(
    live_server: support.LiveServer, fleet: dict[str, str]
) -> None:
    name = unique("bot")
    created = ok_json(live_server, "api-clients", "create", name, "--server", fleet["server"])
    server_id = ok_json(live_server, "servers", "show", fleet["server"])["server"]["id"]
    assert created["serverIds"] == [server_id]
    assert ok_json(live_server, "api-clients", "revoke", name)["revokedAt"] is not None


def test_a_name_nothing_has_says_what_was_looked_for_and_exits_1(live_server: support.LiveServer) -> None:
    result = ikoma(
        live_server, "orders", "create", "--server", "no-such-server", "--playbook", "system.test_ping"
    )
    assert result.exit_code == 1
    assert "error: server_not_found: no server with name 'no-such-server'" in result.stderr
    result = ikoma(live_server, "orders", "show", "0000abcd")
    assert result.exit_code == 1
    assert "error: order_not_found:" in result.stderr


def test_wait_finds_the_server_through_port_and_says_ready(live_server: support.LiveServer) -> None:
    result = ikoma(live_server, "wait", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert f"ready: IKOMA answers at http://127.0.0.1:{live_server.port}" in result.stdout


def test_wait_gives_up_at_its_timeout_naming_the_address() -> None:
    port = support.free_port()
    result = CliRunner().invoke(
        app, ["wait", "--timeout", "0.5"], env={"IKOMA_API_URL": None, "PORT": str(port)}
    )
    assert result.exit_code == 1
    assert (
        f"error: not_ready: http://127.0.0.1:{port}/readyz did not answer ready within 0.5s" in result.output
    )


def test_wait_gives_up_at_once_when_the_process_it_watches_has_ended() -> None:
    ended = subprocess.Popen(["true"])  # left unreaped: a zombie, as `make run &` is until bash reaps it
    try:
        while not ended_as_zombie(ended.pid):
            time.sleep(0.05)
        result = CliRunner().invoke(
            app,
            ["wait", "--pid", str(ended.pid), "--timeout", "60"],
            env={"IKOMA_API_URL": None, "PORT": str(support.free_port())},
        )
        assert result.exit_code == 1
        # the message of the watched process, not the one of the 60 s timeout
        assert f"error: not_ready: process {ended.pid} ended before" in result.output
    finally:
        ended.wait()


def ended_as_zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "Z"


def test_the_root_address_is_the_console_behind_sign_in_and_the_documentation_stays_public(
    live_server: support.LiveServer,
) -> None:
    root = httpx.get(
        f"{live_server.url}/", headers={"Accept": "text/html"}, follow_redirects=False, trust_env=False
    )
    assert root.status_code == 303
    assert root.headers["location"] == "/login"
    sign_in = httpx.get(f"{live_server.url}/login", trust_env=False)
    assert sign_in.status_code == 200
    assert 'id="login-form"' in sign_in.text
    assert httpx.get(f"{live_server.url}/docs", trust_env=False).status_code == 200
