"""Test support shared by every layer: PostgreSQL databases and a real `ikoma serve` process.

Whatever is created here is dropped or stopped on every path, failure included: databases are tracked
per pytest process (`drop_created_databases`), processes by tests/processes.py, and tests/conftest.py
runs both as a safety net when the session ends.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests import processes

PG_ADMIN_URL = os.environ.get("IKOMA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_url(database: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


async def _pg_exec(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_available() -> bool:
    try:
        asyncio.run(_pg_exec("SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def require_pg() -> None:
    """Skip where PostgreSQL is absent, except on CI, where its absence is a failure."""
    if pg_available():
        return
    if ON_CI:
        pytest.fail(f"PostgreSQL is required on CI and is not answering at {PG_ADMIN_URL}")
    pytest.skip(f"waits for PostgreSQL at {PG_ADMIN_URL} (set IKOMA_TEST_PG_URL)")


# the databases this pytest process (this xdist worker) created and has not dropped yet
_created_databases: set[str] = set()
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def create_pg_database(prefix: str = "ikoma_test", template: str | None = None) -> str:
    """A new database named `<prefix>_<worker>_<random>`, tracked until `drop_pg_database`."""
    name = f"{prefix}_{WORKER}_{secrets.token_hex(4)}"
    suffix = f" TEMPLATE {template}" if template else ""
    _created_databases.add(name)  # before CREATE: an interrupted CREATE may still have made it
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"{suffix}'))
    return name


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    _created_databases.discard(name)


def drop_created_databases() -> list[str]:
    """Drop every database this pytest process created and did not drop (never another worker's)."""
    left = sorted(_created_databases)
    for name in left:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            drop_pg_database(name)
    return left


def clean_up() -> tuple[list[int], list[str]]:
    """The safety net: kill the process groups, then drop the databases, that this pytest process
    started/created and did not clean up; what it found. Runs at session end and at exit."""
    return processes.stop_all(), drop_created_databases()


atexit.register(clean_up)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any IKOMA_*/DATABASE_URL setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env.update(extra)
    return env


@dataclass
class LiveServer:
    """A real `python -m ikoma serve` process on a free port.

    `start` waits for /readyz up to processes.START_TIMEOUT (IKOMA_TEST_START_TIMEOUT, 180 s); a start
    that fails stops the process before raising `processes.StartError` with the tail of its log. Use it
    as a context manager (`with LiveServer(...) as server:`) or call `stop` in a `finally`.
    """

    database_url: str
    data_dir: Path
    admin_key: str = field(default_factory=lambda: "ika_test_" + secrets.token_urlsafe(24))
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return clean_env(
            DATABASE_URL=self.database_url,
            IKOMA_ADMIN_KEY=self.admin_key,
            IKOMA_DATA_DIR=str(self.data_dir),
            PORT=str(self.port),
            HOST="127.0.0.1",
            IKOMA_LOG_LEVEL="warning",
            **self.extra_env,
        )

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "ikoma", "serve"]

    def start(self, timeout: float | None = None) -> None:
        """Start the server and return once /readyz answers (`timeout` defaults to START_TIMEOUT)."""
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = processes.spawn(self.argv, env=self.env, log_path=self.log_path)
        processes.wait_ready(
            self.process, f"{self.url}/readyz", log_path=self.log_path, what="ikoma serve", timeout=timeout
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig`; SIGKILL the process group if it has not exited within 30 s."""
        if self.process is not None:
            processes.stop(self.process, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = processes.LOG_TAIL_LINES) -> str:
        return processes.tail(self.read_log(), lines)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-ikoma-admin-key": self.admin_key}, timeout=30)

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def server_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty database URL of `backend` ("sqlite" in `directory`, or a new PostgreSQL database),
    dropped afterwards whatever happened."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'server.db'}"
        return
    require_pg()
    name = create_pg_database("ikoma_e2e")
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@contextlib.contextmanager
def running_server(backend: str, directory: Path, **options: Any) -> Iterator[LiveServer]:
    """A started LiveServer on a fresh database of `backend`; stopped and its database dropped on exit,
    failure included. `options` go to LiveServer (extra_env, admin_key…)."""
    with server_database(backend, directory) as url:
        server = LiveServer(database_url=url, data_dir=directory / "data", **options)
        try:
            server.start()
            yield server
        finally:
            server.stop()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def live_server_per_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, **options: Any
) -> Iterator[LiveServer]:
    """The body of a module-scoped server fixture, one server per module and backend.

    For tests that do not need an empty database nor a restart: they must create what they use with
    unique names and must not assert on global counts. The backend is `request.param` when the fixture
    is parametrized (`params=support.BACKENDS`), else SQLite. Example, in a test module:

        @pytest.fixture(scope="module", params=support.BACKENDS)
        def audited_server(request, tmp_path_factory):
            yield from support.live_server_per_module(request, tmp_path_factory, extra_env={...})

    tests/conftest.py provides the plain one as the `shared_server` fixture.
    """
    backend = getattr(request, "param", "sqlite")
    directory = tmp_path_factory.mktemp(f"shared-{request.node.name}-{backend}")
    with running_server(backend, directory, **options) as server:
        yield server


def start_up(
    tmp_path: Path, port: int, admin_key: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`ikoma up` (API + its local runner) as a real process, returned once /readyz answers.

    Output goes to `tmp_path/up.log`. A start that fails stops the process group (the local runner
    with it) and raises processes.StartError with the log's tail. Stop it with `stop_up`.
    """
    env = clean_env(IKOMA_ADMIN_KEY=admin_key, IKOMA_LOG_LEVEL="warning", **(extra_env or {}))
    log_path = tmp_path / "up.log"
    argv = [sys.executable, "-m", "ikoma", "up", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    process = processes.spawn(argv, env=env, log_path=log_path)
    processes.wait_ready(process, f"http://127.0.0.1:{port}/readyz", log_path=log_path, what="ikoma up")
    return process


def stop_up(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM `ikoma up` (it stops its local runner); SIGKILL its whole group past 30 s."""
    processes.stop(process, signal.SIGTERM, grace=30)
