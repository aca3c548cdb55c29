"""A tool that fails because its request was wrong (a mistyped app) is the caller's error: the machine's
health, its important messages and the fleet summary do not change; a machine error still turns it red.
Real reports of the real tools (runner/apps), ingested at completion on SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ikoma.domain.lifecycle import OrderStatus
from ikoma.runner.agent import build_report, order_status
from ikoma.runner.execution import ExecutionContext
from ikoma.runner.playbooks import REGISTRY
from ikoma.services import fleet, messages, reports, state
from ikoma.services.dispatch import Dispatcher
from ikoma.storage.database import Database
from tests.integration.helpers import STALE_AFTER, Pair, claim_and_start, make_order, make_pair
from tests.integration.state_helpers import ingesting_dispatcher, run_order
from tests.state_reports import Produced, ReportMaker


async def tool_report(key: str, params: dict[str, Any]) -> Produced:
    """Run the real tool on this machine (under IKOMA_APPS_ROOT) and report it as the runner agent does."""
    ctx = ExecutionContext("order-caller-error", params)
    result = await REGISTRY[key](ctx, params)
    return Produced(key, order_status(result, ctx), build_report(result, 10, ctx.masker))


async def run_tool(
    db: Database, dispatcher: Dispatcher, pair: Pair, key: str, params: dict[str, Any]
) -> tuple[Produced, dict[str, Any]]:
    """An order of the tool with `params`, run for real and completed with its report."""
    await make_order(db, pair.server_id, key, params=params)
    running = await claim_and_start(dispatcher, pair.identity)
    produced = await tool_report(key, params)
    completed = await dispatcher.complete(
        pair.identity,
        str(running["id"]),
        outcome=OrderStatus(produced.status),
        report=produced.report,
        report_version="v2",
        report_summary=produced.report["summary"],
        lease_token=running["lease_token"],
    )
    return produced, completed


@pytest.fixture
def apps_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "apps"
    root.mkdir()
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(root))
    return root


async def test_a_mistyped_app_is_the_callers_error_and_leaves_the_machine_healthy(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, apps_root: Path
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    (tmp_path / "fakes").mkdir()
    await run_order(
        database, dispatcher, pair, await ReportMaker(tmp_path / "fakes", monkeypatch).apt_up_to_date()
    )
    assert (await state.get_state(database, pair.server_id, stale_after=STALE_AFTER))["health"] == "ok"

    typo, completed = await run_tool(database, dispatcher, pair, "apps.status", {"appName": "shopp"})
    assert typo.status == "FAILED"
    assert [e["code"] for e in typo.report["errors"]] == ["app_not_found"]

    view = await state.get_state(database, pair.server_id, stale_after=STALE_AFTER)
    assert view["health"] == "ok"
    assert view["last_error_order_id"] is None
    assert "apps.status" not in view["outcomes"]
    assert await messages.list_messages(database, pair.server_id) == []
    summary = await fleet.summary(database, server_ids=None, stale_after=STALE_AFTER)
    assert summary["by_health"]["error"] == 0
    assert not [reason for reason in summary["items"][0]["attention"] if "failed" in reason]
    # the order keeps its report: the caller's error is answered, not forgotten
    items, _ = await reports.list_reports(database, pair.server_id, order_id=str(completed["id"]))
    assert [r["status"] for r in items] == ["FAILED"]
    # and a rebuild from the snapshots agrees
    await state.rebuild_states(database, pair.server_id)
    assert (await state.get_state(database, pair.server_id, stale_after=STALE_AFTER))["health"] == "ok"


async def test_a_machine_error_still_turns_the_server_red_and_a_later_typo_does_not_clear_it(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    (tmp_path / "not-a-dir").write_text("a file where the apps root should be\n")
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(tmp_path / "not-a-dir"))
    broken, failed = await run_tool(
        database, dispatcher, pair, "apps.init", {"appName": "shop", "runtime": "process"}
    )
    assert [e["code"] for e in broken.report["errors"]] == ["filesystem_error"]

    apps = tmp_path / "apps"
    apps.mkdir()
    monkeypatch.setenv("IKOMA_APPS_ROOT", str(apps))
    typo, _ = await run_tool(database, dispatcher, pair, "apps.status", {"appName": "shopp"})
    assert [e["code"] for e in typo.report["errors"]] == ["app_not_found"]

    view = await state.get_state(database, pair.server_id, stale_after=STALE_AFTER)
    assert view["health"] == "error"
    assert view["last_error_order_id"] == str(failed["id"])
    found = await messages.list_messages(database, pair.server_id)
    assert [m["message"] for m in found] == [f"apps.init failed: {broken.report['summary']}"]
