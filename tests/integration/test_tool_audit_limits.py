"""What a tool call puts in the audit log always fits its columns, so the entry is written on PostgreSQL
(which refuses an over-long value) as on SQLite: a runner's free-text error code, an unknown tool's name.
"""

from __future__ import annotations

import asyncio

import pytest

from ikoma.bootstrap import Context
from ikoma.domain.errors import NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.roles import Role
from ikoma.services import tools
from tests.integration import helpers
from tests.integration.test_tools import ctx, entries, principal, runner_answers

__all__ = ["ctx"]  # the fixture, shared with the tool path's own tests


async def test_a_runners_long_error_code_is_answered_and_audited_cut_to_the_column(ctx: Context) -> None:
    pair = await helpers.make_pair(ctx.db, "web-1")
    code = "very_long_error_code_" * 8
    caller = asyncio.create_task(
        tools.execute_tool(
            ctx, principal(Role.OBSERVER), tool="apps.health", params={"appName": "shop"}, server_id="web-1"
        )
    )
    await runner_answers(ctx, pair, OrderStatus.FAILED, errors=[{"code": code, "message": "it broke"}])
    outcome = await caller
    assert (outcome.status_code, outcome.body["reason"]) == (422, code)
    allowed, failed = await entries(ctx)
    assert (allowed["outcome"], failed["outcome"]) == ("allowed", "error")
    assert failed["reason"] == code[:64]


async def test_an_unknown_tool_name_of_any_length_is_refused_and_audited(ctx: Context) -> None:
    for name in ("x" * 193, "y" * 201, "z" * 10_000):
        with pytest.raises(NotFound) as refused:
            await tools.execute_tool(ctx, principal(Role.ADMIN), tool=name, params={})
        assert refused.value.reason == "tool_not_found"
    logged = await entries(ctx)
    assert [e["action"][:9] for e in logged] == ["execute:x", "execute:y", "execute:z"]
    assert all(len(e["action"]) <= 200 for e in logged)
    assert logged[0]["action"].endswith("x…")  # 8 + 193 characters do not fit: cut, and marked
