"""Fixtures for the operations tools: a temp apps root, the real PostgreSQL, and no leaked process.

Every supervisor started under a test's apps root is stopped at teardown (then its processes are
swept by pid and start time), and every app database a test created is dropped.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from ikoma.runner.agent import build_report
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps import names
from ikoma.runner.apps.process import stop_supervised
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.logs import LogStream, Masker
from ikoma.runner.playbooks import REGISTRY
from tests import support

TINYAPP = Path(__file__).resolve().parents[2] / "fixtures" / "apps" / "tinyapp"
# trust authentication ignores it, which lets the tests prove it never shows up anywhere
ADMIN_PASSWORD = "ikoma-admin-pw-" + secrets.token_hex(6)


def admin_url() -> str:
    scheme, _, rest = support.PG_ADMIN_URL.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] or "postgres"
    return f"{scheme}://{user}:{ADMIN_PASSWORD}@{hostpart}"


@dataclass
class Call:
    """One tool run: its result data, the contract-v2 report and the log text it streamed."""

    key: str
    data: dict[str, Any]
    report: dict[str, Any]
    logs: str

    @property
    def error_code(self) -> str | None:
        errors = self.report["errors"]
        return str(errors[0]["code"]) if errors else None

    def text(self) -> str:
        return json.dumps(self.report) + self.logs


@dataclass
class Apps:
    root: Path
    backups: Path
    calls: list[Call] = field(default_factory=list)

    def path(self, app: str) -> Path:
        return self.root / app

    async def call(self, key: str, **params: Any) -> Call:
        chunks: list[dict[str, Any]] = []

        async def collect(batch: list[dict[str, Any]]) -> None:
            chunks.extend(batch)

        masker = Masker.for_params(params)
        logs = LogStream(collect, masker)
        ctx = ExecutionContext(order_id=f"order-{len(self.calls)}", params=params, logs=logs, masker=masker)
        result = await REGISTRY[key](ctx, params)
        await logs.close()
        report = build_report(result, ctx.elapsed_ms(), masker)
        last = report["steps"][-1]
        assert last["name"] == "result", report
        call = Call(key, last.get("data") or {}, report, "".join(c["data"] for c in chunks))
        self.calls.append(call)
        return call

    async def ok(self, key: str, **params: Any) -> dict[str, Any]:
        call = await self.call(key, **params)
        assert call.report["errors"] == [], (key, call.report)
        assert all(s["status"] in ("SUCCEEDED", "SKIPPED") for s in call.report["steps"]), call.report
        return call.data

    async def refused(self, key: str, code: str, **params: Any) -> dict[str, Any]:
        call = await self.call(key, **params)
        assert call.error_code == code, (key, call.report)
        assert call.data["error"]["code"] == code
        assert call.report["steps"][-1]["status"] == "FAILED"
        return call.data

    def install_tinyapp(self, app: str, *, version: str = "1.0.0") -> int:
        """Copy tinyapp's code into an app made by apps.init, on a free ephemeral port.

        Not the port init allocated (8100 up): two test runs on one machine would pick the same.
        """
        path = self.path(app)
        shutil.copytree(TINYAPP / "src", path / "src", dirs_exist_ok=True)
        shutil.copytree(TINYAPP / "migrations", path / "migrations", dirs_exist_ok=True)
        (path / "src" / "VERSION").write_text(version + "\n")
        port = support.free_port()
        data = yaml.safe_load((TINYAPP / manifests.MANIFEST_FILE).read_text())
        data["name"] = app
        data["processes"][0]["port"] = port
        (path / manifests.MANIFEST_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
        return port


def unique_app(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)


def answers(port: int, path: str = "/health") -> int | None:
    """The HTTP status on that port, or None when nothing answers (yet, or any more)."""
    try:
        return get(port, path).status_code
    except httpx.HTTPError:
        return None


def wait_until(predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _cleanup(root: Path) -> None:
    if root.is_dir():
        for app_dir in root.iterdir():
            if (app_dir / ".ikoma").is_dir():
                stop_supervised(app_dir.resolve(), grace=10)


async def _drop_databases(prefix_names: list[str]) -> None:
    conn = await asyncpg.connect(support.PG_ADMIN_URL, timeout=5)
    try:
        for name in prefix_names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Apps]:
    """An apps root and backups dir of this test; no database configured."""
    root = tmp_path / "apps"
    backups = tmp_path / "backups"
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(root))
    monkeypatch.setenv("IKOMA_BACKUPS_DIR", str(backups))
    monkeypatch.delenv("IKOMA_APPS_DATABASE_URL", raising=False)
    monkeypatch.delenv("IKOMA_RELEASES_KEEP", raising=False)
    env = Apps(root, backups)
    try:
        yield env
    finally:
        _cleanup(root)


@pytest.fixture
def apps_db(apps: Apps, monkeypatch: pytest.MonkeyPatch) -> Iterator[Apps]:
    """The same, with the real PostgreSQL as the apps' database server; app databases dropped after."""
    support.require_pg()
    monkeypatch.setenv("IKOMA_APPS_DATABASE_URL", admin_url())
    try:
        yield apps
    finally:
        _cleanup(apps.root)
        created = {names.database_name(p.name) for p in apps.root.iterdir()} if apps.root.is_dir() else set()
        created |= {c.data["database"] for c in apps.calls if isinstance(c.data.get("database"), str)}
        asyncio.run(_drop_databases(sorted(created)))
