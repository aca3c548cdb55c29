"""The seed 001 runbook, top to bottom, against `ikoma up`: real HTTP, a real local runner, a real app.

Each call is the seed's curl command: `POST /execute/<tool>` with `X-Api-Key` and `X-Role`, the params
as the JSON body (mostly without a Content-Type, as `curl -d` sends them), no server named (the local
server `ikoma up` made). The app is tests/fixtures/apps/tinyapp on the `process` runtime; its database
lives on the real PostgreSQL. A few steps go through `ikoma tools run` and `ikoma audit` instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from tests import processes, support

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

TINYAPP = Path(__file__).resolve().parents[1] / "fixtures" / "apps" / "tinyapp"
MANIFEST = "ikoma-app.yaml"
ADMIN_KEY = "ika_runbook_" + secrets.token_urlsafe(18)
# the API waits up to 300 s for a tool (the runbook's default): the HTTP client must outlast it
HTTP_TIMEOUT = 330.0


@dataclass
class Ikoma:
    """`ikoma up` on a free port, with the operator's API client the runbook's $API_KEY stands for."""

    url: str
    data_dir: Path
    apps_root: Path
    backups: Path
    process: subprocess.Popen[bytes]
    api_key: str = ""

    def execute(
        self, tool: str, role: str, body: dict[str, Any], *, json_header: bool = False
    ) -> httpx.Response:
        """`curl -X POST $URL/execute/<tool> -H "X-Api-Key: $API_KEY" -H "X-Role: <role>" -d '<body>'`."""
        headers = {"X-Api-Key": self.api_key, "X-Role": role}
        if json_header:
            headers["Content-Type"] = "application/json"
        return httpx.post(
            f"{self.url}/execute/{tool}",
            content=json.dumps(body).encode(),
            headers=headers,
            timeout=HTTP_TIMEOUT,
            trust_env=False,
        )

    def ok(self, tool: str, role: str, body: dict[str, Any], *, json_header: bool = False) -> dict[str, Any]:
        """A call that must succeed: 200, the tool's result, and an order that SUCCEEDED."""
        answer = self.execute(tool, role, body, json_header=json_header)
        assert answer.status_code == 200, (tool, answer.status_code, answer.text, self.log_tail())
        with self.admin() as admin:
            order = admin.get(f"/v1/orders/{answer.headers['X-Order-Id']}").json()
        assert order["status"] == "SUCCEEDED", order
        assert order["playbookKey"] == tool
        result: dict[str, Any] = answer.json()
        return result

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Api-Key": ADMIN_KEY}, timeout=30, trust_env=False)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return processes.run(
            [sys.executable, "-m", "ikoma", *args],
            text=True,
            timeout=HTTP_TIMEOUT,
            env={**clean_env(), "IKOMA_API_URL": self.url, "IKOMA_API_KEY": self.api_key, **(env or {})},
        )

    def log_tail(self) -> str:
        path = self.data_dir.parent / "up.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}


def start_up(tmp_path: Path) -> Ikoma:
    port = support.free_port()
    apps_root = tmp_path / "apps"
    backups = tmp_path / "backups"
    apps_root.mkdir()
    env = clean_env()
    env.update(
        {
            "IKOMA_ADMIN_KEY": ADMIN_KEY,
            "IKOMA_LOG_LEVEL": "warning",
            "IKOMA_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            # inherited by the local runner, which runs the tools
            "IKOMA_APPS_ROOT": str(apps_root),
            "IKOMA_APPS_DATABASE_URL": support.PG_ADMIN_URL,
            "IKOMA_BACKUPS_DIR": str(backups),
        }
    )
    data_dir = tmp_path / "data"
    argv = [sys.executable, "-m", "ikoma", "up", "--data-dir", str(data_dir), "--port", str(port)]
    process = processes.spawn(argv, env=env, log_path=tmp_path / "up.log")
    # on failure the process group (the local runner with it) is stopped, and the log's tail shown
    processes.wait_ready(process, f"http://127.0.0.1:{port}/readyz", log_path=tmp_path / "up.log")
    return Ikoma(f"http://127.0.0.1:{port}", data_dir, apps_root, backups, process)


def stop_up(ikoma: Ikoma) -> None:
    support.stop_up(ikoma.process)


def stop_apps(apps_root: Path) -> None:
    """Supervised apps outlive the runner on purpose; a test must not leave them behind."""
    from ikoma.runner.apps.process import stop_supervised

    if apps_root.is_dir():
        for app_dir in apps_root.iterdir():
            if (app_dir / ".ikoma").is_dir():
                stop_supervised(app_dir.resolve(), grace=10)


async def _drop(database: str) -> None:
    conn = await asyncpg.connect(support.PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'DROP ROLE IF EXISTS "{database}"')
    finally:
        await conn.close()


