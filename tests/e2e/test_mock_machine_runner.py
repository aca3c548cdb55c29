"""A booted Mock machine runs a real `ikoma runner` that enrols with its user data's one-time token,
and that process is gone once the machine is terminated or the server stops (real `ikoma serve`,
SQLite and PostgreSQL).

The test creates machines in the server's own database (the Mock cloud is stateful there) and the
server's leader loop boots them, as it would a machine an instance deployment created.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ikoma.providers import base
from ikoma.providers.mock.cloud import MockCloud
from ikoma.providers.mock.scenarios import parse_rule
from ikoma.providers.mock.store import DatabaseStore
from ikoma.providers.mock.user_data import render_user_data
from ikoma.providers.registry import MOCK_MACHINES_DIR
from ikoma.storage.database import Database
from tests import processes, support

pytestmark = pytest.mark.e2e
ZONE = "mock-par-1"


@pytest.fixture
def server(server_database_url: str, tmp_path: Path) -> Iterator[support.LiveServer]:
    live = support.LiveServer(
        database_url=server_database_url,
        data_dir=tmp_path / "data",
        extra_env={"IKOMA_MOCK_BOOT_SECONDS": "0", "IKOMA_MOCK_TICK_INTERVAL": "0.2"},
    )
    with live:
        yield live


def pids_of(marker: Path) -> list[int]:
    """Live processes whose command line names `marker` (a machine's data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if str(marker).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue  # ended while we looked
    return found


def wait_for(check, what: str, server: support.LiveServer, machine_dir: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + processes.START_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            runner_log = processes.read_tail(machine_dir / "runner.log")
            pytest.fail(
                f"{what}: not within {processes.START_TIMEOUT:g}s\nserver log:\n{server.log_tail()}\n"
                f"runner log:\n{runner_log}"
            )
        time.sleep(0.2)


def enrolled(admin: httpx.Client, name: str) -> bool:
    runners = admin.get("/v1/runners").json()
    return any(r["name"] == name and r["lastHeartbeatAt"] is not None for r in runners)


def boot_machine(
    server: support.LiveServer, admin: httpx.Client, name: str, *, rules: tuple[str, ...] = ()
) -> Path:
    """A Mock machine whose user data enrols a runner called `name`; its data dir under the server's."""
    issued = admin.post("/v1/runner-bootstrap-tokens", json={"name": name})
    assert issued.status_code == 201, issued.text

    async def create() -> str:
        db = Database(server.database_url)
        try:
            cloud = MockCloud(DatabaseStore(db))
            for rule in rules:
                await cloud.add_rule(parse_rule(rule, calls=1))
            machine = await cloud.create(
                zone=ZONE,
                instance_type="MOCK-CPU-S",
                name=name,
                image="ubuntu_jammy",
                tags={base.OWNER_TAG: "e2e", base.INSTANCE_TAG: name},
                user_data=render_user_data(server.url, issued.json()["token"], name),
            )
            return machine.id
        finally:
            await db.dispose()

    machine_id = asyncio.run(create())
    return (server.data_dir / MOCK_MACHINES_DIR / machine_id).resolve()


def act(server: support.LiveServer, machine_dir: Path, action: str) -> None:
    async def call() -> None:
        db = Database(server.database_url)
        try:
            await MockCloud(DatabaseStore(db)).act(ZONE, machine_dir.name, action)
        finally:
            await db.dispose()

    asyncio.run(call())


def user_data_kept(server: support.LiveServer, machine_dir: Path) -> bool:
    async def read() -> bool:
        db = Database(server.database_url)
        try:
            machines = await MockCloud(DatabaseStore(db)).tick()
            return any(m.id == machine_dir.name and m.user_data for m in machines)
        finally:
            await db.dispose()

    return asyncio.run(read())


def machine_state(server: support.LiveServer, machine_dir: Path) -> str | None:
    async def read() -> str | None:
        db = Database(server.database_url)
        try:
            machine = await MockCloud(DatabaseStore(db)).get(ZONE, machine_dir.name)
            return None if machine is None else str(machine.state)
        finally:
            await db.dispose()

    return asyncio.run(read())


def runners_named(admin: httpx.Client, name: str) -> list[str]:
    return [r["id"] for r in admin.get("/v1/runners").json() if r["name"] == name]


def test_a_booted_machine_enrols_a_real_runner_that_goes_with_the_machine(server: support.LiveServer) -> None:
    with server.admin() as admin:
        first = boot_machine(server, admin, "mock-first")
        wait_for(lambda: enrolled(admin, "mock-first"), "the runner enrolled and heartbeats", server, first)
        assert pids_of(first), "the runner process runs from the machine's own data dir"
        assert (first / "runner.json").stat().st_mode & 0o777 == 0o600
        # the one-time token is spent: the simulated cloud forgets the user data that carried it
        wait_for(
            lambda: not user_data_kept(server, first), "user data cleared after enrolment", server, first
        )

        # poweroff stops the runner; poweron starts it again with its saved credentials (no new runner)
        act(server, first, "poweroff")
        wait_for(lambda: not pids_of(first), "runner stopped with its machine", server, first)
        # the runner goes as the machine starts stopping; poweron is allowed once it is stopped
        wait_for(lambda: machine_state(server, first) == "stopped", "machine stopped", server, first)
        act(server, first, "poweron")
        wait_for(lambda: bool(pids_of(first)), "runner started again with its machine", server, first)
        assert len(runners_named(admin, "mock-first")) == 1

        act(server, first, "terminate")
        wait_for(
            lambda: not pids_of(first) and not first.exists(), "runner gone after terminate", server, first
        )

        second = boot_machine(server, admin, "mock-second")
        wait_for(lambda: enrolled(admin, "mock-second"), "the second runner enrolled", server, second)
    server.stop()
    wait_for(lambda: not pids_of(second), "runner gone with the server", server, second)


def test_worker_never_registers_boots_without_a_runner(server: support.LiveServer) -> None:
    with server.admin() as admin:
        silent = boot_machine(server, admin, "mock-silent", rules=("worker_never_registers",))
        loud = boot_machine(server, admin, "mock-loud")
        # the machine booted after it in the same loop has its runner: the silent one was passed over
        wait_for(lambda: enrolled(admin, "mock-loud"), "the other machine's runner enrolled", server, loud)
        assert not enrolled(admin, "mock-silent")
        assert not pids_of(silent)
        assert not silent.exists()  # a boot makes the machine's dir first, long before any enrolment
