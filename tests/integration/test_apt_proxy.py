"""apt's proxy reaches agent machines through the claim answer of their apt orders, on both backends."""

from __future__ import annotations

import json
from typing import Any

from ikoma.api.schemas import ClaimedOrder
from ikoma.services import servers
from ikoma.storage.database import Database
from tests.integration import helpers as h

PROXY = "http://apt-cacher.example.net:3142"


def answer(claimed: dict[str, Any] | None) -> dict[str, Any]:
    """The claim-next answer's JSON, as the runner route writes it."""
    assert claimed is not None
    return dict(json.loads(ClaimedOrder.model_validate(claimed).model_dump_json(by_alias=True)))


async def proxied_pair(database: Database, name: str, mode: str = "proxy") -> h.Pair:
    pair = await h.make_pair(database, name)
    await servers.update_server(database, pair.server_id, {"apt_proxy_mode": mode, "apt_proxy_url": PROXY})
    return pair


async def test_an_apt_order_on_a_proxy_mode_server_is_claimed_with_the_proxy(database: Database) -> None:
    pair = await proxied_pair(database, "web-1")
    analyze = await h.make_order(database, pair.server_id, "apt.analyze")
    upgrade = await h.make_order(database, pair.server_id, "apt.upgrade", params={"dryRun": True})
    dispatcher = h.make_dispatcher(database)

    first = answer(await dispatcher.claim_once(pair.identity))
    second = answer(await dispatcher.claim_once(pair.identity))

    assert [first["id"], second["id"]] == [analyze["id"], upgrade["id"]]
    assert first["aptProxyUrl"] == second["aptProxyUrl"] == PROXY
    assert "aptProxyUrl" not in first["params"]  # no param: what the order asked for is unchanged


async def test_a_ping_on_a_proxy_mode_server_is_claimed_without_the_proxy(database: Database) -> None:
    pair = await proxied_pair(database, "web-1")
    await h.make_order(database, pair.server_id)  # system.test_ping

    claimed = answer(await h.make_dispatcher(database).claim_once(pair.identity))

    assert claimed["playbookKey"] == "system.test_ping"
    assert "aptProxyUrl" not in claimed


async def test_an_apt_order_on_a_direct_mode_server_is_claimed_without_the_proxy(database: Database) -> None:
    direct = await proxied_pair(database, "web-1", mode="direct")  # a URL kept from before: not used
    await h.make_order(database, direct.server_id, "apt.analyze")
    default = await h.make_pair(database, "web-2")
    await h.make_order(database, default.server_id, "apt.analyze")
    dispatcher = h.make_dispatcher(database)

    assert "aptProxyUrl" not in answer(await dispatcher.claim_once(direct.identity))
    assert "aptProxyUrl" not in answer(await dispatcher.claim_once(default.identity))


async def test_the_proxy_of_the_claim_is_the_servers_at_claim_time(database: Database) -> None:
    pair = await proxied_pair(database, "web-1")
    await h.make_order(database, pair.server_id, "apt.analyze")
    await h.make_order(database, pair.server_id, "apt.analyze")
    dispatcher = h.make_dispatcher(database)
    assert answer(await dispatcher.claim_once(pair.identity))["aptProxyUrl"] == PROXY

    await servers.update_server(database, pair.server_id, {"apt_proxy_mode": "direct"})

    assert "aptProxyUrl" not in answer(await dispatcher.claim_once(pair.identity))
