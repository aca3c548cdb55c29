"""The database handle's transaction rules, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import func, insert, select

from ikoma.storage.database import Database
from ikoma.storage.tables import runners


class Boom(Exception):
    pass


async def _runner_count(database: Database) -> int:
    async with database.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(runners))).scalar_one())


def _runner_row(name: str) -> dict[str, object]:
    return {
        "id": "0b7f6f6e-1c0e-4d2b-9a55-6f1d2c3b4a59",
        "name": name,
        "token_hash": "0" * 64,
        "token_prefix": "ikr_test",
        "capabilities": [],
    }


async def test_after_commit_actions_run_once_the_transaction_committed(database: Database) -> None:
    seen: list[int] = []
    async with database.write() as tx:
        await tx.execute(insert(runners).values(_runner_row("committed")))
        tx.after_commit(lambda: seen.append(1))
        assert seen == []  # not before the commit
    assert seen == [1]
    assert await _runner_count(database) == 1


async def test_a_failed_transaction_writes_nothing_and_runs_no_after_commit_action(
    database: Database,
) -> None:
    seen: list[int] = []

    async def write_then_fail() -> None:
        async with database.write() as tx:
            await tx.execute(insert(runners).values(_runner_row("rolled-back")))
            tx.after_commit(lambda: seen.append(1))
            raise Boom

    with pytest.raises(Boom):
        await write_then_fail()
    assert seen == []
    assert await _runner_count(database) == 0