async def _greetings(database: str) -> list[str]:
    conn = await asyncpg.connect(support.pg_url(database), timeout=5)
    try:
        return [r["text"] for r in await conn.fetch("SELECT text FROM greetings ORDER BY id")]
    finally:
        await conn.close()


@pytest.fixture
def ikoma(tmp_path: Path) -> Iterator[Ikoma]:
    support.require_pg()
    started = start_up(tmp_path)
    try:
        yield started
    finally:
        stop_apps(started.apps_root)
        stop_up(started)
        stop_apps(started.apps_root)  # a deploy the runner finished while stopping


@pytest.fixture
def app(ikoma: Ikoma) -> Iterator[str]:
    """A unique app name; its database and role are dropped afterwards whatever happened."""
    name = f"rb-{secrets.token_hex(4)}"
    yield name
    asyncio.run(_drop(name.replace("-", "_")))


def copy_source(app_dir: Path, *, version: str) -> int:
    """`cp -r /path/to/source/* /srv/apps/myapp/src/` — plus the app's manifest, keeping init's port."""
    shutil.copytree(TINYAPP / "src", app_dir / "src", dirs_exist_ok=True)
    shutil.copytree(TINYAPP / "migrations", app_dir / "migrations", dirs_exist_ok=True)
    (app_dir / "src" / "VERSION").write_text(version + "\n")
    port = int(yaml.safe_load((app_dir / MANIFEST).read_text())["processes"][0]["port"])
    manifest = yaml.safe_load((TINYAPP / MANIFEST).read_text())
    manifest["name"] = app_dir.name
    manifest["processes"][0]["port"] = port
    (app_dir / MANIFEST).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return port


def app_get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5, trust_env=False)


