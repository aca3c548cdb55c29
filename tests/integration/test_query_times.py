"""Times in query parameters: a time past the last UTC time Python holds is a 422, on every route that
takes one (the audit log answered 500 for it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.inprocess_api import running_app

PAST_THE_END = "9999-12-31T23:00:00-02:00"


@pytest.mark.parametrize(
    ("route", "parameter"),
    [("/v1/audit", "since"), ("/v1/audit", "until"), ("/action_logs", "to"), ("/action_logs/search", "from")],
)
async def test_a_time_past_the_last_utc_time_is_refused_with_422(
    database_url: str, tmp_path: Path, route: str, parameter: str
) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        answer = await client.get(route, params={parameter: PAST_THE_END})
    assert answer.status_code == 422, answer.text
    assert answer.json()["reason"] == "validation_error"
    assert answer.json()["errors"][0]["path"] == parameter


async def test_an_offset_time_is_compared_in_utc(database_url: str, tmp_path: Path) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        await client.post("/v1/servers", json={"name": "utc-check"})
        everything = (await client.get("/v1/audit")).json()
        later = (await client.get("/v1/audit", params={"since": "2999-01-01T00:00:00+05:00"})).json()
    assert everything["items"], everything
    assert later["items"] == []
