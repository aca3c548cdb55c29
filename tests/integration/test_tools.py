"""`execute_tool`, the one code path of /execute and MCP, on SQLite and PostgreSQL.

A simulated runner (the dispatcher, as the runner routes call it) completes the tool's order while
the caller waits, so every answer shape is checked against a real order row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from ikoma import bootstrap
from ikoma.bootstrap import Context
from ikoma.domain.errors import DomainError, Forbidden, Invalid, NotFound
from ikoma.domain.lifecycle import OrderStatus
from ikoma.domain.roles import Role
from ikoma.services import audit, servers, tools
from ikoma.services.identity import Principal
from ikoma.settings import Settings
from ikoma.storage.tables import audit_log, orders
from tests.integration import helpers

APP = "shop"


@pytest.fixture
async def ctx(database_url: str, tmp_path: Path) -> AsyncIterator[Context]:
    built = bootstrap.build(
        Settings(database_url=database_url, data_dir=tmp_path, audit_log=tmp_path / "audit.jsonl")
    )
    yield built
    await built.db.dispose()


def principal(role: Role, **extra: Any) -> Principal:
    fields: dict[str, Any] = {
        "kind": "api_client",
        "id": "0b8a3f0e-5d55-4f57-9a4e-3e4d1f7c2a11",
        "name": "ci",
        "role": role,
        "granted_role": role,
        "token_prefix": "ikc_AbCd",
    }
    fields.update(extra)
    return Principal(**fields)


async def runner_answers(
    ctx: Context,
    pair: helpers.Pair,
    outcome: OrderStatus,
    *,
    data: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> str:
    """Claim the next order of the pair (waiting for it to exist), run it, and report `outcome`."""
    dispatcher = ctx.dispatcher
    for _ in range(500):
        claimed = await dispatcher.claim_once(pair.identity)
        if claimed is not None:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the tool's order never became claimable")
    started = await dispatcher.start(pair.identity, str(claimed["id"]), claimed["lease_token"])
    steps: list[dict[str, Any]] = [{"name": "probe", "status": "SUCCEEDED", "durationMs": 1}]
    if data is not None:
        steps.append({"name": "result", "status": "SUCCEEDED", "durationMs": 1, "data": data})
    report = {"version": "v2", "summary": "done", "durationMs": 2, "steps": steps, "errors": errors or []}
    await dispatcher.complete(
        pair.identity,
        str(started["id"]),
        outcome=outcome,
        report=report,
        report_version="v2",
        report_summary="done",
        lease_token=started["lease_token"],
    )
    return str(started["id"])


async def entries(ctx: Context) -> list[dict[str, Any]]:
    page = await audit.list_entries(ctx.db, limit=1000)
    return list(reversed(page["items"]))


async def order_count(ctx: Context) -> int:
    async with ctx.db.read() as tx:
        return int((await tx.execute(select(func.count()).select_from(orders))).scalar_one())


async def test_a_tool_answers_its_result_step_data_and_audits_the_call_with_its_order(ctx: Context) -> None:
    pair = await helpers.make_pair(ctx.db, "web-1")
    caller = asyncio.create_task(
        tools.execute_tool(
            ctx, principal(Role.OBSERVER), tool="apps.health", params={"appName": APP}, server_id="web-1"
        )
    )
    order_id = await runner_answers(
        ctx, pair, OrderStatus.SUCCEEDED, data={"health": "healthy", "processes": []}
    )
    outcome = await caller
    assert outcome.status_code == 200
    assert outcome.body == {"health": "healthy", "processes": []}
    assert outcome.order_id == order_id
    assert outcome.order_status == "SUCCEEDED"
    assert outcome.headers == {"X-Order-Id": order_id}
    [entry] = await entries(ctx)
    assert entry["outcome"] == "allowed"
    assert entry["action"] == "execute:apps.health"
    assert entry["orderId"] == order_id
    assert entry["tokenPrefix"] == "ikc_AbCd"
    assert entry["role"] == "observer"
    assert entry["target"] == f"web-1/{APP}"
    assert entry["params"] == {"appName": APP}
    # the JSONL mirror got the same entry once the transaction committed
    mirror = (await asyncio.to_thread(Path(str(ctx.settings.audit_log)).read_text)).splitlines()
    assert len(mirror) == 1
    assert order_id in mirror[0]


async def test_a_tool_error_code_answers_422_with_the_one_error_shape_and_an_error_entry(
    ctx: Context,
) -> None:
    pair = await helpers.make_pair(ctx.db, "web-1")
    caller = asyncio.create_task(
        tools.execute_tool(
            ctx, principal(Role.OBSERVER), tool="apps.validate", params={"appName": APP}, server_id="web-1"
        )
    )
    error = {"code": "missing_variables", "message": "POSTGRES_PASSWORD is not set"}
    order_id = await runner_answers(ctx, pair, OrderStatus.FAILED, data={"error": error}, errors=[error])
    outcome = await caller
    assert outcome.status_code == 422
    assert outcome.body == {
        "reason": "missing_variables",
        "message": "POSTGRES_PASSWORD is not set",
        "details": {"orderId": order_id, "status": "FAILED", "errors": [error]},
    }
    assert outcome.headers == {"X-Order-Id": order_id}
    allowed, failed = await entries(ctx)
    assert (allowed["outcome"], failed["outcome"]) == ("allowed", "error")
    assert failed["orderId"] == order_id
    assert (failed["statusCode"], failed["reason"]) == (422, "missing_variables")


async def test_a_failure_without_a_code_is_a_502_and_a_timed_out_order_a_504(ctx: Context) -> None:
    pair = await helpers.make_pair(ctx.db, "web-1")
    caller = asyncio.create_task(
        tools.execute_tool(
            ctx, principal(Role.OBSERVER), tool="platform.check", params={}, server_id=pair.server_id
        )
    )
    await runner_answers(ctx, pair, OrderStatus.FAILED, errors=[{"message": "boom"}])
    outcome = await caller
    assert (outcome.status_code, outcome.body["reason"], outcome.body["message"]) == (
        502,
        "tool_failed",
        "boom",
    )

    timed_out = tools.failure_answer({"id": "x", "status": "TIMEOUT", "report": None})
    cancelled = tools.failure_answer({"id": "x", "status": "CANCELLED", "report": None})
    assert (timed_out[0], timed_out[1]["reason"]) == (504, "tool_timeout")
    assert (cancelled[0], cancelled[1]["reason"]) == (409, "order_cancelled")


async def test_a_cancelled_order_answers_409(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    caller = asyncio.create_task(
        tools.execute_tool(
            ctx,
            principal(Role.OPERATOR),
            tool="deploy.up",
            params={"appName": APP},
            server_id="web-1",
            wait=10,
        )
    )
    for _ in range(500):
        async with ctx.db.read() as tx:
            order_id = (await tx.execute(select(orders.c.id))).scalar()
        if order_id:
            break
        await asyncio.sleep(0.01)
    from ikoma.services import orders as order_service

    await order_service.cancel_order(ctx.db, str(order_id), reason="changed my mind")
    outcome = await caller
    assert outcome.status_code == 409
    assert outcome.body["reason"] == "order_cancelled"
    assert outcome.body["details"]["orderId"] == str(order_id)


async def test_an_order_still_running_at_the_deadline_answers_202_with_its_location(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    outcome = await tools.execute_tool(
        ctx,
        principal(Role.OBSERVER),
        tool="apps.status",
        params={"appName": APP},
        server_id="web-1",
        wait=0.1,
    )
    assert outcome.status_code == 202
    assert outcome.body == {
        "orderId": outcome.order_id,
        "status": "QUEUED",
        "location": f"/v1/orders/{outcome.order_id}",
    }
    assert outcome.headers == {"X-Order-Id": outcome.order_id}


async def test_wait_is_capped_by_the_setting(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    ctx.settings.execute_max_wait = 0.2
    started = asyncio.get_running_loop().time()
    outcome = await tools.execute_tool(
        ctx,
        principal(Role.OBSERVER),
        tool="apps.status",
        params={"appName": APP},
        server_id="web-1",
        wait=3600,
    )
    assert outcome.status_code == 202
    assert asyncio.get_running_loop().time() - started < 2


@pytest.mark.parametrize(
    ("role", "tool", "needed"),
    [(Role.OBSERVER, "apps.init", "builder"), (Role.BUILDER, "deploy.up", "operator")],
)
async def test_a_role_too_low_is_refused_with_the_role_needed_and_audited_as_denied(
    ctx: Context, role: Role, tool: str, needed: str
) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    with pytest.raises(Forbidden) as refused:
        await tools.execute_tool(ctx, principal(role), tool=tool, params={"appName": APP}, server_id="web-1")
    assert refused.value.details["required"] == needed
    assert await order_count(ctx) == 0
    [entry] = await entries(ctx)
    assert (entry["outcome"], entry["statusCode"], entry["reason"]) == ("denied", 403, "forbidden")
    assert entry["action"] == f"execute:{tool}"
    assert entry["role"] == role.label


async def test_a_lowered_role_is_the_one_checked(ctx: Context) -> None:
    """An admin credential acting as observer (X-Role) cannot deploy."""
    await helpers.make_pair(ctx.db, "web-1")
    lowered = principal(Role.OBSERVER, kind="admin", id="admin", granted_role=Role.ADMIN)
    with pytest.raises(Forbidden):
        await tools.execute_tool(ctx, lowered, tool="deploy.up", params={"appName": APP}, server_id="web-1")


async def test_an_unknown_tool_is_404_and_audited(ctx: Context) -> None:
    with pytest.raises(NotFound) as refused:
        await tools.execute_tool(ctx, principal(Role.ADMIN), tool="apps.nope", params={})
    assert refused.value.reason == "tool_not_found"
    [entry] = await entries(ctx)
    assert (entry["outcome"], entry["statusCode"], entry["reason"]) == ("denied", 404, "tool_not_found")


@pytest.mark.parametrize(
    "params",
    [{"appName": APP}, {"appName": APP, "confirm": "other"}, {"appName": APP, "confirm": APP.upper()}],
)
async def test_a_destructive_tool_needs_confirm_equal_to_the_app_name(
    ctx: Context, params: dict[str, Any]
) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    with pytest.raises(Invalid) as refused:
        await tools.execute_tool(
            ctx, principal(Role.OPERATOR), tool="apps.remove", params=params, server_id="web-1"
        )
    assert refused.value.reason == "confirmation_required"
    assert await order_count(ctx) == 0
    [entry] = await entries(ctx)
    assert (entry["outcome"], entry["reason"]) == ("denied", "confirmation_required")


@pytest.mark.parametrize(
    "name", ["../x", "%2e%2e", "a\u0000b", "/etc", "MyApp", "a;rm -rf /", "$(id)", "shop\n", "-rf", "a`id`"]
)
async def test_traversal_and_injection_app_names_are_refused_before_any_order(
    ctx: Context, name: str
) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    with pytest.raises(Invalid) as refused:
        await tools.execute_tool(
            ctx, principal(Role.ADMIN), tool="apps.init", params={"appName": name}, server_id="web-1"
        )
    assert refused.value.status_code == 422
    assert refused.value.details["errors"][0]["path"] == "appName"
    assert await order_count(ctx) == 0
    [entry] = await entries(ctx)
    assert entry["outcome"] == "denied"
    assert entry["target"] is None


async def test_params_are_validated_against_the_tool_schema_with_their_paths(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    with pytest.raises(Invalid) as refused:
        await tools.execute_tool(
            ctx,
            principal(Role.OBSERVER),
            tool="apps.logs",
            params={"appName": APP, "lines": 0, "x": 1},
            server_id="web-1",
        )
    paths = {e["path"] for e in refused.value.details["errors"]}
    assert paths == {"lines", "<body>"}


async def test_secrets_in_params_are_masked_in_the_audit_log(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    secret_sql = "ALTER ROLE shop PASSWORD 'hunter2-very-secret'"
    await tools.execute_tool(
        ctx,
        principal(Role.BUILDER),
        tool="db.migrate",
        params={"appName": APP, "sql": secret_sql},
        server_id="web-1",
        wait=0,
    )
    [entry] = await entries(ctx)
    assert entry["params"]["sql"]["masked"] is True
    async with ctx.db.read() as tx:
        stored = str((await tx.execute(select(audit_log))).mappings().all())
    assert "hunter2" not in stored
    assert "hunter2" not in await asyncio.to_thread(Path(str(ctx.settings.audit_log)).read_text)


async def test_without_a_server_the_local_one_is_used_else_server_required(ctx: Context) -> None:
    with pytest.raises(Invalid) as refused:
        await tools.execute_tool(ctx, principal(Role.OBSERVER), tool="platform.check", params={})
    assert refused.value.reason == "server_required"

    local = await servers.create_server(
        db := ctx.db, helpers.server_fields("local-box", labels={"ikoma": "local"})
    )
    await helpers.make_server(db, "other")
    outcome = await tools.execute_tool(
        ctx, principal(Role.OBSERVER), tool="platform.check", params={}, wait=0
    )
    async with db.read() as tx:
        server_id = (
            await tx.execute(select(orders.c.server_id).where(orders.c.id == outcome.order_id))
        ).scalar()
    assert server_id == local["id"]

    ctx.settings.default_server = "other"
    outcome = await tools.execute_tool(
        ctx, principal(Role.OBSERVER), tool="platform.check", params={}, wait=0
    )
    async with db.read() as tx:
        chosen = (
            await tx.execute(select(orders.c.server_id).where(orders.c.id == outcome.order_id))
        ).scalar()
    assert chosen != local["id"]


async def test_a_scoped_client_cannot_reach_a_server_outside_its_scope(ctx: Context) -> None:
    inside = await helpers.make_server(ctx.db, "inside")
    await helpers.make_server(ctx.db, "outside")
    scoped = principal(Role.OPERATOR, server_ids=frozenset({str(inside["id"])}))
    with pytest.raises(NotFound) as refused:
        await tools.execute_tool(
            ctx, scoped, tool="apps.status", params={"appName": APP}, server_id="outside"
        )
    assert refused.value.reason == "server_not_found"
    outcome = await tools.execute_tool(
        ctx, scoped, tool="apps.status", params={"appName": APP}, server_id="inside", wait=0
    )
    assert outcome.status_code == 202


async def test_if_the_audit_entry_cannot_be_written_no_order_is_created(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    await helpers.make_pair(ctx.db, "web-1")

    async def broken(*_: Any, **__: Any) -> int:
        raise OSError("audit storage is gone")

    monkeypatch.setattr(audit, "append", broken)
    with pytest.raises(tools.AuditUnavailable) as refused:
        await tools.execute_tool(
            ctx,
            principal(Role.OPERATOR),
            tool="deploy.up",
            params={"appName": APP},
            server_id="web-1",
            wait=0,
        )
    assert await order_count(ctx) == 0
    # 503 audit_unavailable with a fixed sentence: the storage's own message is not passed on
    assert (refused.value.status_code, refused.value.reason) == (503, "audit_unavailable")
    assert refused.value.message == tools.AUDIT_UNAVAILABLE


async def test_list_tools_says_which_tools_a_role_may_run(ctx: Context) -> None:
    listed = {t["key"]: t for t in await tools.list_tools(ctx, principal(Role.BUILDER))}
    assert listed["apps.init"]["allowed"] is True
    assert listed["deploy.up"]["allowed"] is False
    assert listed["apps.health"]["readOnly"] is True
    assert listed["apps.remove"] | {"paramsSchema": None} == {
        "key": "apps.remove",
        "name": "Remove app",
        "description": listed["apps.remove"]["description"],
        "paramsSchema": None,
        "minRole": "operator",
        "destructive": True,
        "readOnly": False,
        "allowed": False,
    }
    assert "appName" in listed["apps.remove"]["paramsSchema"]["properties"]


async def test_audit_verify_names_an_edited_a_deleted_and_a_reordered_entry(ctx: Context) -> None:
    await helpers.make_pair(ctx.db, "web-1")
    for _ in range(4):
        await tools.execute_tool(
            ctx,
            principal(Role.OBSERVER),
            tool="apps.status",
            params={"appName": APP},
            server_id="web-1",
            wait=0,
        )
    assert (await audit.verify(ctx.db)).ok

    async with ctx.db.write() as tx:
        await tx.execute(update(audit_log).where(audit_log.c.id == 2).values(outcome="denied"))
    report = await audit.verify(ctx.db)
    assert not report.ok
    assert report.problem is not None
    assert (report.problem.id, report.problem.kind) == (2, "edited")


async def test_refusals_raise_domain_errors_the_api_maps_to_statuses(ctx: Context) -> None:
    with pytest.raises(DomainError) as refused:
        await tools.execute_tool(
            ctx, principal(Role.OBSERVER), tool="platform.check", params={}, server_id="nope"
        )
    assert (refused.value.status_code, refused.value.reason) == (404, "server_not_found")
