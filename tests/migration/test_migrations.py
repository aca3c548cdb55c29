"""Migrations build exactly the models' schema, on SQLite and PostgreSQL, and `db check` sees tampering.

The reference schema is `tables.metadata.create_all`; both databases are compared through SQLAlchemy's
inspector (tables, columns, keys, indexes, constraints), the way procrastinate's migration tests do.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, inspect, text

from ikoma.storage import migrate
from ikoma.storage.tables import metadata
from tests import support

T = TypeVar("T")
NewDatabase = Callable[[], str]

BUILTIN_PLAYBOOKS = 8 + 19  # 0002 built-ins + 0005 operations tools


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewDatabase]:
    """Makes empty databases of one backend; PostgreSQL ones are dropped after the test."""
    if request.param == "postgresql":
        support.require_pg()
    created: list[str] = []

    def make() -> str:
        if request.param == "sqlite":
            created.append(f"sqlite:///{tmp_path / f'db{len(created)}.db'}")
        else:
            created.append(support.pg_url(support.create_pg_database("ikoma_mig")))
        return created[-1]

    yield make
    for url in created:
        if request.param == "postgresql":
            support.drop_pg_database(url.rpartition("/")[2])


@pytest.fixture
def migrated(new_database: NewDatabase) -> str:
    url = new_database()
    asyncio.run(migrate.upgrade(url))
    return url


def on_connection(url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a fresh synchronous connection of either backend, then commit."""
    return asyncio.run(migrate.run_on_connection(url, work))


def execute(url: str, sql: str) -> None:
    on_connection(url, lambda conn: conn.execute(text(sql)))


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    return on_connection(url, lambda conn: [tuple(r) for r in conn.execute(text(sql))])


def _sql(value: object) -> str | None:
    """SQL text (defaults, partial-index predicates, checks) with whitespace and outer parens normalised."""
    if value is None:
        return None
    sql = re.sub(r"\s+", " ", str(value)).strip()
    while sql.startswith("(") and sql.endswith(")") and _balanced(sql[1:-1]):
        sql = sql[1:-1].strip()
    return sql


def _balanced(sql: str) -> bool:
    depth = 0
    for char in sql:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _type(column: Mapping[str, Any]) -> tuple[Any, ...]:
    kind = column["type"]
    return (type(kind).__name__, getattr(kind, "length", None), getattr(kind, "timezone", None))


def schema_of(conn: Connection) -> dict[str, Any]:
    """Everything the inspector tells about the schema, except alembic's own version table."""
    inspector = inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        schema[table] = {
            "columns": [
                (c["name"], c["nullable"], _type(c), _sql(c.get("default")))
                for c in inspector.get_columns(table)
            ],
            "primary key": inspector.get_pk_constraint(table),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    tuple(
                        sorted(
                            (k, _sql(v))
                            for k, v in i.get("dialect_options", {}).items()
                            if k.endswith("_where")
                        )
                    ),
                )
                for i in inspector.get_indexes(table)
            ),
            "foreign keys": sorted(
                (
                    f["name"],
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    tuple(sorted(f["options"].items())),
                )
                for f in inspector.get_foreign_keys(table)
            ),
            "unique constraints": sorted(
                (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)
            ),
            "check constraints": sorted(
                (c["name"], _sql(c["sqltext"])) for c in inspector.get_check_constraints(table)
            ),
        }
    return schema


def problems(url: str) -> list[str]:
    report: migrate.CheckReport = asyncio.run(migrate.check(url))
    return report.problems


def ikoma_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IKOMA_", "DATABASE_URL"))}
    env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "ikoma", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- (a) migrations build the models --------------------------------------------------------------------
def test_migrated_schema_equals_the_schema_built_from_the_models(new_database: NewDatabase) -> None:
    from_migrations = new_database()
    asyncio.run(migrate.upgrade(from_migrations))
    from_models = new_database()
    on_connection(from_models, metadata.create_all)

    migrated_schema = on_connection(from_migrations, schema_of)
    model_schema = on_connection(from_models, schema_of)

    assert set(migrated_schema) == set(metadata.tables)
    for table in model_schema:
        assert migrated_schema[table] == model_schema[table], table
    assert migrated_schema == model_schema


# --- (b) check on a fresh database ------------------------------------------------------------------------
def test_check_is_ok_on_a_freshly_migrated_database(migrated: str) -> None:
    report = asyncio.run(migrate.check(migrated))
    assert report.problems == []
    assert report.ok
    assert report.current == report.head == migrate.head_revision()


def test_check_reports_an_unmigrated_database(new_database: NewDatabase) -> None:
    url = new_database()
    on_connection(url, lambda conn: None)  # creates the empty SQLite file
    found = problems(url)
    assert any("revision none" in p for p in found), found


def test_check_reports_a_database_behind_the_head(new_database: NewDatabase) -> None:
    url = new_database()
    asyncio.run(migrate.upgrade(url, "0001"))
    found = problems(url)
    assert found == [f"database is at revision 0001; migrations head is {migrate.head_revision()}"]


