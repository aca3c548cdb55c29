"""Orders for ssh servers run over a real OpenSSH server, through the runner's lifecycle (issue 14).

sshd is started by the test (tests/sshd.py) on 127.0.0.1 with its own host key and a throwaway account;
every test runs on SQLite and PostgreSQL. The executor is the one `ikoma serve` runs, driven in process.
"""

# ruff: noqa: ASYNC221 - short blocking checks (a file, pgrep, pg_dump) are fine in a test

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from ikoma.domain.lifecycle import TERMINAL, OrderStatus
from ikoma.metrics import Metrics
from ikoma.services import orders, servers
from ikoma.services.artifacts import Artifacts
from ikoma.services.dispatch import Dispatcher
from ikoma.services.ingest import Ingestor
from ikoma.services.vault import Vault
from ikoma.services.wakeups import Wakeups
from ikoma.ssh import credentials, hostkeys
from ikoma.ssh.executor import SshExecutor
from ikoma.storage.database import Database
from ikoma.storage.tables import machine_hardware, machine_state, order_logs, server_credentials
from tests import sshd as sshd_support
from tests.integration.helpers import fetch_order, make_order
from tests.integration.state_helpers import RETENTION

PWNED = Path(tempfile.gettempdir()) / "ikoma-ssh-pwned"
REKEYED = Path(tempfile.gettempdir()) / "ikoma-ssh-rekeyed"
INJECTION = f"a; touch {PWNED} $(touch {PWNED}) `id` \r\n--rf '\""


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd_support.Sshd]:
    with sshd_support.running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def vault() -> Vault:
    return Vault([Fernet.generate_key()])


class Running:
    def __init__(self, db: Database, vault: Vault, data_dir: Path, max_connections: int) -> None:
        wakeups = Wakeups()
        self.dispatcher = Dispatcher(
            db,
            claim_lease=60.0,
            wakeups=wakeups,
            metrics=Metrics(),
            ingestor=Ingestor(Artifacts(data_dir, RETENTION)),
            vault=vault,
        )
        self.executor = SshExecutor(
            db,
            self.dispatcher,
            vault,
            wakeups,
            max_connections=max_connections,
            connect_timeout=20.0,
            claim_lease=60.0,
            log_limit_bytes=5_000_000,
            kill_grace=2.0,
        )
        self.wakeups = wakeups


@pytest.fixture
async def running(database: Database, vault: Vault, tmp_path: Path) -> AsyncIterator[Running]:
    run = Running(database, vault, tmp_path / "data", max_connections=4)
    task = asyncio.create_task(run.executor.run_forever())
    yield run
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await run.dispatcher.close()


def ssh_fields(server: sshd_support.Sshd, name: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": name,
        "hostname": "127.0.0.1",
        "port": server.port,
        "labels": {},
        "os_family": "unknown",
        "connection_mode": "ssh",
        "apt_proxy_mode": "direct",
        "ssh_username": sshd_support.USER,
        "ssh_password": sshd_support.PASSWORD,
        "sudo_password": sshd_support.PASSWORD,
    }
    fields.update(overrides)
    return fields


async def order_and_wait(
    db: Database, run: Running, server_id: str, playbook: str, limit: float = 120.0, **overrides: Any
) -> dict[str, Any]:
    order = await make_order(db, server_id, playbook, wakeups=run.wakeups, **overrides)
    return await wait_ended(db, str(order["id"]), limit)


