"""Concurrent writes each keep their own outcome: all commit, a failing one undoes only its own work."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from ikoma.storage.database import Database
from ikoma.storage.tables import runners


class Boom(Exception):
    pass


def _runner_row(n: int) -> dict[str, object]:
    return {
        "id": f"0b7f6f6e-1c0e-4d2b-9a55-{n:012d}",
        "name": f"runner-{n}",
        "token_hash": f"{n:064d}",
        "token_prefix": "ikr_test",
        "capabilities": [],
    }


async def _names(database: Database) -> set[str]:
    async with database.read() as tx:
        return set((await tx.execute(select(runners.c.name))).scalars())


async def _write(database: Database, n: int, seen: list[int], *, fail: bool = False) -> None:
    async with database.write() as tx:
        await tx.execute(insert(runners).values(_runner_row(n)))
        tx.after_commit(lambda: seen.append(n))
        if fail:
            raise Boom


async def test_concurrent_writes_all_commit_and_run_their_after_commit_actions(database: Database) -> None:
    seen: list[int] = []
    await asyncio.gather(*(_write(database, n, seen) for n in range(8)))
    assert sorted(seen) == list(range(8))
    assert await _names(database) == {f"runner-{n}" for n in range(8)}


async def test_a_failing_write_among_concurrent_ones_undoes_only_its_own_work(database: Database) -> None:
    seen: list[int] = []
    outcomes = await asyncio.gather(
        *(_write(database, n, seen, fail=n in (0, 3)) for n in range(6)), return_exceptions=True
    )
    assert [isinstance(o, Boom) for o in outcomes] == [n in (0, 3) for n in range(6)]
    assert sorted(seen) == [1, 2, 4, 5]  # never for a write that rolled back
    assert await _names(database) == {f"runner-{n}" for n in (1, 2, 4, 5)}


async def test_a_write_refused_by_the_database_fails_alone(database: Database) -> None:
    seen: list[int] = []
    await _write(database, 1, seen)
    # the same primary key again, between two good concurrent writes
    writes = [_write(database, 2, seen), _write(database, 1, seen), _write(database, 3, seen)]
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert outcomes[0] is None
    assert outcomes[2] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert sorted(seen) == [1, 2, 3]
    async with database.read() as tx:
        count = (await tx.execute(select(func.count()).select_from(runners))).scalar_one()
    assert count == 3


@pytest.mark.parametrize("readers", [1, 4])
async def test_a_read_started_after_a_write_returned_sees_it(database: Database, readers: int) -> None:
    seen: list[int] = []

    async def write_then_read(n: int) -> bool:
        await _write(database, n, seen)
        return f"runner-{n}" in await _names(database)

    assert all(await asyncio.gather(*(write_then_read(n) for n in range(readers))))