# --- (c) tampering with the recorded history --------------------------------------------------------------
@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        pytest.param(
            "UPDATE ikoma_migration_history SET checksum = 'x' WHERE revision = '0001'",
            "migration file of revision 0001 was edited after it was applied",
            id="edited-checksum",
        ),
        pytest.param(
            "DELETE FROM ikoma_migration_history WHERE revision = '0002'",
            "revision 0002 is applied but not recorded in the history",
            id="deleted-row",
        ),
        pytest.param(
            "INSERT INTO ikoma_migration_history (revision, checksum) VALUES ('9999', 'x')",
            "revision 9999 is recorded but its migration file is missing",
            id="unknown-revision",
        ),
    ],
)
def test_check_reports_tampered_history(migrated: str, tamper: str, expected: str) -> None:
    execute(migrated, tamper)
    assert problems(migrated) == [expected]


def test_recorded_checksums_are_the_sha256_of_the_migration_files(migrated: str) -> None:
    recorded = dict(rows(migrated, "SELECT revision, checksum FROM ikoma_migration_history"))
    revisions = [script.revision for script in migrate.script_directory().walk_revisions()]
    assert recorded == {rev: migrate.file_checksum(rev) for rev in revisions}
    assert {"0001", "0002"} <= set(recorded)
    assert all(re.fullmatch(r"[0-9a-f]{64}", checksum) for checksum in recorded.values())


# --- (d) upgrade is idempotent ----------------------------------------------------------------------------
def test_upgrade_twice_changes_nothing_and_seeds_playbooks_once(migrated: str) -> None:
    def state() -> dict[str, Any]:
        return {
            "schema": on_connection(migrated, schema_of),
            "version": rows(migrated, "SELECT version_num FROM alembic_version"),
            "history": rows(
                migrated,
                "SELECT revision, checksum, applied_at FROM ikoma_migration_history ORDER BY revision",
            ),
            "playbooks": rows(migrated, "SELECT id, key, builtin, created_at FROM playbooks ORDER BY key"),
        }

    before = state()
    asyncio.run(migrate.upgrade(migrated))
    after = state()

    assert after == before
    assert after["version"] == [(migrate.head_revision(),)]
    keys = [row[1] for row in after["playbooks"]]
    assert len(keys) == BUILTIN_PLAYBOOKS
    assert len(set(keys)) == BUILTIN_PLAYBOOKS
    assert "system.test_ping" in keys
    assert all(row[2] for row in after["playbooks"])
    assert problems(migrated) == []


def test_seed_migration_keeps_a_playbook_that_already_exists(new_database: NewDatabase) -> None:
    url = new_database()
    asyncio.run(migrate.upgrade(url, "0001"))
    execute(
        url,
        "INSERT INTO playbooks (id, key, name, description, params_schema, min_role, destructive, "
        "default_timeout_s, max_attempts, builtin) VALUES ('00000000-0000-0000-0000-000000000001', "
        "'system.test_ping', 'Mine', 'seeded by hand', '{}', 'admin', false, 5, 1, false)",
    )
    asyncio.run(migrate.upgrade(url))
    mine = rows(url, "SELECT name, builtin FROM playbooks WHERE key = 'system.test_ping'")
    assert mine == [("Mine", False)]
    assert rows(url, "SELECT count(*) FROM playbooks") == [(BUILTIN_PLAYBOOKS,)]


# --- (e) downgrade then upgrade ---------------------------------------------------------------------------
def test_downgrade_one_step_then_upgrade_restores_the_head(migrated: str) -> None:
    asyncio.run(migrate.downgrade(migrated, "0001"))
    assert rows(migrated, "SELECT count(*) FROM playbooks WHERE builtin") == [(0,)]
    assert rows(migrated, "SELECT revision FROM ikoma_migration_history") == [("0001",)]

    asyncio.run(migrate.upgrade(migrated))
    assert problems(migrated) == []
    assert rows(migrated, "SELECT count(*) FROM playbooks WHERE builtin") == [(BUILTIN_PLAYBOOKS,)]


def test_downgrade_to_base_then_upgrade_rebuilds_the_same_schema(migrated: str) -> None:
    schema_at_head = on_connection(migrated, schema_of)

    asyncio.run(migrate.downgrade(migrated, "base"))
    assert on_connection(migrated, schema_of) == {}
    assert rows(migrated, "SELECT version_num FROM alembic_version") == []

    asyncio.run(migrate.upgrade(migrated))
    assert on_connection(migrated, schema_of) == schema_at_head
    assert problems(migrated) == []
    assert rows(migrated, "SELECT count(*) FROM playbooks") == [(BUILTIN_PLAYBOOKS,)]


# --- (f) the CLI --------------------------------------------------------------------------------------------
def test_db_migrate_then_check_exit_0_and_check_exits_1_after_tampering(new_database: NewDatabase) -> None:
    url = new_database()
    migrated = ikoma_cli(url, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"database at revision {migrate.head_revision()}" in migrated.stdout

    checked = ikoma_cli(url, "db", "check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok:"), checked.stdout

    execute(url, "UPDATE ikoma_migration_history SET checksum = 'x' WHERE revision = '0002'")
    tampered = ikoma_cli(url, "db", "check")
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "problem: migration file of revision 0002 was edited after it was applied" in tampered.stderr
    assert "Traceback" not in tampered.stderr
