"""The seed 001 runbook, top to bottom, on the process runtime and the real PostgreSQL.

init → env.example → db.create → db.migrate → validate → deploy.up → status → health →
verify_release → second deploy → tamper → rollback → restart → backup → restore → down → remove,
through the real playbooks and a real ExecutionContext; tinyapp is a real HTTP process.
"""

# ruff: noqa: ASYNC230 - small local file edits inside the scenario are the point

from __future__ import annotations

import hashlib
import os
import stat

import asyncpg

from ikoma.runner.apps import envfile
from ikoma.runner.apps import manifest as manifests
from tests import support
from tests.integration.apps.conftest import ADMIN_PASSWORD, Apps, get, unique_app


async def greetings(database: str) -> list[str]:
    base, _, _ = support.PG_ADMIN_URL.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{database}", timeout=5)
    try:
        return [row["text"] for row in await conn.fetch("SELECT text FROM greetings ORDER BY id")]
    finally:
        await conn.close()


async def add_greeting(database: str, text: str) -> None:
    base, _, _ = support.PG_ADMIN_URL.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{database}", timeout=5)
    try:
        await conn.execute("INSERT INTO greetings (text) VALUES ($1)", text)
    finally:
        await conn.close()


async def test_the_seed_runbook_runs_end_to_end_on_the_process_runtime(apps_db: Apps) -> None:
    apps = apps_db
    app = unique_app("rb")
    database = app.replace("-", "_")
    path = apps.path(app)

    # Phase 1: initialisation
    init = await apps.ok("apps.init", appName=app, runtime="process")
    assert init["runtime"] == "process"
    assert init["path"] == str(path)
    for name in ("config", "migrations", "seeds", "src"):
        assert (path / name).is_dir()
    assert (path / "docker-compose.yml").is_file()
    assert (path / manifests.MANIFEST_FILE).is_file()
    await apps.refused("apps.init", "app_exists", appName=app)
    port = apps.install_tinyapp(app)

    # Phase 2: configuration
    template = (await apps.ok("apps.env.example", appName=app))["result"]
    assert "APP_ENV=" in template
    assert f"POSTGRES_DB={database}" in template
    assert "POSTGRES_PASSWORD=" in template
    before = await apps.ok("apps.validate", appName=app)
    assert before["valid"] is False
    assert set(before["missing"]) == {"APP_ENV", *manifests.POSTGRES_VARIABLES}
    (path / ".env").write_text("# written by the operator\nAPP_ENV=production\n")

    # Phase 3: database
    created = await apps.ok("db.create", appName=app)
    assert created["created"] is True
    assert created["database"] == database
    env_path = path / ".env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    env = envfile.read(env_path)
    password = env["POSTGRES_PASSWORD"]
    assert len(password) >= 32
    assert env["APP_ENV"] == "production"  # the operator's lines are kept
    assert env["POSTGRES_DB"] == env["POSTGRES_USER"] == database
    assert "# written by the operator" in env_path.read_text()
    again = await apps.ok("db.create", appName=app)
    assert again["created"] is False
    assert envfile.read(env_path)["POSTGRES_PASSWORD"] == password  # no new password

    migrated = await apps.ok("db.migrate", appName=app)
    assert [m["name"] for m in migrated["applied"]] == ["001_init.sql"]
    sql = (path / "migrations" / "001_init.sql").read_text()
    # the runbook sends the file's text as `sql`: recognised, not run twice
    inline = await apps.ok("db.migrate", appName=app, sql=sql)
    assert inline["applied"] == []
    assert inline["skipped"][0]["sameAs"] == "001_init.sql"
    (path / "migrations" / "001_init.sql").write_text(sql + "-- edited after it was applied\n")
    changed = await apps.refused("db.migrate", "migration_changed", appName=app)
    assert "001_init.sql" in changed["error"]["message"]
    (path / "migrations" / "001_init.sql").write_text(sql)
    extra = await apps.ok("db.migrate", appName=app, sql="INSERT INTO greetings (text) VALUES ('inline');")
    assert extra["applied"][0]["name"].startswith("inline-")
    failing = await apps.refused("db.migrate", "migration_failed", appName=app, sql="SELECT * FROM nowhere;")
    assert "nowhere" in failing["error"]["message"]
    status = await apps.ok("db.status", appName=app)
    assert status["exists"] is True
    assert status["sizeBytes"] > 0
    assert [m["name"] for m in status["appliedMigrations"]] == ["001_init.sql", extra["applied"][0]["name"]]
    assert all(len(m["checksum"]) == 64 and m["appliedAt"] for m in status["appliedMigrations"])
    assert isinstance(status["connections"], int)
    assert await greetings(database) == ["hello", "inline"]

    # Phase 4: deployment
    valid = await apps.ok("apps.validate", appName=app)
    assert valid == {**valid, "valid": True, "errors": [], "missing": []}
    first = await apps.ok("deploy.up", appName=app)
    assert first["health"] == "healthy"
    release_1 = first["release"]["id"]
    state = await apps.ok("apps.status", appName=app)
    assert state["state"] == "running"
    assert state["running"] is True
    assert state["dockerRunning"] is None
    assert state["release"]["id"] == release_1
    [web] = state["processes"]
    assert web["name"] == "web"
    assert web["port"] == port
    assert web["running"] is True
    assert isinstance(web["pid"], int)
    assert web["uptimeSeconds"] is not None

    # Phase 5: verification
    assert (await apps.ok("artifact.verify_release", appName=app))["verified"] is True
    health = await apps.ok("apps.health", appName=app)
    assert health["health"] == "healthy"
    assert health["processes"] == [
        {
            "name": "web",
            "healthy": True,
            "status": 200,
            "detail": f"GET http://127.0.0.1:{port}/health: HTTP 200",
        }
    ]
    assert get(port, "/health").status_code == 200
    assert get(port, "/version").text.strip() == "1.0.0"
    config = get(port, "/config").json()
    assert config == {
        "greeting": "hello from the manifest",
        "appEnv": "production",
        "database": database,
        "port": str(port),
        "ikomaVariables": [],  # nothing of the runner's environment reaches the app
    }

    # a second deploy with changed code
    (path / "src" / "VERSION").write_text("2.0.0\n")
    second = await apps.ok("deploy.up", appName=app)
    release_2 = second["release"]["id"]
    assert release_2 != release_1
    assert get(port, "/version").text.strip() == "2.0.0"

    # tampering is detected, with the file named
    with (path / "src" / "server.py").open("a") as handle:
        handle.write("# tampered\n")
    tampered = await apps.ok("artifact.verify_release", appName=app)
    assert tampered["verified"] is False
    assert tampered["release"]["id"] == release_2
    assert [d["path"] for d in tampered["differences"]] == ["src/server.py"]
    difference = tampered["differences"][0]
    assert difference["expected"] != difference["actual"]
    assert difference["actual"] == hashlib.sha256((path / "src" / "server.py").read_bytes()).hexdigest()

    # rollback: refused without confirm, then back to release 1
    await apps.refused("deploy.rollback", "confirmation_required", appName=app)
    rolled = await apps.ok("deploy.rollback", appName=app, confirm=app)
    assert rolled["release"]["id"] == release_1
    assert rolled["previousRelease"] == release_2
    assert "src/server.py" in rolled["restored"]
    assert rolled["verified"] is True
    assert rolled["health"] == "healthy"
    assert get(port, "/version").text.strip() == "1.0.0"
    verified = await apps.ok("artifact.verify_release", appName=app)
    assert verified["verified"] is True
    assert verified["release"]["id"] == release_1

    # restart: a new process, healthy again
    pid_before = (await apps.ok("apps.status", appName=app))["processes"][0]["pid"]
    restarted = await apps.ok("deploy.restart", appName=app)
    assert restarted["health"] == "healthy"
    pid_after = (await apps.ok("apps.status", appName=app))["processes"][0]["pid"]
    assert pid_after != pid_before

    # backup, restore
    backup = await apps.ok("db.backup", appName=app, backupName=f"{app}-1.dump")
    dump = apps.backups / app / f"{app}-1.dump"
    assert backup["path"] == str(dump)
    assert backup["bytes"] == dump.stat().st_size > 0
    assert backup["sha256"] == hashlib.sha256(dump.read_bytes()).hexdigest()
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    await apps.refused("db.backup", "backup_exists", appName=app, backupName=f"{app}-1.dump")
    default_named = await apps.ok("db.backup", appName=app)
    assert default_named["backupName"].startswith(f"{app}-")
    assert default_named["backupName"].endswith(".dump")
    await add_greeting(database, "written after the backup")
    await apps.refused("db.restore", "confirmation_required", appName=app, backupName=f"{app}-1.dump")
    await apps.refused("db.restore", "backup_not_found", appName=app, backupName="nope.dump", confirm=app)
    restored = await apps.ok("db.restore", appName=app, backupName=f"{app}-1.dump", confirm=app)
    assert restored["sha256"] == backup["sha256"]
    assert await greetings(database) == ["hello", "inline"]
    with open(apps.backups / app / default_named["backupName"], "ab") as handle:
        handle.write(b"corruption")
    await apps.refused(
        "db.restore", "checksum_mismatch", appName=app, backupName=default_named["backupName"], confirm=app
    )

    logs = await apps.ok("apps.logs", appName=app, lines=50)
    assert any("listening on" in line for line in logs["logs"][0]["lines"])
    assert len((await apps.ok("apps.logs", appName=app, lines=1, process="web"))["logs"][0]["lines"]) == 1
    listed = await apps.ok("apps.list")
    assert {
        "name": app,
        "runtime": "process",
        "state": "running",
        "running": True,
        "release": release_1,
    } in listed["apps"]

    # stop, remove
    down = await apps.ok("deploy.down", appName=app)
    assert down["wasRunning"] is True
    assert (await apps.ok("apps.status", appName=app))["state"] == "stopped"
    assert (await apps.ok("apps.health", appName=app))["health"] == "unhealthy"
    await apps.refused("apps.remove", "confirmation_required", appName=app, confirm="someone-else")
    removed = await apps.ok("apps.remove", appName=app, confirm=app)
    assert removed["removed"] is True
    assert removed["databaseKept"] is True
    assert not path.exists()
    assert (await apps.ok("db.status", appName=app))["exists"] is True  # kept: still inspectable
    await apps.refused("apps.status", "app_not_found", appName=app)

    # the generated password and the admin password never left the machine's files
    for call in apps.calls:
        assert password not in call.text(), call.key
        assert ADMIN_PASSWORD not in call.text(), call.key
    assert any("pg_dump" in call.logs for call in apps.calls)  # the logs were really captured


