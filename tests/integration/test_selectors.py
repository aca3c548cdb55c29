"""Selectors against the servers table (services/selectors.py), and `GET /v1/servers?where=`, on SQLite
and PostgreSQL: every form, the SQL narrowing agreeing with the selector, scope, and bad selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ikoma.domain.errors import Invalid
from ikoma.domain.selectors import parse
from ikoma.services import selectors, servers
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables import runners
from tests.integration import helpers as h
from tests.integration.inprocess_api import as_client, running_app

ODD_KEY = 'team "x", ops'


async def seen(db: Database, runner_id: str, seconds_ago: float, *, revoked: bool = False) -> None:
    """The runner's last heartbeat, `seconds_ago` before the database clock."""
    values: dict[str, Any] = {"last_heartbeat_at": db_now(-seconds_ago)}
    if revoked:
        values["revoked_at"] = db_now()
    async with db.write() as tx:
        await tx.execute(update(runners).where(runners.c.id == runner_id).values(values))


async def fleet(db: Database) -> dict[str, str]:
    """web-1 online, web-2 offline (seen long ago), db-1 offline (runner revoked), db-2 never seen
    (runner attached, no heartbeat), misc never seen (no runner), gone deleted; by name -> id."""
    made: dict[str, str] = {}
    for name, labels in [
        ("web-1", {"env": "prod", "role": "web"}),
        ("web-2", {"env": "dev", "role": "web"}),
        ("db-1", {"env": "prod", "role": "db", "retired": "yes"}),
        ("db-2", {"env": "prod", "role": "db", ODD_KEY: "a, b"}),
        ("misc", {}),
        ("gone", {"env": "prod"}),
    ]:
        server = await servers.create_server(db, h.server_fields(name, labels=labels))
        made[name] = str(server["id"])
    for name in ("web-1", "web-2", "db-1", "db-2"):
        runner = await h.make_runner(db, f"runner-{name}")
        await h.attach(db, made[name], str(runner["id"]))
        if name == "web-1":
            await seen(db, str(runner["id"]), 5)
        elif name == "web-2":
            await seen(db, str(runner["id"]), h.STALE_AFTER + 60)
        elif name == "db-1":
            await seen(db, str(runner["id"]), 5, revoked=True)
    await servers.delete_server(db, made.pop("gone"))
    return made


async def chosen(db: Database, selector: str, scope: frozenset[str] | None = None) -> list[str]:
    found = await selectors.select_servers(db, parse(selector), server_ids=scope, stale_after=h.STALE_AFTER)
    return sorted(s["name"] for s in found)


async def narrowed(db: Database, selector: str) -> list[str]:
    """What the SQL conditions alone return (the selector's Python match not applied)."""
    state = selectors.connection_state(h.STALE_AFTER)
    query = selectors.WITH_RUNNER.where(*selectors.narrowing(db.dialect, parse(selector), state))
    async with db.read() as tx:
        return sorted(r["name"] for r in (await tx.execute(query)).mappings())


CASES = [
    ("env=prod", ["db-1", "db-2", "web-1"]),
    ("env!=prod", ["misc", "web-2"]),
    ("role in (web,db)", ["db-1", "db-2", "web-1", "web-2"]),
    ("role notin (db)", ["misc", "web-1", "web-2"]),
    ("retired", ["db-1"]),
    ("!retired", ["db-2", "misc", "web-1", "web-2"]),
    (f'"{ODD_KEY.replace(chr(34), chr(92) + chr(34))}"="a, b"', ["db-2"]),
    ("state=online", ["web-1"]),
    ("state=offline", ["db-1", "web-2"]),
    ("state=never_seen", ["db-2", "misc"]),
    ("state notin (online,offline)", ["db-2", "misc"]),
    ("env=prod,state!=online,!retired", ["db-2"]),
]


@pytest.mark.parametrize(("selector", "expected"), CASES)
async def test_label_and_state_terms_are_decided_alike_by_sql_and_by_the_selector(
    database: Database, selector: str, expected: list[str]
) -> None:
    await fleet(database)
    assert await chosen(database, selector) == expected
    assert await narrowed(database, selector) == expected


async def test_name_globs_are_matched_after_the_query(database: Database) -> None:
    await fleet(database)
    assert await chosen(database, "name=web-*") == ["web-1", "web-2"]
    assert await chosen(database, "name in (db-?,mis?)") == ["db-1", "db-2", "misc"]
    assert await chosen(database, "name!=*-1,env=prod") == ["db-2"]
    assert await chosen(database, "name=WEB-*") == []


async def test_a_deleted_server_is_never_selected(database: Database) -> None:
    await fleet(database)
    assert "gone" not in await chosen(database, "name=*")


async def test_scope_limits_the_selection_to_the_callers_servers(database: Database) -> None:
    made = await fleet(database)
    scope = frozenset({made["web-1"], made["db-1"]})
    assert await chosen(database, "env=prod", scope) == ["db-1", "web-1"]
    assert await chosen(database, "env=prod", frozenset()) == []


async def test_each_server_carries_its_connection_state(database: Database) -> None:
    await fleet(database)
    found = await selectors.select_servers(
        database, parse("name=*"), server_ids=None, stale_after=h.STALE_AFTER
    )
    assert {s["name"]: s["connection_state"] for s in found} == {
        "web-1": "online",
        "web-2": "offline",
        "db-1": "offline",
        "db-2": "never_seen",
        "misc": "never_seen",
    }


async def test_a_bad_selector_is_refused_before_any_query(database: Database) -> None:
    with pytest.raises(Invalid) as refused:
        parse("env in (prod")
    assert refused.value.reason == "invalid_selector"


# --- over HTTP -------------------------------------------------------------------------------------


async def test_servers_route_filters_by_where_and_explains_a_bad_one(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        made = await fleet(ctx.db)
        answer = await client.get("/v1/servers", params={"where": "env=prod,state!=offline"})
        assert answer.status_code == 200
        assert sorted(s["name"] for s in answer.json()) == ["db-2", "web-1"]
        # the older `label` filter still narrows, ANDed with the selector
        both = await client.get("/v1/servers", params={"where": "env=prod", "label": "role=db"})
        assert sorted(s["name"] for s in both.json()) == ["db-1", "db-2"]

        bad = await client.get("/v1/servers", params={"where": "env in (prod"})
        assert bad.status_code == 422
        body = bad.json()
        assert body["reason"] == "invalid_selector"
        assert body["details"]["position"] == 12
        assert body["details"]["expected"] == "`,` or `)` to close the list of values"

        issued = await client.post(
            "/v1/api-clients",
            json={"name": "scoped", "role": "observer", "serverIds": [made["web-2"], made["misc"]]},
        )
        assert issued.status_code == 201, issued.text
        async with as_client(client, issued.json()["token"]) as scoped:
            seen_by_scoped = await scoped.get("/v1/servers", params={"where": "name=*"})
        assert sorted(s["name"] for s in seen_by_scoped.json()) == ["misc", "web-2"]
