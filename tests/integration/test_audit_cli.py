"""`ikoma audit verify` on real SQLite and PostgreSQL: tampering by SQL is named, entry by entry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import delete, text, update
from typer.testing import CliRunner

from ikoma.cli.main import app
from ikoma.services import audit
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables import audit_log


def entry(n: int) -> audit.AuditEntry:
    return audit.AuditEntry(
        channel="execute",
        actor_kind="api_client",
        actor_id=f"client-{n}",
        token_prefix="ikoma_AbCdEfGh",
        role="operator",
        action="execute:deploy.up",
        target="web-1/shop",
        params={"appName": "shop"},
        outcome="allowed",
        order_id=None,
    )


def with_entries(url: str, count: int, tamper: Callable[[Tx], object] | None = None) -> None:
    async def run() -> None:
        db = Database(url)
        try:
            for n in range(count):
                await audit.record(db, entry(n))
            if tamper is not None:
                async with db.write() as tx:
                    await tamper(tx)  # type: ignore[misc]
        finally:
            await db.dispose()

    asyncio.run(run())


def verify(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", "verify"], env={"DATABASE_URL": url})
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def test_an_intact_chain_verifies(database_url: str) -> None:
    with_entries(database_url, 5)
    code, out = verify(database_url)
    assert code == 0, out
    assert "ok: 5 audit entries" in out


def test_an_empty_log_verifies(database_url: str) -> None:
    code, out = verify(database_url)
    assert (code, "ok: 0 audit entries" in out) == (0, True)


def test_an_entry_edited_by_sql_is_named(database_url: str) -> None:
    async def edit(tx: Tx) -> None:
        await tx.execute(text("UPDATE audit_log SET outcome = 'denied' WHERE id = 3"))

    with_entries(database_url, 5, edit)
    code, out = verify(database_url)
    assert code == 1
    assert "audit entry #3 was edited" in out


def test_an_edit_that_recomputes_the_entry_hash_breaks_the_next_link(database_url: str) -> None:
    """Rewriting a row with a fresh hash does not help: the next entry still names the old one."""

    async def forge(tx: Tx) -> None:
        row = (await tx.execute(audit_log.select().where(audit_log.c.id == 2))).mappings().one()
        forged = {**row, "actor_id": "someone-else"}
        await tx.execute(
            update(audit_log)
            .where(audit_log.c.id == 2)
            .values(actor_id="someone-else", hash=audit._digest(row["prev_hash"], forged))
        )

    with_entries(database_url, 4, forge)
    code, out = verify(database_url)
    assert code == 1
    assert "audit entry #3 was reordered" in out


def test_a_deleted_entry_is_named(database_url: str) -> None:
    async def remove(tx: Tx) -> None:
        await tx.execute(delete(audit_log).where(audit_log.c.id == 2))

    with_entries(database_url, 4, remove)
    code, out = verify(database_url)
    assert code == 1
    assert "audit entry #2 was deleted" in out


def test_reordered_entries_are_named(database_url: str) -> None:
    async def swap(tx: Tx) -> None:
        await tx.execute(update(audit_log).where(audit_log.c.id == 2).values(id=-2))
        await tx.execute(update(audit_log).where(audit_log.c.id == 3).values(id=2))
        await tx.execute(update(audit_log).where(audit_log.c.id == -2).values(id=3))

    with_entries(database_url, 4, swap)
    code, out = verify(database_url)
    assert code == 1
    assert "audit entry #2 was reordered" in out


def test_a_malformed_database_url_exits_2() -> None:
    result = CliRunner().invoke(app, ["audit", "verify"], env={"DATABASE_URL": "mysql://x"})
    assert result.exit_code == 2


def test_an_unreachable_database_exits_2_with_a_sentence(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'ikoma.db'}"
    result = CliRunner().invoke(app, ["audit", "verify"], env={"DATABASE_URL": missing})
    assert result.exit_code == 2
    assert "cannot verify the audit log" in result.output


def test_verify_names_a_tail_cut_after_a_signed_checkpoint(database_url: str, tmp_path: Path) -> None:
    """The checkpoint the reconciler signs is outside the database: cutting entries off is seen."""
    from ikoma.services.audit_anchor import checkpoint, load_anchor

    async def sign() -> None:
        db = Database(database_url)
        try:
            await checkpoint(db, load_anchor(None, tmp_path))
        finally:
            await db.dispose()

    with_entries(database_url, 4)
    asyncio.run(sign())
    with_entries(database_url, 0, tamper=lambda tx: tx.execute(delete(audit_log).where(audit_log.c.id >= 3)))

    env = {"DATABASE_URL": database_url, "IKOMA_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["audit", "verify"], env=env)

    assert result.exit_code == 1, result.output
    assert "audit entry #3 was truncated" in result.output + result.stderr


def test_verify_refuses_checkpoints_whose_key_was_removed(database_url: str, tmp_path: Path) -> None:
    from ikoma.services.audit_anchor import load_anchor

    with_entries(database_url, 1)
    anchor = load_anchor(None, tmp_path)
    anchor.append_checkpoint(1, "00" * 32)
    (tmp_path / "audit.key").unlink()

    env = {"DATABASE_URL": database_url, "IKOMA_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["audit", "verify"], env=env)

    assert result.exit_code == 1
    assert "audit key" in result.output + result.stderr