async def test_remove_with_drop_database_drops_it(apps_db: Apps) -> None:
    app = unique_app("rm")
    await apps_db.ok("apps.init", appName=app, runtime="process")
    await apps_db.ok("db.create", appName=app)
    removed = await apps_db.ok("apps.remove", appName=app, confirm=app, dropDatabase=True)
    assert removed["databaseKept"] is False
    assert removed["databaseDropped"] is True
    assert (await apps_db.ok("db.status", appName=app)) == {
        "appName": app,
        "exists": False,
        "database": app.replace("-", "_"),
        "sizeBytes": None,
        "appliedMigrations": [],
        "connections": 0,
    }


async def test_a_database_ikoma_did_not_create_is_never_taken_over(apps_db: Apps) -> None:
    app = unique_app("own")
    name = app.replace("-", "_")
    conn = await asyncpg.connect(support.PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await apps_db.ok("apps.init", appName=app, runtime="process")
    await apps_db.refused("db.create", "database_conflict", appName=app)
    await apps_db.refused("apps.remove", "database_conflict", appName=app, confirm=app, dropDatabase=True)
    assert not (apps_db.path(app) / ".env").exists()


async def test_db_tools_without_a_database_server_answer_database_unavailable(apps: Apps) -> None:
    app = unique_app("nodb")
    await apps.ok("apps.init", appName=app, runtime="process")
    for key in ("db.create", "db.migrate", "db.status", "db.backup"):
        data = await apps.refused(key, "database_unavailable", appName=app)
        assert "IKOMA_APPS_DATABASE_URL" in data["error"]["message"]
    check = await apps.ok("platform.check")
    assert check["checks"]["postgres"] is False
    assert check["healthy"] is False
    assert set(check) == {"healthy", "checks", "details"}
    assert set(check["checks"]) == {"docker", "postgres", "appsRoot", "disk"}


async def test_platform_check_is_healthy_with_postgres_and_an_apps_root(apps_db: Apps) -> None:
    apps_db.root.mkdir(parents=True)
    check = await apps_db.ok("platform.check")
    assert check["checks"]["postgres"] is True
    assert check["checks"]["appsRoot"] is True
    assert check["checks"]["disk"] is (
        check["details"]["disk"]["freeBytes"] >= 1024**3 and check["details"]["disk"]["usedPercent"] < 90
    )
    # docker is only required once a compose app exists under the root
    assert check["healthy"] is check["checks"]["disk"]
    assert os.environ["IKOMA_APPS_DATABASE_URL"].count(ADMIN_PASSWORD) == 1