def test_the_seed_runbook_runs_top_to_bottom_over_http(ikoma: Ikoma, app: str) -> None:
    with ikoma.admin() as admin:
        created = admin.post("/v1/api-clients", json={"name": "runbook", "role": "operator"})
        assert created.status_code == 201, created.text
        ikoma.api_key = created.json()["token"]
    app_dir = ikoma.apps_root / app
    database = app.replace("-", "_")

    # Platform health
    platform = ikoma.ok("platform.check", "observer", {})
    assert set(platform["checks"]) >= {"docker", "postgres", "appsRoot", "disk"}
    assert platform["checks"]["postgres"] is True
    assert platform["checks"]["appsRoot"] is True

    # Phase 1: initialisation
    init = ikoma.ok("apps.init", "builder", {"appName": app}, json_header=True)
    assert init["appName"] == app
    assert Path(init["path"]) == app_dir
    for directory in ("config", "migrations", "seeds", "src"):
        assert (app_dir / directory).is_dir(), directory
    assert (app_dir / "docker-compose.yml").is_file()

    # Phase 2: configuration
    template = ikoma.ok("apps.env.example", "observer", {"appName": app})["result"]
    assert isinstance(template, str)
    assert "APP_ENV=" in template
    assert "POSTGRES_DB=" in template
    (app_dir / ".env").write_text("APP_ENV=production\n")
    port = copy_source(app_dir, version="1.0.0")

    # Phase 3: database
    db = ikoma.ok("db.create", "builder", {"appName": app})
    assert db["database"] == database
    assert "POSTGRES_PASSWORD=" in (app_dir / ".env").read_text()
    password = next(
        line.split("=", 1)[1]
        for line in (app_dir / ".env").read_text().splitlines()
        if line.startswith("POSTGRES_PASSWORD=")
    )
    assert password not in json.dumps(db)
    migration_sql = (app_dir / "migrations" / "001_init.sql").read_text()
    migrated = ikoma.ok("db.migrate", "builder", {"appName": app, "sql": migration_sql}, json_header=True)
    assert len(migrated["applied"]) == 1
    status = ikoma.ok("db.status", "observer", {"appName": app})
    assert status["exists"] is True
    assert len(status["appliedMigrations"]) == 1
    assert asyncio.run(_greetings(database)) == ["hello"]

    # Phase 4: deployment
    validated = ikoma.ok("apps.validate", "observer", {"appName": app})
    assert validated["valid"] is True, validated
    deployed = ikoma.ok("deploy.up", "operator", {"appName": app})
    assert deployed["health"] == "healthy"
    release_1 = deployed["release"]["id"]
    state = ikoma.ok("apps.status", "observer", {"appName": app})
    assert state["state"] == "running"
    assert state["processes"][0]["port"] == port

    # Phase 5: verification
    assert ikoma.ok("artifact.verify_release", "observer", {"appName": app})["verified"] is True
    assert ikoma.ok("apps.health", "observer", {"appName": app})["health"] == "healthy"
    assert app_get(port, "/health").status_code == 200
    assert app_get(port, "/version").text.strip() == "1.0.0"

    # the same health check from the CLI, acting as observer
    cli = ikoma.cli("tools", "run", "apps.health", "--app", app, "--role", "observer", "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["health"] == "healthy"

    # Restart: a new process, healthy again
    pid_before = state["processes"][0]["pid"]
    assert ikoma.ok("deploy.restart", "operator", {"appName": app})["health"] == "healthy"
    assert ikoma.ok("apps.status", "observer", {"appName": app})["processes"][0]["pid"] != pid_before
    assert app_get(port, "/health").status_code == 200

    # Database backup (the seed's name: myapp-YYYYMMDD.sql)
    backup_name = f"{app}-{datetime.now(UTC):%Y%m%d}.sql"
    backup = ikoma.ok("db.backup", "operator", {"appName": app, "backupName": backup_name}, json_header=True)
    assert backup["backupName"] == backup_name
    assert backup["bytes"] > 0
    assert len(backup["sha256"]) == 64
    assert Path(backup["path"]).is_file()
    assert Path(backup["path"]).is_relative_to(ikoma.backups)

    # A second deploy with changed code
    (app_dir / "src" / "VERSION").write_text("2.0.0\n")
    second = ikoma.ok("deploy.up", "operator", {"appName": app})
    assert second["release"]["id"] != release_1
    assert app_get(port, "/version").text.strip() == "2.0.0"

    # Tampering is seen
    with (app_dir / "src" / "server.py").open("a") as handle:
        handle.write("# tampered\n")
    tampered = ikoma.ok("artifact.verify_release", "observer", {"appName": app})
    assert tampered["verified"] is False
    assert [d["path"] for d in tampered["differences"]] == ["src/server.py"]

    # Rollback: refused without confirmation (no order), then back to release 1 and verified again
    unconfirmed = ikoma.execute("deploy.rollback", "operator", {"appName": app})
    assert unconfirmed.status_code == 422
    assert unconfirmed.json()["reason"] == "confirmation_required"
    assert "X-Order-Id" not in unconfirmed.headers
    as_builder = ikoma.execute("deploy.rollback", "builder", {"appName": app, "confirm": app})
    assert as_builder.status_code == 403
    assert as_builder.json()["details"]["required"] == "operator"
    rolled = ikoma.ok("deploy.rollback", "operator", {"appName": app, "confirm": app})
    assert rolled["release"]["id"] == release_1
    assert rolled["health"] == "healthy"
    verified = ikoma.ok("artifact.verify_release", "observer", {"appName": app})
    assert verified["verified"] is True
    assert verified["release"]["id"] == release_1
    assert app_get(port, "/version").text.strip() == "1.0.0"

    # A tool error comes back as 422 with the tool's code and the order id
    again = ikoma.execute("apps.init", "builder", {"appName": app})
    assert again.status_code == 422
    assert again.json()["reason"] == "app_exists"
    assert again.json()["details"]["orderId"] == again.headers["X-Order-Id"]

    # Stop
    ikoma.ok("deploy.down", "operator", {"appName": app})
    with pytest.raises(httpx.HTTPError):
        app_get(port, "/health")
    assert ikoma.ok("apps.status", "observer", {"appName": app})["state"] != "running"

    # Remove, through the CLI (destructive: --confirm)
    refused = ikoma.cli("tools", "run", "apps.remove", "--app", app)
    assert refused.returncode == 1
    assert "confirmation_required" in refused.stderr
    removed = ikoma.cli(
        "tools",
        "run",
        "apps.remove",
        "--app",
        app,
        "--confirm",
        app,
        "--param",
        "dropDatabase=true",
        "--json",
    )
    assert removed.returncode == 0, removed.stderr
    assert not app_dir.exists()

    # Every call left a trace; the chain verifies on the database itself
    with ikoma.admin() as admin:
        page = admin.get("/v1/audit", params={"action": "execute:", "limit": 1000}).json()["items"]
        mcp_or_cli = admin.get("/v1/audit", params={"action": "execute:apps.remove"}).json()["items"]
    outcomes = {(e["action"], e["outcome"]) for e in page}
    assert ("execute:deploy.rollback", "denied") in outcomes
    assert ("execute:apps.init", "error") in outcomes
    assert ("execute:deploy.up", "allowed") in outcomes
    assert {e["outcome"] for e in mcp_or_cli} == {"allowed", "denied"}
    assert all(e["tokenPrefix"] == ikoma.api_key[:14] for e in page)
    assert ikoma.api_key not in (ikoma.data_dir.parent / "audit.jsonl").read_text()
    assert password not in (ikoma.data_dir.parent / "audit.jsonl").read_text()
    check = ikoma.cli("audit", "verify", env={"DATABASE_URL": f"sqlite:///{ikoma.data_dir / 'ikoma.db'}"})
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok: ")
