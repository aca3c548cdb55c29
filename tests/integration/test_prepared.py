"""Prepared statements (storage/prepared.py) answer exactly as SQLAlchemy's own execute path does."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, exc, insert, select, update

from ikoma.domain.lifecycle import OrderStatus
from ikoma.storage.database import Database
from ikoma.storage.prepared import Prepared
from ikoma.storage.tables import order_events, orders

from .helpers import make_order, make_pair

_ORDER = select(orders).where(orders.c.id == bindparam("p_id"))
# a fixed IN list (expanded once at compile time) and a JSON, a boolean and timestamps in the result
_ACTIVE_ORDER = select(orders).where(
    orders.c.id == bindparam("p_id"),
    orders.c.status.in_([OrderStatus.QUEUED.value, OrderStatus.CLAIMED.value]),
    orders.c.cancel_requested.is_(False),
)


async def test_a_prepared_select_returns_the_rows_sqlalchemy_returns(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id, params={"message": "hi"})
    async with database.read() as tx:
        for statement in (_ORDER, _ACTIVE_ORDER):
            expected = (await tx.execute(statement, {"p_id": order["id"]})).mappings().one()
            got = (await tx.execute(Prepared(statement), {"p_id": order["id"]})).mappings().one()
            assert dict(got) == dict(expected)
            assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
        missing = await tx.execute(Prepared(_ORDER), {"p_id": "00000000-0000-4000-8000-000000000000"})
        assert missing.first() is None


async def test_a_prepared_update_sets_the_columns_named_by_the_parameters(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    by_id = Prepared(update(orders).where(orders.c.id == bindparam("p_id")).returning(orders.c.status_reason))
    async with database.write() as tx:
        row = (await tx.execute(by_id, {"p_id": order["id"], "status_reason": "first"})).one()
        assert row.status_reason == "first"
        row = (await tx.execute(by_id, {"p_id": order["id"], "report_summary": "x"})).one()
        assert row.status_reason == "first"  # a column left out of the parameters is left alone
    async with database.read() as tx:
        stored = (await tx.execute(_ORDER, {"p_id": order["id"]})).mappings().one()
    assert (stored["status_reason"], stored["report_summary"]) == ("first", "x")


async def test_a_prepared_insert_of_several_rows_stores_each_of_them(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    rows = [
        {
            "order_id": order["id"],
            "from_status": None,
            "to_status": "QUEUED",
            "reason": f"test-{n}",
            "attempt": 0,
            "actor": "test",
            "details": {"n": n},
        }
        for n in range(3)
    ]
    async with database.write() as tx:
        await tx.execute(Prepared(insert(order_events)), rows)
    async with database.read() as tx:
        stored = (
            await tx.execute(
                select(order_events.c.reason, order_events.c.details)
                .where(order_events.c.order_id == order["id"], order_events.c.reason.like("test-%"))
                .order_by(order_events.c.id)
            )
        ).all()
    assert [(r.reason, r.details) for r in stored] == [(f"test-{n}", {"n": n}) for n in range(3)]


async def test_a_prepared_statement_refuses_a_missing_parameter_and_wraps_driver_errors(
    database: Database,
) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    with pytest.raises(exc.SQLAlchemyError):  # SQLAlchemy: StatementError; prepared: InvalidRequestError
        async with database.read() as tx:
            await tx.execute(Prepared(_ORDER), {})
    duplicate = {"id": order["id"], "server_id": pair.server_id, "playbook_key": "x", "action": "run"}
    with pytest.raises(exc.IntegrityError):  # as SQLAlchemy raises it: outage handling sees the same types
        async with database.write() as tx:
            await tx.execute(Prepared(insert(orders)), {**duplicate, "params": {}, "status": "QUEUED"})
