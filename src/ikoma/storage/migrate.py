"""Migrations: apply them (at start, fail-fast, and `ikoma db migrate`) and check them (`ikoma db check`).

Each applied revision is recorded in `ikoma_migration_history` with the SHA-256 of its file, so the
check can tell an edited, missing or unrecorded migration file (the seed's `db:verify`), on top of
comparing the migrated schema with the models.

Several replicas may start (or run `ikoma db migrate`) at once on one PostgreSQL: the upgrade holds a
session advisory lock, so one applies the migrations while the others wait for it, then find the schema
current and apply nothing. SQLite serves one process; its write lock orders the rare second migrator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, delete, insert, inspect, select, text

from ikoma.storage.database import create_sqlite_engine
from ikoma.storage.tables import metadata, migration_history
from ikoma.storage.urls import dialect_of, driver_url

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

# alembic (with mako, its templates) is imported where it is used, not with this module: importing the
# API must stay cheap (`python -X importtime -c 'import ikoma.api.app'`), and the tests import it a lot
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x1C0A_0003  # arbitrary, fixed: "an IKOMA migration runs"
T = TypeVar("T")


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "no migrations found"
    return head


def file_checksum(revision: str) -> str:
    script = script_directory().get_revision(revision)
    if script is None or script.path is None:
        raise LookupError(f"no migration file for revision {revision}")
    return hashlib.sha256(Path(script.path).read_bytes()).hexdigest()


async def run_on_connection(url: str, work: Callable[[Connection], T]) -> T:
    """Run synchronous alembic/inspection work on a fresh connection of either backend, committed."""
    if dialect_of(url) == "sqlite":
        engine = create_sqlite_engine(url)
        try:
            with engine.connect() as conn:
                result = work(conn)
                conn.commit()
                return result
        finally:
            engine.dispose()
    from sqlalchemy.ext.asyncio import create_async_engine

    async_engine = create_async_engine(driver_url(url))
    try:
        async with async_engine.connect() as aconn:
            result = await aconn.run_sync(work)
            await aconn.commit()
            return result
    finally:
        await async_engine.dispose()


def _record_version(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    conn = ctx.connection
    if step.is_upgrade:
        revision = step.up_revision_id
        conn.execute(delete(migration_history).where(migration_history.c.revision == revision))
        conn.execute(insert(migration_history).values(revision=revision, checksum=file_checksum(revision)))
    elif inspect(conn).has_table(migration_history.name):  # gone after downgrading the first revision
        conn.execute(delete(migration_history).where(migration_history.c.revision == step.up_revision_id))


def _upgrade(conn: Connection, target: str = "head") -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = _record_version
    command.upgrade(config, target)


def _upgrade_alone(conn: Connection, target: str = "head") -> None:
    """`_upgrade`, one migrator at a time on PostgreSQL (the others wait, then find nothing to do)."""
    if conn.dialect.name != "postgresql":
        _upgrade(conn, target)
        return
    # a session lock (a transaction lock would end with the first migration's own transaction), taken
    # and committed before alembic starts, so each migration keeps its own transaction
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    conn.commit()
    try:
        _upgrade(conn, target)
    finally:
        if conn.in_transaction():
            conn.rollback()  # a failed migration: nothing of it stays; the lock is released below
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        conn.commit()


async def upgrade(url: str, target: str = "head") -> None:
    """Apply every pending migration; raises on the first failure (start-up is fail-fast)."""
    await run_on_connection(url, lambda conn: _upgrade_alone(conn, target))


def _downgrade(conn: Connection, target: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = conn
    config.attributes["on_version_apply"] = _record_version
    command.downgrade(config, target)


async def downgrade(url: str, target: str) -> None:
    await run_on_connection(url, lambda conn: _downgrade(conn, target))


def current_revision(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


@dataclass
class CheckReport:
    current: str | None
    head: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check(conn: Connection) -> CheckReport:
    scripts = script_directory()
    head = head_revision()
    report = CheckReport(current=current_revision(conn), head=head)
    if report.current != head:
        report.problems.append(
            f"database is at revision {report.current or 'none'}; migrations head is {head}"
        )
    if not inspect(conn).has_table(migration_history.name):
        report.problems.append("migration history table is missing")
        return report
    recorded = {row.revision: row.checksum for row in conn.execute(select(migration_history))}
    applied = (
        [s.revision for s in scripts.walk_revisions(base="base", head=report.current)]
        if report.current
        else []
    )
    for revision in applied:
        if revision not in recorded:
            report.problems.append(f"revision {revision} is applied but not recorded in the history")
        elif recorded[revision] != file_checksum(revision):
            report.problems.append(f"migration file of revision {revision} was edited after it was applied")
    known = {script.revision for script in scripts.walk_revisions()}
    for revision in recorded:
        if revision not in known:
            report.problems.append(f"revision {revision} is recorded but its migration file is missing")
    if report.current == head:
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        for diff in compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata):
            report.problems.append(f"models and migrations differ: {diff}")
    return report


async def check(url: str) -> CheckReport:
    """Compare the database with the migration files and the models; `report.problems` lists each gap."""
    return await run_on_connection(url, _check)
