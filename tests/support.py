"""Test support shared by every layer: PostgreSQL databases and a real `ikoma serve` process."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

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


def create_pg_database(prefix: str = "ikoma_test", template: str | None = None) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    suffix = f" TEMPLATE {template}" if template else ""
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"{suffix}'))
    return name


def drop_pg_database(name: str) -> None:
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A real `python -m ikoma serve` process on a free port."""

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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "IKOMA_ADMIN_KEY": self.admin_key,
                "IKOMA_DATA_DIR": str(self.data_dir),
                "PORT": str(self.port),
                "HOST": "127.0.0.1",
                "IKOMA_LOG_LEVEL": "warning",
                **self.extra_env,
            }
        )
        return env

    def start(self, timeout: float = 30.0) -> None:
        self.log_path = self.data_dir / f"server-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ikoma", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.read_log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.read_log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-ikoma-admin-key": self.admin_key}, timeout=30)


def start_up(
    tmp_path: Path, port: int, admin_key: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`ikoma up` (API + its local runner) as a real process, returned once /readyz answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env.update({"IKOMA_ADMIN_KEY": admin_key, "IKOMA_LOG_LEVEL": "warning", **(extra_env or {})})
    with (tmp_path / "up.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ikoma", "up", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError((tmp_path / "up.log").read_text())
