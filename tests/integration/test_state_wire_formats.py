"""The machine-state answers speak one language on SQLite and PostgreSQL: ids dashed, times ISO 8601 UTC
with `Z`, and what was never measured is null (unknown), not a made-up 0 or false. Checked on what the
routes send (the service's view through the route's response model, as FastAPI and MCP render it).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ikoma.api import state as routes
from ikoma.api.state_schemas import FleetSummary, ImportantMessagePublic, MachineStatePublic, TimelinePage
from ikoma.services import fleet, messages, state, timeline
from ikoma.storage.database import Database
from tests.integration.helpers import STALE_AFTER, make_order, make_pair
from tests.integration.state_helpers import ingesting_dispatcher, run_order
from tests.state_reports import Produced, ReportMaker

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def wire(model: type[BaseModel], value: Any) -> Any:
    return model.model_validate(value).model_dump(mode="json", by_alias=True)


async def state_wire(db: Database, server_id: str) -> dict[str, Any]:
    view = await state.get_state(db, server_id, stale_after=STALE_AFTER)
    shown: dict[str, Any] = wire(MachineStatePublic, routes._state_wire(view))
    return shown


async def fleet_item(db: Database) -> dict[str, Any]:
    found = await fleet.summary(db, server_ids=None, stale_after=STALE_AFTER)
    view = found["items"][0]["view"]
    item = {
        "server_id": view["server_id"],
        "server_name": view["server_name"],
        "up": view["online"],
        "health": view["health"],
        "attention": found["items"][0]["attention"],
        "apt_updates": view["apt_updates"],
        "apt_security": view["apt_security"],
        "reboot_required": view["apt_reboot_required"],
        "docker_status": view["docker_status"],
        "root_used_percent": view["root_used_percent"],
        "new_messages": 0,
        "last_error": None,
    }
    shown: dict[str, Any] = wire(FleetSummary, {**found, "items": [item]})["items"][0]
    return shown


@pytest.fixture
def maker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ReportMaker:
    (tmp_path / "fakes").mkdir()
    return ReportMaker(tmp_path / "fakes", monkeypatch)


async def test_a_server_never_analysed_shows_unknown_counts_until_its_playbooks_ran(
    database: Database, maker: ReportMaker, tmp_path: Path
) -> None:
    pair = await make_pair(database)
    fresh = await state_wire(database, pair.server_id)
    assert fresh["apt"] == {
        "status": None,
        "updates": None,
        "security": None,
        "rebootRequired": None,
        "analyzedAt": None,
    }
    assert (fresh["docker"]["installed"], fresh["docker"]["unhealthy"], fresh["docker"]["stacks"]) == (
        None,
        None,
        None,
    )
    assert fresh["metrics"]["diskWarnings"] is None
    assert fresh["hardwareWarnings"] is None
    assert fresh["health"] == "unknown"
    listed = await fleet_item(database)
    assert (listed["aptUpdates"], listed["aptSecurity"], listed["rebootRequired"]) == (None, None, None)

    # a failed run measures nothing either
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    await run_order(database, dispatcher, pair, await maker.apt_failing())
    broken = {"version": "v2", "summary": "docker.status failed", "durationMs": 1, "steps": [], "errors": []}
    await run_order(database, dispatcher, pair, Produced("docker.status", "FAILED", broken))
    failed = await state_wire(database, pair.server_id)
    assert (failed["apt"]["status"], failed["apt"]["updates"]) == ("error", None)
    assert (failed["docker"]["status"], failed["docker"]["installed"]) == ("error", None)

    await run_order(database, dispatcher, pair, await maker.apt_up_to_date())
    analysed = await state_wire(database, pair.server_id)
    assert (analysed["apt"]["updates"], analysed["apt"]["security"], analysed["apt"]["rebootRequired"]) == (
        0,
        0,
        False,
    )
    assert (await fleet_item(database))["aptUpdates"] == 0
    # a rebuild from the snapshots shows the same
    await state.rebuild_states(database, pair.server_id)
    assert await state_wire(database, pair.server_id) == analysed


async def test_timeline_order_ids_are_dashed_uuids(database: Database) -> None:
    pair = await make_pair(database)
    order = await make_order(database, pair.server_id)
    items, _ = await timeline.list_timeline(database, pair.server_id)
    shown = wire(TimelinePage, {"items": items, "next_cursor": None})["items"]
    assert [i["orderId"] for i in shown if i["type"].startswith("order.")] == [
        str(uuid.UUID(str(order["id"])))
    ]
    assert all(len(i["orderId"]) == 36 for i in shown if i["orderId"])


async def test_an_acknowledgement_is_timed_in_iso_8601_exactly_as_acknowledged_at(
    database: Database, maker: ReportMaker, tmp_path: Path
) -> None:
    pair = await make_pair(database)
    dispatcher = ingesting_dispatcher(database, tmp_path / "data")
    await run_order(database, dispatcher, pair, await maker.apt_analyze())
    [reboot] = [
        m
        for m in await messages.list_messages(database, pair.server_id)
        if m["category"] == "reboot_required"
    ]
    acked = await messages.acknowledge(database, pair.server_id, reboot["id"], actor="admin")
    shown = wire(ImportantMessagePublic, routes._message_wire(acked))
    [ack] = shown["acks"]
    assert ack["at"] == shown["acknowledgedAt"]
    assert ISO_UTC.fullmatch(ack["at"]), ack
    [stored] = acked["acks"]  # as kept in the row's JSON, too
    assert ISO_UTC.fullmatch(stored["at"]), stored
