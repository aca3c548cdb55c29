"""The operations tools' pure parts: names, manifests, env files, compose argv, releases, SCRAM."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ikoma.runner.apps import compose, envfile, names, releases
from ikoma.runner.apps import manifest as manifests
from ikoma.runner.apps.database import conn_info, scram_verifier
from ikoma.runner.apps.errors import AppError
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY, capabilities

TOOLS = {
    "apps.init", "apps.env.example", "apps.validate", "apps.status", "apps.health", "apps.list",
    "apps.logs", "apps.remove", "deploy.up", "deploy.down", "deploy.restart", "deploy.rollback",
    "artifact.verify_release", "db.create", "db.migrate", "db.status", "db.backup", "db.restore",
    "platform.check",
}  # fmt: skip
APP_TOOLS = TOOLS - {"apps.list", "platform.check"}
HOSTILE_NAMES = [
    "../x",
    "%2e%2e",
    "a\x00b",
    "/etc",
    "MyApp",
    "",
    "x\n",
    "-rf",
    "1app",
    "a" * 64,
    "a/b",
    ".",
    "..",
    "a b",
]


def code_of(call: Any, *args: Any) -> str:
    with pytest.raises(AppError) as caught:
        call(*args)
    return caught.value.code


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE_NAMES, None, 7, ["a"]])
def test_app_names_outside_the_pattern_are_refused(value: Any) -> None:
    assert code_of(names.app_name, value) == "invalid_app_name"


@pytest.mark.parametrize("value", ["a", "my-app", "app2", "a" * 63, "x-1-y"])
def test_app_names_in_the_pattern_are_accepted(value: str) -> None:
    assert names.app_name(value) == value


@pytest.mark.parametrize(
    "value", ["../x.dump", "/etc/passwd", ".hidden", "..", "a\x00b", "a/b", "-x", "", "a" * 129]
)
def test_backup_names_outside_the_pattern_are_refused(value: str) -> None:
    assert code_of(names.backup_name, value) == "invalid_backup_name"


def test_database_names_map_dashes_to_underscores() -> None:
    assert names.database_name("my-shop-2") == "my_shop_2"


@pytest.mark.parametrize("key", sorted(APP_TOOLS))
async def test_every_app_tool_refuses_a_traversal_name_before_touching_the_disk(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "apps"
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(root))
    monkeypatch.setenv("IKOMA_BACKUPS_DIR", str(tmp_path / "backups"))
    monkeypatch.delenv("IKOMA_APPS_DATABASE_URL", raising=False)
    for hostile in ("../escape", "%2e%2e", "a\x00b", "/etc", "MyApp"):
        params = {"appName": hostile, "confirm": hostile, "backupName": "x.dump"}
        result = await REGISTRY[key](ExecutionContext("o", params), params)
        assert result.errors == [{"code": "invalid_app_name", "message": result.errors[0]["message"]}]
        assert result.steps[-1].name == "result"
        assert result.steps[-1].data == {
            "error": {"code": "invalid_app_name", "message": result.errors[0]["message"]}
        }
        assert [s.name for s in result.steps] == ["result"]  # no step ran
    assert not root.exists()
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "backups").exists()


def test_every_tool_of_the_catalog_is_registered_and_announced() -> None:
    assert set(REGISTRY) >= TOOLS
    assert set(capabilities()) >= TOOLS


async def test_destructive_tools_refuse_without_the_app_name_as_confirm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(tmp_path))
    app = tmp_path / "shop"
    app.mkdir()
    (app / manifests.MANIFEST_FILE).write_text(
        manifests.dump(manifests.default_manifest("shop", "process", 8100))
    )
    for key in ("deploy.rollback", "apps.remove", "db.restore"):
        for confirm in (None, "", "SHOP", "other", True):
            params: dict[str, Any] = {"appName": "shop", "backupName": "b.dump"}
            if confirm is not None:
                params["confirm"] = confirm
            result = await REGISTRY[key](ExecutionContext("o", params), params)
            assert [e["code"] for e in result.errors] == ["confirmation_required"], (key, confirm)
    assert (app / manifests.MANIFEST_FILE).exists()


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_round_trips_through_yaml() -> None:
    original = manifests.AppManifest(
        name="shop",
        runtime="process",
        database=True,
        variables=(manifests.Variable("APP_ENV"), manifests.Variable("LOG", required=False, default="info")),
        processes=(
            manifests.ProcessSpec("web", ("python3", "src/server.py"), 8100, "/health", {"A": "1"}),
            manifests.ProcessSpec("worker", ("python3", "src/worker.py")),
        ),
    )
    assert manifests.parse(yaml.safe_load(manifests.dump(original)), "shop") == original


def test_manifest_problems_are_all_listed() -> None:
    data = {
        "name": "other",
        "runtime": "kubernetes",
        "processes": [
            {"name": "web", "command": "python3 server.py", "port": 70000, "health": "health"},
            {"name": "../log", "command": ["x"]},
            {"name": "db", "command": ["x"], "health": "/h"},
        ],
    }
    with pytest.raises(AppError) as caught:
        manifests.parse(data, "shop")
    assert caught.value.code == "manifest_invalid"
    problems = " | ".join(caught.value.details["problems"])
    for expected in (
        "name is 'other'",
        "runtime must be one of",
        "command must be a list of strings",
        "port must be an integer",
        "health must be a path",
        "processes[1].name must match",
        "processes[2].health needs a port",
    ):
        assert expected in problems


def test_required_variables_include_postgres_when_the_app_has_a_database() -> None:
    manifest = manifests.parse(
        {"database": True, "variables": ["APP_ENV", {"name": "X", "required": False}]}, "shop"
    )
    assert manifest.required_variables() == ["APP_ENV", *manifests.POSTGRES_VARIABLES]
    assert manifests.parse({"variables": ["APP_ENV"]}, "shop").required_variables() == ["APP_ENV"]


def test_env_template_lists_every_variable_the_app_needs(tmp_path: Path) -> None:
    manifest = manifests.parse(
        {
            "database": True,
            "variables": ["NODE_ENV", {"name": "LOG_LEVEL", "required": False, "default": "info"}],
            "processes": [
                {"name": "web", "command": ["node", "a.js"], "port": 8100, "env": {"GREETING": "x"}}
            ],
        },
        "my-shop",
    )
    text = manifests.env_template(manifest, tmp_path / "my-shop")
    values = envfile.parse(text)
    assert values == {
        "NODE_ENV": "",
        "POSTGRES_DB": "my_shop",
        "POSTGRES_USER": "my_shop",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_HOST": "",
        "POSTGRES_PORT": "5432",
    }
    assert "#LOG_LEVEL=info" in text  # optional: commented out with its default
    assert "# GREETING" in text
    assert "web: 8100" in text
    assert manifests.template_variables(manifest) == ["NODE_ENV", "LOG_LEVEL", *manifests.POSTGRES_VARIABLES]


# --- env file ---------------------------------------------------------------------------------


def test_env_file_parsing_handles_quotes_comments_and_export() -> None:
    text = '# c\nexport A=1\nB = \'two words\'\nC="q \\" d"\nD=x # comment\n\nbad line\nE=\n'
    assert envfile.parse(text) == {"A": "1", "B": "two words", "C": 'q " d', "D": "x", "E": ""}


def test_env_update_keeps_other_lines_and_makes_the_file_private(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# mine\nPORT=3000\nPOSTGRES_PASSWORD=old\nPOSTGRES_PASSWORD=dup\nNODE_ENV=production\n")
    path.chmod(0o644)
    envfile.update(path, {"POSTGRES_PASSWORD": "new pass", "POSTGRES_DB": "shop"})
    assert path.read_text() == (
        '# mine\nPORT=3000\nPOSTGRES_PASSWORD="new pass"\nNODE_ENV=production\nPOSTGRES_DB=shop\n'
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert envfile.read(path)["POSTGRES_PASSWORD"] == "new pass"


# --- compose ----------------------------------------------------------------------------------


def test_compose_commands_are_exact_argv_lists(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    app.mkdir()
    base = compose.base_argv("/usr/bin/docker", "shop", app)
    prefix = [
        "/usr/bin/docker", "compose", "--project-name", "ikoma-shop",
        "--project-directory", str(app), "--file", str(app / "docker-compose.yml"),
    ]  # fmt: skip
    assert base == prefix
    (app / ".env").write_text("A=1\n")
    base = compose.base_argv("/usr/bin/docker", "shop", app)
    assert base == [*prefix, "--env-file", str(app / ".env")]
    assert compose.up_argv(base) == [*base, "up", "--detach", "--build", "--remove-orphans"]
    assert compose.down_argv(base) == [*base, "down", "--remove-orphans"]
    assert compose.restart_argv(base) == [*base, "restart"]
    assert compose.ps_argv(base) == [*base, "ps", "--all", "--format", "json"]
    assert compose.logs_argv(base, 50, "web") == [*base, "logs", "--no-color", "--tail", "50", "web"]
    assert compose.logs_argv(base, 10, None) == [*base, "logs", "--no-color", "--tail", "10"]
    assert compose.config_argv(base) == [*base, "config", "--quiet"]


PS_ROW = (
    '{"Name":"ikoma-shop-web-1","Service":"web","State":"running","Health":"healthy",'
    '"Status":"Up 2 minutes (healthy)","ExitCode":0,'
    '"Publishers":[{"URL":"127.0.0.1","TargetPort":80,"PublishedPort":8100,"Protocol":"tcp"}]}'
)
PS_EXITED = (
    '{"Name":"ikoma-shop-job-1","Service":"job","State":"exited","Health":"",'
    '"Status":"Exited (1)","ExitCode":1,"Publishers":null}'
)


@pytest.mark.parametrize("text", [f"{PS_ROW}\n{PS_EXITED}\n", f"[{PS_ROW},{PS_EXITED}]"])
def test_compose_ps_json_is_parsed_in_both_formats(text: str) -> None:
    assert compose.parse_ps(text) == [
        {
            "name": "web", "container": "ikoma-shop-web-1", "state": "running", "health": "healthy",
            "status": "Up 2 minutes (healthy)", "ports": [8100], "exitCode": 0,
        },
        {
            "name": "job", "container": "ikoma-shop-job-1", "state": "exited", "health": None,
            "status": "Exited (1)", "ports": [], "exitCode": 1,
        },
    ]  # fmt: skip
    assert compose.parse_ps("") == []


# --- releases ---------------------------------------------------------------------------------


def make_app(path: Path) -> None:
    (path / "src").mkdir(parents=True)
    (path / "config").mkdir()
    (path / "src" / "app.py").write_text("print('v1')\n")
    (path / "src" / "run.sh").write_text("#!/bin/sh\n")
    (path / "src" / "run.sh").chmod(0o755)
    (path / ".env").write_text("SECRET=s3cr3t-value\n")
    (path / ".ikoma" / "logs").mkdir(parents=True)
    (path / ".ikoma" / "logs" / "web.log").write_text("runtime noise\n")
    (path / "src" / "__pycache__").mkdir()
    (path / "src" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")


def test_release_manifest_hashes_files_and_env_but_never_copies_the_secrets(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    make_app(app)
    release = releases.record(app, keep=5)
    assert sorted(release["files"]) == [".env", "src/app.py", "src/run.sh"]
    assert release["files"]["src/app.py"]["sha256"] == hashlib.sha256(b"print('v1')\n").hexdigest()
    assert "config" in release["dirs"]
    stored = releases.releases_dir(app) / release["id"]
    assert not (stored / "files" / ".env").exists()
    assert "s3cr3t-value" not in (stored / "manifest.json").read_text()
    assert releases.verify(app)["verified"] is True


def test_verify_names_every_changed_missing_and_extra_file(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    make_app(app)
    release = releases.record(app, keep=5)
    (app / "src" / "app.py").write_text("print('tampered')\n")
    (app / "src" / "run.sh").unlink()
    (app / "src" / "extra.py").write_text("x\n")
    (app / ".ikoma" / "logs" / "web.log").write_text("more noise\n")  # runtime state: ignored
    result = releases.verify(app)
    assert result["verified"] is False
    assert result["release"]["id"] == release["id"]
    assert result["differences"] == [
        {
            "path": "src/app.py",
            "expected": release["files"]["src/app.py"]["sha256"],
            "actual": hashlib.sha256(b"print('tampered')\n").hexdigest(),
        },
        {"path": "src/extra.py", "expected": None, "actual": hashlib.sha256(b"x\n").hexdigest()},
        {"path": "src/run.sh", "expected": release["files"]["src/run.sh"]["sha256"], "actual": None},
    ]


def test_restore_brings_back_the_release_files_and_modes_and_keeps_env(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    make_app(app)
    first = releases.record(app, keep=5)
    (app / "src" / "app.py").write_text("print('v2')\n")
    (app / "src" / "new.py").write_text("new\n")
    second = releases.record(app, keep=5)
    assert releases.previous_id(app) == first["id"]
    (app / "src" / "run.sh").chmod(0o644)
    restored = releases.restore(app, first["id"])
    assert (app / "src" / "app.py").read_text() == "print('v1')\n"
    assert not (app / "src" / "new.py").exists()
    assert os.access(app / "src" / "run.sh", os.X_OK)
    assert (app / ".env").read_text() == "SECRET=s3cr3t-value\n"
    assert restored["removed"] == ["src/new.py"]
    assert releases.current_id(app) == first["id"]
    assert releases.verify(app)["verified"] is True
    assert releases.previous_id(app) is None
    assert [r["id"] for r in releases.list_summaries(app)] == [first["id"], second["id"]]


def test_only_the_last_n_releases_are_kept(tmp_path: Path) -> None:
    app = tmp_path / "shop"
    make_app(app)
    ids = []
    for i in range(5):
        (app / "src" / "app.py").write_text(f"v{i}\n")
        ids.append(releases.record(app, keep=3)["id"])
    assert [r["id"] for r in releases.list_summaries(app)] == ids[-3:]
    with pytest.raises(AppError) as caught:
        releases.restore(app, ids[0])
    assert caught.value.code == "release_not_found"
    assert code_of(releases.load, app, "../../etc") == "release_not_found"


# --- database helpers -------------------------------------------------------------------------


def test_scram_verifier_matches_the_rfc_7677_exchange() -> None:
    """RFC 7677's example: a client proving "pencil" and the server's signature must check out
    against the StoredKey and ServerKey of our verifier."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_verifier("pencil", salt=salt, iterations=4096)
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert method == "SCRAM-SHA-256"
    assert params == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    auth = (
        b"n=user,r=rOprNGfwEbeRWgbNEkqO,"
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    server_signature = hmac.new(server_key, auth, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_pg_tool_argv_never_carries_the_password() -> None:
    info = conn_info("postgresql://admin:p%40ss@db.example:6543/postgres")
    argv = info.pg_args("shop")
    assert argv == [
        "--no-password", "--dbname", "shop", "--host", "db.example", "--port", "6543", "--username", "admin",
    ]  # fmt: skip
    assert "p@ss" not in " ".join(argv)
    assert info.child_env() == {"PGPASSWORD": "p@ss"}


async def test_an_unusable_apps_root_is_a_coded_failure_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file where the root should be: fails for root too, unlike a permission bit
    (tmp_path / "apps").write_text("not a directory\n")
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(tmp_path / "apps"))
    params = {"appName": "shop", "runtime": "process"}
    result = await REGISTRY["apps.init"](ExecutionContext("o", params), params)
    assert [e["code"] for e in result.errors] == ["filesystem_error"]
    assert str(tmp_path / "apps") in result.errors[0]["message"]
    assert result.steps[-1].data == {
        "error": {"code": "filesystem_error", "message": result.errors[0]["message"]}
    }


async def test_changes_to_one_app_run_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from ikoma.runner.apps.tool import Answer, ToolContext, tool

    monkeypatch.setenv("IKOMA_APPS_ROOT", str(tmp_path))
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def change(tc: ToolContext) -> Answer:
        inside.append(tc.app_name())
        overlaps.append(tuple(inside))
        await asyncio.sleep(0.05)
        inside.remove(tc.app_name())
        return Answer({}, "done")

    tool("test.exclusive", exclusive=True)(change)
    try:
        runs = [
            REGISTRY["test.exclusive"](ExecutionContext("o", p), p)
            for p in ({"appName": "a"}, {"appName": "a"}, {"appName": "b"})
        ]
        await asyncio.gather(*runs)
    finally:
        del REGISTRY["test.exclusive"]
    assert ("a", "a") not in overlaps  # the same app never twice at once
    assert any(set(o) == {"a", "b"} for o in overlaps)  # other apps are not held up
