"""Agentless machines over real HTTP (issue 14): a real `ikoma serve` runs orders on a real sshd.

What an operator does: add a machine with `ikoma servers create --ssh …`, test the connection, run
playbooks; what nobody can do: read a credential back from the API, the audit log, the server's log or
the database (the SQLite files, a pg_dump). Both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ikoma.cli.main import app
from tests import processes, support
from tests import sshd as sshd_support

pytestmark = [pytest.mark.e2e]

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd_support.Sshd]:
    with sshd_support.running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module", params=support.BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[support.LiveServer]:
    yield from support.live_server_per_module(request, tmp_path_factory)


def ikoma(server: support.LiveServer, *args: str) -> Result:
    env = {
        "IKOMA_API_URL": server.url,
        "IKOMA_ADMIN_KEY": server.admin_key,
        "COLUMNS": "250",
        "NO_COLOR": "1",
    }
    return CliRunner().invoke(app, list(args), env=env)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_order(
    server: support.LiveServer, server_id: str, playbook: str, params: dict[str, Any]
) -> dict[str, Any]:
    with server.admin() as admin:
        created = admin.post(
            "/v1/orders", json={"serverId": server_id, "playbookKey": playbook, "params": params}
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["order"]["id"]
        deadline = time.monotonic() + 180
        while True:
            order = admin.get(f"/v1/orders/{order_id}").json()
            if order["status"] in FINAL:
                return dict(order)
            assert time.monotonic() < deadline, f"order still {order['status']}\n{server.log_tail()}"
            time.sleep(0.2)


def database_bytes(server: support.LiveServer) -> bytes:
    if server.database_url.startswith("sqlite"):
        path = Path(server.database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    return subprocess.run(
        ["pg_dump", "--no-owner", server.database_url], capture_output=True, check=True, timeout=120
    ).stdout


def test_an_operator_adds_a_machine_over_ssh_tests_it_and_runs_playbooks_without_any_secret_leaking(
    server: support.LiveServer, sshd: sshd_support.Sshd, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(sshd_support.PASSWORD + "\n")
    key_file = tmp_path / "key"
    key_file.write_text(sshd.private_key)
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(sshd.passphrase + "\n")
    name = unique("ssh")
    created = ikoma(
        server,
        "servers",
        "create",
        name,
        "--ssh",
        f"{sshd_support.USER}@127.0.0.1:{sshd.port}",
        "--key-file",
        str(key_file),
        "--key-passphrase-file",
        str(passphrase_file),
        "--sudo-password-file",
        str(password_file),
        "--json",
    )
    assert created.exit_code == 0, created.output
    machine = json.loads(created.stdout)
    assert machine["connectionMode"] == "ssh"
    assert machine["hasPrivateKey"] is True
    assert machine["hasSudoPassword"] is True
    assert machine["sshKeyFingerprint"].startswith("SHA256:")

    tested = ikoma(server, "servers", "test-connection", name, "--json")
    assert tested.exit_code == 0, tested.output
    answer = json.loads(tested.stdout)
    assert answer["reason"] == "ok"
    assert answer["sudo"] == "ok"
    assert answer["hostKeyFingerprint"] == sshd.fingerprint()

    ping = run_order(server, machine["id"], "system.test_ping", {"message": "$(id); `id` | cat /etc/shadow"})
    assert ping["status"] == "SUCCEEDED", ping
    facts = run_order(server, machine["id"], "system.facts", {})
    assert facts["status"] == "SUCCEEDED", facts
    with server.admin() as admin:
        hardware = admin.get(f"/v1/servers/{machine['id']}/hardware").json()
        logs = admin.get(f"/v1/orders/{ping['id']}/logs").json()
        audit = admin.get("/v1/audit", params={"limit": 1000}).text
        shown = admin.get(f"/v1/servers/{machine['id']}").text
        timeline = admin.get(f"/v1/servers/{machine['id']}/timeline").text
    assert hardware["os"]["id"]  # the facts report filled the machine's hardware
    assert hardware["hostname"]
    assert "$(id); `id` | cat /etc/shadow" in json.dumps(logs)  # streamed live like a runner's
    assert "ssh.host_key_pinned" in timeline

    # re-trusting a host key is an admin action on the timeline and in the audit log
    trusted = ikoma(server, "servers", "trust-host-key", name, "--fingerprint", sshd.fingerprint(), "--json")
    assert trusted.exit_code == 0, trusted.output
    with server.admin() as admin:
        entries = admin.get("/v1/audit", params={"limit": 1000}).json()["items"]
        timeline = admin.get(f"/v1/servers/{machine['id']}/timeline").text
    assert any("trust-host-key" in json.dumps(entry) for entry in entries)
    assert "ssh.host_key_trusted" in timeline

    # a wrong password is diagnosed, not a 500
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    bad = unique("ssh-bad")
    made = ikoma(
        server,
        "servers",
        "create",
        bad,
        "--ssh",
        f"{sshd_support.USER}@127.0.0.1:{sshd.port}",
        "--password-file",
        str(wrong),
    )
    assert made.exit_code == 0, made.output
    refused = ikoma(server, "servers", "test-connection", bad, "--json")
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["reason"] == "auth_failed"

    secrets = [sshd_support.PASSWORD, sshd.passphrase, sshd.private_key.splitlines()[1], "not-the-password"]
    everywhere = {
        "answers": (created.stdout + shown + tested.stdout + refused.stdout).encode(),
        "audit": audit.encode(),
        "server log": server.read_log().encode(),
        "database": database_bytes(server),
    }
    for where, text in everywhere.items():
        for secret in secrets:
            assert secret.encode() not in text, f"a credential is in the {where}"


@pytest.mark.parametrize("backend", support.BACKENDS)
def test_the_ssh_executor_runs_as_a_process_of_its_own_when_the_api_leaves_ssh_servers_to_it(
    backend: str, sshd: sshd_support.Sshd, tmp_path: Path
) -> None:
    with support.running_server(backend, tmp_path, extra_env={"IKOMA_SSH_EXECUTOR": "false"}) as api:
        with api.admin() as admin:
            made = admin.post(
                "/v1/servers",
                json={
                    "name": unique("apart"),
                    "hostname": "127.0.0.1",
                    "port": sshd.port,
                    "connectionMode": "ssh",
                    "sshUsername": sshd_support.USER,
                    "sshPassword": sshd_support.PASSWORD,
                },
            )
        assert made.status_code == 201, made.text
        env = {**api.env, "IKOMA_LOG_LEVEL": "info"}
        log_path = tmp_path / "ssh-executor.log"
        executor = processes.spawn(
            [sys.executable, "-m", "ikoma", "ssh-executor"], env=env, log_path=log_path
        )
        try:
            done = run_order(api, made.json()["id"], "system.test_ping", {"message": "apart"})
            assert done["status"] == "SUCCEEDED", processes.read_tail(log_path)
        finally:
            processes.stop(executor)


def test_rotating_the_key_under_a_running_server_keeps_every_machine_connectable(
    server: support.LiveServer, sshd: sshd_support.Sshd
) -> None:
    names = [unique("rotated"), unique("rotated")]
    with server.admin() as admin:
        for name in names:
            made = admin.post(
                "/v1/servers",
                json={
                    "name": name,
                    "hostname": "127.0.0.1",
                    "port": sshd.port,
                    "connectionMode": "ssh",
                    "sshUsername": sshd_support.USER,
                    "sshPassword": sshd_support.PASSWORD,
                },
            )
            assert made.status_code == 201, made.text
    key_file = server.data_dir / "encryption.keys"
    keys_before = key_file.read_text().split()
    rotated = subprocess.run(
        [sys.executable, "-m", "ikoma", "keys", "rotate", "--json"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rotated.returncode == 0, rotated.stderr
    summary = json.loads(rotated.stdout)
    assert summary["undecryptable"] == []
    assert summary["resealed"] >= 2
    keys_after = key_file.read_text().split()
    assert keys_after[1:] == keys_before  # the new key first; the old ones kept
    for name in names:  # the running server meets the new key id and reads the key file again
        tested = ikoma(server, "servers", "test-connection", name, "--json")
        assert tested.exit_code == 0, tested.output
