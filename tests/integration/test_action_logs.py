"""The action log (`/action_logs`, `/action_logs/search`, seed 002) on SQLite and PostgreSQL: filters,
keyset pages without gap or repeat while entries are appended, stats over the filters, and who may read it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from ikoma.domain.errors import BadRequest, Invalid
from ikoma.services import action_logs, audit
from ikoma.services.action_logs import Filters, decode_cursor, encode_cursor
from ikoma.storage.database import Database
from tests import support


def entry(n: int, **overrides: Any) -> audit.AuditEntry:
    fields: dict[str, Any] = {
        "channel": "rest",
        "actor_kind": "api_client",
        "actor_id": f"client-{n % 3}",
        "token_prefix": f"ikoma_pre{n % 3}",
        "role": "operator",
        "action": "POST /v1/orders",
        "target": "/v1/orders",
        "params": None,
        "outcome": "allowed",
    }
    fields.update(overrides)
    return audit.AuditEntry(**fields)


async def every_page(db: Database, filters: Filters, *, limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await action_logs.search(db, filters, cursor=cursor, limit=limit, stats=False)
        found += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            return found


async def test_filters_narrow_by_actor_action_target_outcome_and_channel(database: Database) -> None:
    await audit.record(database, entry(1))
    await audit.record(
        database, entry(2, action="POST /v1/orders/{order_id}/cancel", target="/v1/orders/x/cancel")
    )
    await audit.record(database, entry(3, outcome="denied", status_code=403, reason="forbidden"))
    await audit.record(
        database, entry(4, channel="execute", action="execute:apps.health", target="web-1/app")
    )
    await audit.record(database, entry(5, actor_kind="admin", actor_id="admin", token_prefix="ika_abcd"))
    await audit.record(database, entry(6, actor_kind="user", actor_id="u-42", token_prefix=None))

    async def ids(**where: Any) -> list[int]:
        return [e["id"] for e in await action_logs.list_entries(database, Filters(**where))]

    assert await ids() == [6, 5, 4, 3, 2, 1]
    assert await ids(actor="client-1") == [4, 1]
    assert await ids(actor="ikoma_pre2") == [2]  # a token prefix names its client too
    assert await ids(actor="admin") == [5]
    assert await ids(actor="user:u-42") == [6]
    assert await ids(actor="api_client:u-42") == []  # the kind must match as well
    assert await ids(action="POST /v1/orders") == [6, 5, 3, 2, 1]  # a prefix
    assert await ids(action="POST /v1/orders/{") == [2]
    assert await ids(action="execute:") == [4]
    assert await ids(action="%") == []  # LIKE wildcards are literal
    assert await ids(target="/v1/orders/") == [2]
    assert await ids(outcome="denied") == [3]
    assert await ids(channel="execute") == [4]
    assert await ids(actor="client-0", outcome="denied") == [3]
    shown = (await action_logs.list_entries(database, Filters(outcome="denied")))[0]
    assert (shown["statusCode"], shown["reason"], shown["result"]) == (403, "forbidden", "denied")


async def test_time_range_keeps_entries_from_inclusive_to_exclusive(database: Database) -> None:
    for n in range(6):
        await audit.record(database, entry(n))
    whole = await action_logs.list_entries(database, Filters())
    stamps = sorted({datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in whole})
    split = stamps[len(stamps) // 2]
    since = await action_logs.list_entries(database, Filters(since=split))
    until = await action_logs.list_entries(database, Filters(until=split))
    expected_since = [
        e["id"] for e in whole if datetime.fromisoformat(e["at"].replace("Z", "+00:00")) >= split
    ]
    assert [e["id"] for e in since] == expected_since
    assert sorted(e["id"] for e in since + until) == sorted(e["id"] for e in whole)
    with pytest.raises(Invalid) as refused:
        await action_logs.list_entries(database, Filters(since=split, until=split))
    assert refused.value.reason == "invalid_time_range"


async def test_pages_newest_first_never_skip_nor_repeat_while_entries_are_appended(
    database: Database,
) -> None:
    for n in range(30):
        await audit.record(database, entry(n))
    mine = Filters(actor="client-1")
    appended: list[int] = []

    async def append_more() -> None:
        for n in range(40):
            appended.append(await audit.record(database, entry(n)))
            await asyncio.sleep(0)

    first = await action_logs.search(database, mine, limit=4, stats=False)
    newest_seen = first["items"][0]["id"]
    writer = asyncio.create_task(append_more())
    rest: list[dict[str, Any]] = []
    cursor = first["nextCursor"]
    while cursor is not None:
        page = await action_logs.search(database, mine, cursor=cursor, limit=4, stats=False)
        rest += page["items"]
        cursor = page["nextCursor"]
        await asyncio.sleep(0)  # let the writer in between pages
    await writer
    seen = [e["id"] for e in first["items"] + rest]
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen))
    # every matching entry that existed when paging began, each once; the later ones on a new first page
    expected = [e["id"] for e in await every_page(database, mine, limit=1000) if e["id"] <= newest_seen]
    assert seen == expected
    assert len(expected) == 10
    assert appended
    assert min(appended) > newest_seen
    fresh = await action_logs.search(database, mine, limit=1, stats=False)
    assert fresh["items"][0]["id"] > newest_seen


async def test_concurrent_writers_never_make_a_reader_skip_an_entry(database: Database) -> None:
    """Several writers at once (PostgreSQL: really in parallel); a reader pages behind them."""
    for n in range(5):
        await audit.record(database, entry(n))

    async def writer(w: int) -> None:
        for n in range(15):
            await audit.record(database, entry(n, actor_id=f"writer-{w}"))
            await asyncio.sleep(0)  # SQLite runs inline: a writer would otherwise never yield

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    pages: list[list[int]] = []
    newest: int | None = None
    while not all(t.done() for t in writers) or newest is None:
        first = await action_logs.search(database, Filters(), limit=3, stats=False)
        newest = first["items"][0]["id"]
        ids = [e["id"] for e in first["items"]]
        cursor = first["nextCursor"]
        while cursor is not None:
            page = await action_logs.search(database, Filters(), cursor=cursor, limit=3, stats=False)
            ids += [e["id"] for e in page["items"]]
            cursor = page["nextCursor"]
            await asyncio.sleep(0)  # SQLite runs inline: let the writers in between pages
        pages.append(ids)
        # the chain has no gaps: a walk from its newest entry sees every id down to 1, once
        assert ids == list(range(newest, 0, -1))
    await asyncio.gather(*writers)
    assert len({len(walk) for walk in pages}) >= 2  # the log grew while the reader paged


async def test_stats_count_every_matching_entry_by_action_and_outcome(database: Database) -> None:
    for n in range(5):
        await audit.record(database, entry(n))
    for n in range(3):
        await audit.record(database, entry(n, action="DELETE /v1/servers/{server_id}", outcome="denied"))
    await audit.record(database, entry(9, action="DELETE /v1/servers/{server_id}", outcome="error"))
    page = await action_logs.search(database, Filters(), limit=2)
    assert len(page["items"]) == 2
    assert page["stats"] == {
        "total": 9,
        "byOutcome": {"allowed": 5, "denied": 3, "error": 1},
        "byAction": [
            {"action": "POST /v1/orders", "count": 5},
            {"action": "DELETE /v1/servers/{server_id}", "count": 4},
        ],
        "otherActions": 0,
    }
    # the same filters as the page, and the same on every page
    narrowed = await action_logs.search(database, Filters(action="DELETE"), limit=1)
    older = await action_logs.search(
        database, Filters(action="DELETE"), limit=1, cursor=narrowed["nextCursor"]
    )
    assert narrowed["stats"] == older["stats"]
    assert narrowed["stats"]["byOutcome"] == {"allowed": 0, "denied": 3, "error": 1}
    assert (await action_logs.search(database, Filters(), stats=False))["stats"] is None


async def test_stats_name_the_most_frequent_actions_and_sum_the_rest(database: Database) -> None:
    count = action_logs.STATS_ACTIONS + 2
    for n in range(count):
        await audit.record(database, entry(n, action=f"execute:tool.{n:03d}"))
    await audit.record(database, entry(0, action="execute:tool.000"))
    stats = (await action_logs.search(database, Filters()))["stats"]
    assert len(stats["byAction"]) == action_logs.STATS_ACTIONS
    assert stats["byAction"][0] == {"action": "execute:tool.000", "count": 2}
    assert stats["otherActions"] == 2
    assert stats["total"] == count + 1


async def test_a_cursor_not_handed_out_is_refused(database: Database) -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    for forged in ("x", "NDI", encode_cursor(0), "YWw6LTE", "!!!"):
        with pytest.raises(BadRequest) as refused:
            await action_logs.search(database, Filters(), cursor=forged)
        assert refused.value.reason == "invalid_cursor"


# --- over HTTP: the routes, their parameters and who may call them ------------------------------------
@pytest.fixture
def live_server(shared_server: support.LiveServer) -> support.LiveServer:
    return shared_server


@pytest.fixture
def admin(live_server: support.LiveServer) -> Iterator[httpx.Client]:
    with live_server.admin() as client:
        yield client


def client_token(admin: httpx.Client, role: str) -> str:
    answer = admin.post("/v1/api-clients", json={"name": f"al-{uuid.uuid4().hex[:8]}", "role": role})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def test_only_admins_read_the_action_log_and_refusals_are_audited(
    live_server: support.LiveServer, admin: httpx.Client
) -> None:
    operator = client_token(admin, "operator")
    for path in ("/action_logs", "/action_logs/search"):
        assert admin.get(path).status_code == 200
        assert httpx.get(live_server.url + path).status_code == 401
        refused = httpx.get(live_server.url + path, headers={"x-api-key": operator})
        assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden")
        lowered = admin.get(path, headers={"x-role": "observer"})
        assert lowered.status_code == 403
    # a forged mutation by the operator is refused and shows in the log, under its token prefix
    forged = httpx.delete(
        live_server.url + "/v1/api-clients/00000000-0000-0000-0000-000000000000",
        headers={"x-api-key": operator},
    )
    assert forged.status_code == 403
    found = admin.get("/action_logs/search", params={"actor": operator[:14], "outcome": "denied"}).json()
    assert [e["action"] for e in found["items"]] == ["DELETE /v1/api-clients/{client_id}"]
    assert found["stats"]["byOutcome"]["denied"] == 1


def test_search_pages_and_filters_over_http(admin: httpx.Client) -> None:
    marker = f"al-{uuid.uuid4().hex[:8]}"
    for _ in range(5):
        assert admin.post("/v1/api-clients", json={"name": marker, "role": "observer"}).status_code == 201
    where = {"action": "POST /v1/api-clients", "from": "2000-01-01T00:00:00Z", "channel": "rest"}
    whole = admin.get("/action_logs", params={**where, "limit": 1000}).json()["items"]
    assert len(whole) >= 5
    ids: list[int] = []
    cursor: str | None = None
    while True:
        params = {**where, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/action_logs/search", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["stats"]["byAction"][0]["action"] == "POST /v1/api-clients"
        ids += [e["id"] for e in body["items"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert ids[: len(whole)] == [e["id"] for e in whole][: len(ids)]
    assert ids == sorted(set(ids), reverse=True)


@pytest.mark.parametrize(
    ("params", "status", "reason"),
    [
        ({"cursor": "bm9wZQ"}, 400, "invalid_cursor"),
        ({"from": "2030-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}, 422, "invalid_time_range"),
        ({"outcome": "maybe"}, 422, "validation_error"),
        ({"since": "2020-01-01"}, 422, "unknown_query_parameter"),
        ({"to": "9999-12-31T23:00:00-02:00"}, 422, "validation_error"),  # past the last UTC time
        ({"limit": "0"}, 422, "validation_error"),
    ],
)
def test_bad_parameters_are_refused_with_their_reason(
    admin: httpx.Client, params: dict[str, str], status: int, reason: str
) -> None:
    answer = admin.get("/action_logs/search", params=params)
    assert (answer.status_code, answer.json()["reason"]) == (status, reason), answer.text