async def wait_ended(db: Database, order_id: str, limit: float = 120.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + limit
    while True:
        row = await fetch_order(db, order_id)
        if OrderStatus(row["status"]) in TERMINAL:
            return row
        assert asyncio.get_running_loop().time() < deadline, f"order still {row['status']}"
        await asyncio.sleep(0.2)


async def test_ping_facts_and_apt_over_ssh_fill_the_machine_state_and_hostile_params_stay_inert(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    server = await servers.create_server(database, ssh_fields(sshd, "ssh-1"), vault=vault)
    assert server["runner_id"]
    assert server["has_password"]
    assert server["has_sudo_password"]
    PWNED.unlink(missing_ok=True)

    ping = await order_and_wait(
        database, running, server["id"], "system.test_ping", params={"message": INJECTION}
    )
    assert ping["status"] == "SUCCEEDED", ping["report"]
    assert ping["report"]["steps"][0]["data"]["message"] == INJECTION, ping["report"]  # one inert argv word
    assert not PWNED.exists()

    facts = await order_and_wait(database, running, server["id"], "system.facts")
    assert facts["status"] == "SUCCEEDED", facts["report"]
    analyze = await order_and_wait(database, running, server["id"], "apt.analyze")
    assert analyze["status"] == "SUCCEEDED", analyze["report"]
    async with database.read() as tx:
        hardware = (
            (await tx.execute(select(machine_hardware).where(machine_hardware.c.server_id == server["id"])))
            .mappings()
            .one()
        )
        state = (
            (await tx.execute(select(machine_state).where(machine_state.c.server_id == server["id"])))
            .mappings()
            .one()
        )
    assert hardware["cpu_cores"]
    assert hardware["cpu_cores"] > 0
    assert state["apt_analyzed_at"] is not None
    pinned = await servers.get_server(database, server["id"])
    assert pinned["host_key_fingerprint"] == sshd.fingerprint()  # trusted on first use


async def test_key_auth_with_a_passphrase_runs_orders(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    fields = ssh_fields(
        sshd,
        "ssh-key",
        ssh_password=None,
        ssh_private_key=sshd.private_key,
        ssh_key_passphrase=sshd.passphrase,
    )
    server = await servers.create_server(database, fields, vault=vault)
    assert server["has_private_key"]
    assert not server["has_password"]
    assert server["ssh_key_fingerprint"].startswith("SHA256:")
    done = await order_and_wait(database, running, server["id"], "system.test_ping")
    assert done["status"] == "SUCCEEDED", done["report"]


async def test_wrong_password_is_auth_failed_and_wrong_sudo_password_is_sudo_failed(
    database: Database, vault: Vault, sshd: sshd_support.Sshd
) -> None:
    bad = await servers.create_server(
        database, ssh_fields(sshd, "bad", ssh_password="wrong-pass"), vault=vault
    )
    answer = await hostkeys.test_connection(database, vault, bad["id"], connect_timeout=20, actor="admin")
    assert answer["reason"] == "auth_failed"
    bad_sudo = await servers.create_server(
        database, ssh_fields(sshd, "bad-sudo", sudo_password="nope"), vault=vault
    )
    answer = await hostkeys.test_connection(
        database, vault, bad_sudo["id"], connect_timeout=20, actor="admin"
    )
    assert answer["reason"] == "sudo_failed"
    good = await servers.create_server(database, ssh_fields(sshd, "good"), vault=vault)
    answer = await hostkeys.test_connection(database, vault, good["id"], connect_timeout=20, actor="admin")
    assert answer["ok"]
    assert answer["reason"] == "ok"
    assert answer["sudo"] == "ok"
    refused = await servers.create_server(
        database, ssh_fields(sshd, "closed", port=sshd_support.free_port()), vault=vault
    )
    answer = await hostkeys.test_connection(database, vault, refused["id"], connect_timeout=20, actor="admin")
    assert answer["reason"] == "connection_refused"
    nowhere = await servers.create_server(
        database, ssh_fields(sshd, "nowhere", hostname="no-such-host.invalid"), vault=vault
    )
    answer = await hostkeys.test_connection(database, vault, nowhere["id"], connect_timeout=20, actor="admin")
    assert answer["reason"] == "dns_failed"


async def test_a_replaced_host_key_refuses_every_order_until_trusted_again(
    database: Database, vault: Vault, running: Running, tmp_path: Path
) -> None:
    with sshd_support.running_sshd(tmp_path / "own-sshd") as own:
        server = await servers.create_server(database, ssh_fields(own, "rekeyed"), vault=vault)
        first = await hostkeys.test_connection(
            database, vault, server["id"], connect_timeout=20, actor="admin"
        )
        assert first["ok"], first
        own.replace_host_key()
        REKEYED.unlink(missing_ok=True)
        answer = await hostkeys.test_connection(
            database, vault, server["id"], connect_timeout=20, actor="admin"
        )
        assert answer["reason"] == "host_key_changed"
        refused = await order_and_wait(
            database,
            running,
            server["id"],
            "shell.exec",
            params={"argv": ["touch", str(REKEYED)]},
            max_attempts=1,
        )
        assert refused["status"] == "FAILED"
        assert refused["report"]["errors"][0]["code"] == "host_key_changed"
        assert refused["report"]["steps"] == []
        assert not REKEYED.exists()
        await hostkeys.trust(database, server["id"], own.fingerprint(), actor="admin")
        again = await hostkeys.test_connection(
            database, vault, server["id"], connect_timeout=20, actor="admin"
        )
        assert again["ok"], again


async def test_cancel_kills_the_remote_process(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    server = await servers.create_server(database, ssh_fields(sshd, "cancel"), vault=vault)
    marker = f"ikoma-cancel-{server['id'][:8]}"
    order = await make_order(
        database,
        server["id"],
        "shell.exec",
        wakeups=running.wakeups,
        params={"argv": ["sh", "-c", f"sleep 300; true {marker}"]},
    )
    deadline = asyncio.get_running_loop().time() + 60
    while subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0:
        assert asyncio.get_running_loop().time() < deadline, "the remote process never started"
        await asyncio.sleep(0.2)
    await orders.cancel_order(database, str(order["id"]), reason="test")
    ended = await wait_ended(database, str(order["id"]))
    assert ended["status"] == "CANCELLED"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0


async def test_fifty_orders_on_twenty_ssh_machines_respect_the_connection_bound(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    machines = [
        await servers.create_server(database, ssh_fields(sshd, f"fleet-{i}"), vault=vault) for i in range(20)
    ]
    created = [
        await make_order(database, machines[i % 20]["id"], "system.test_ping", wakeups=running.wakeups)
        for i in range(50)
    ]
    ended = [await wait_ended(database, str(o["id"]), limit=300) for o in created]
    assert [o["status"] for o in ended] == ["SUCCEEDED"] * 50
    assert 1 <= running.executor.peak <= 4


async def test_credentials_are_sealed_bound_to_their_row_and_survive_rotation(
    database: Database, database_url: str, sshd: sshd_support.Sshd
) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old = Vault([old_key])
    fields = ssh_fields(sshd, "rotated", ssh_private_key=sshd.private_key, ssh_key_passphrase=sshd.passphrase)
    server = await servers.create_server(database, fields, vault=old)
    other = await servers.create_server(database, ssh_fields(sshd, "other"), vault=old)

    # no plaintext in the database (the SQLite file; PostgreSQL: pg_dump)
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # db, -wal, -shm
    else:
        name = database_url.rsplit("/", 1)[1]
        raw = subprocess.run(
            ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, check=True
        ).stdout
    key_body = sshd.private_key.splitlines()[1]
    for secret in (sshd_support.PASSWORD, key_body, sshd.passphrase):
        assert secret.encode() not in raw

    # rotation: the new key first, the old still opens; re-sealed, only the new key is needed
    rotated = Vault([new_key, old_key])
    summary = await credentials.reseal_all(database, rotated)
    assert summary["resealed"] == 2
    assert summary["undecryptable"] == []
    only_new = Vault([new_key])
    for server_id in (server["id"], other["id"]):
        answer = await hostkeys.test_connection(
            database, only_new, server_id, connect_timeout=20, actor="admin"
        )
        assert answer["ok"], answer

    # a value moved to another row does not open; an edited one neither: reported, never decrypted
    async with database.write() as tx:
        sealed = (
            await tx.execute(
                select(server_credentials.c.password).where(server_credentials.c.server_id == other["id"])
            )
        ).scalar_one()
        await tx.execute(
            update(server_credentials)
            .where(server_credentials.c.server_id == server["id"])
            .values(password=sealed)
        )
        tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
        await tx.execute(
            update(server_credentials)
            .where(server_credentials.c.server_id == other["id"])
            .values(password=tampered)
        )
    for server_id in (server["id"], other["id"]):
        answer = await hostkeys.test_connection(
            database, only_new, server_id, connect_timeout=20, actor="admin"
        )
        assert answer["reason"] == "credentials_undecryptable"


async def test_an_order_past_its_timeout_ends_timeout_and_its_remote_process_is_killed(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    server = await servers.create_server(database, ssh_fields(sshd, "timeout"), vault=vault)
    marker = f"ikoma-timeout-{server['id'][:8]}"
    ended = await order_and_wait(
        database,
        running,
        server["id"],
        "shell.exec",
        params={"argv": ["sh", "-c", f"sleep 300; true {marker}"]},
        timeout_seconds=3,
        max_attempts=1,
    )
    assert ended["status"] == "TIMEOUT"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0


async def test_apt_runs_with_the_machines_proxy_in_proxy_mode(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    proxy = "http://127.0.0.1:3142"
    fields = ssh_fields(sshd, "proxied", apt_proxy_mode="proxy", apt_proxy_url=proxy)
    server = await servers.create_server(database, fields, vault=vault)
    done = await order_and_wait(database, running, server["id"], "apt.analyze")
    assert done["status"] == "SUCCEEDED", done["report"]
    async with database.read() as tx:
        text = "".join(
            (await tx.execute(select(order_logs.c.data).where(order_logs.c.order_id == done["id"]))).scalars()
        )
    assert f"Acquire::http::Proxy={proxy}" in text


async def test_the_runners_docker_playbook_runs_over_ssh_through_the_context_seam(
    database: Database, vault: Vault, running: Running, sshd: sshd_support.Sshd
) -> None:
    server = await servers.create_server(database, ssh_fields(sshd, "docker"), vault=vault)
    done = await order_and_wait(database, running, server["id"], "docker.status")
    assert done["status"] == "SUCCEEDED", done["report"]
    data = done["report"]["steps"][-1]["data"]
    # docker is looked for on the remote machine: found and asked (`applicable`), or "docker not found"
    assert "applicable" in data
    async with database.read() as tx:
        state = (
            (await tx.execute(select(machine_state).where(machine_state.c.server_id == server["id"])))
            .mappings()
            .one()
        )
    assert state["docker_status"] is not None
