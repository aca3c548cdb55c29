"""The catalog on SQLite and PostgreSQL: the seed (idempotent, concurrent, never undoing an admin's change),
the sync from a provider's offers (added, updated, marked unavailable, rows kept), the routes' validation
with stable reasons, and who may read and change it.

The sync is driven by `OffersOnly`, a small object implementing the Provider interface's `offers()` (the
rest refuses): the sync logic needs nothing else from a provider.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ikoma.cli.main import app as cli
from ikoma.domain.errors import Invalid
from ikoma.providers.base import InstanceRequest, Offer, ProviderError, ProviderInstance
from ikoma.services import catalog, catalog_seed, catalog_sync, events
from ikoma.storage.database import Database
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones
from tests import support
from tests.integration.inprocess_api import as_client, running_app

CATALOG_TABLES = (providers, regions, zones, instance_types, instance_type_zones, models)


class OffersOnly:
    """A provider that only lists offers (the catalog sync's one call), or fails doing so."""

    def __init__(self, name: str, offers: list[Offer] | None = None, failure: ProviderError | None = None):
        self.name = name
        self.current = list(offers or [])
        self.failure = failure

    async def offers(self) -> list[Offer]:
        if self.failure is not None:
            raise self.failure
        return list(self.current)

    async def create(self, request: InstanceRequest) -> ProviderInstance:
        raise NotImplementedError

    async def get(self, zone: str, provider_id: str) -> ProviderInstance | None:
        raise NotImplementedError

    async def list_owned(self, owner: str) -> list[ProviderInstance]:
        raise NotImplementedError

    async def start(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def stop(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def terminate(self, zone: str, provider_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as tx:
        return {
            t.name: int((await tx.execute(select(func.count()).select_from(t))).scalar_one())
            for t in CATALOG_TABLES
        }


def by_code(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["code"]: r for r in rows}


async def listings(db: Database, type_code: str, provider: str = "mock") -> dict[str, tuple[bool, bool]]:
    kind = by_code(await catalog.list_instance_types(db, provider=provider))[type_code]
    return {
        z["zone_code"]: (z["available"], z["enabled"])
        for z in await catalog.zones_of_type(db, str(kind["id"]))
    }


SEED_ROWS = {
    "providers": 2,
    "regions": 1 + 3,
    "zones": 2 + 4,
    "instance_types": 3 + 12,
    "instance_type_zones": len(catalog_seed.MOCK_OFFERS) + len(catalog_seed.SCALEWAY_OFFERS),
    "models": len(catalog_seed.MODELS),
}


# --- the seed -------------------------------------------------------------------------------------------
async def test_the_seed_twice_inserts_every_row_once(database: Database) -> None:
    first = await catalog_seed.apply(database)
    assert await counts(database) == SEED_ROWS
    assert first == sum(SEED_ROWS.values())
    assert await catalog_seed.apply(database) == 0
    assert await counts(database) == SEED_ROWS
    enabled = {p["code"]: p["enabled"] for p in await catalog.list_providers(database)}
    assert enabled == {"mock": True, "scaleway": False}  # Scaleway waits for its credentials
    mock = by_code(await catalog.list_instance_types(database, provider="mock"))
    assert mock["MOCK-GPU-S"]["hourly_price_eur"] == Decimal("0.25")
    assert mock["MOCK-GPU-S"]["zones"] == ["mock-par-1", "mock-par-2"]
    assert mock["MOCK-GPU-M"]["zones"] == ["mock-par-2"]  # listed in mock-par-1, out of stock there
    h100 = by_code(await catalog.list_instance_types(database, provider="scaleway"))["H100-SXM-2-80G"]
    assert (h100["hourly_price_eur"], h100["gpu_count"], h100["gpu_memory_mb"]) == (
        Decimal("6.018"),
        2,
        81920,
    )
    assert "Qwen/Qwen2.5-0.5B-Instruct" in {m["name"] for m in await catalog.list_models(database)}


async def test_a_provider_is_seeded_enabled_only_when_configured(database: Database) -> None:
    await catalog_seed.apply(database, configured=("scaleway",))
    assert {p["code"]: p["enabled"] for p in await catalog.list_providers(database)} == {
        "mock": False,
        "scaleway": True,
    }


async def test_replicas_seeding_at_once_insert_each_row_once(database_url: str) -> None:
    """Four processes' worth of databases (PostgreSQL: four connections really in parallel)."""
    handles = [Database(database_url) for _ in range(4)]
    try:
        inserted = await asyncio.gather(*(catalog_seed.apply(db) for db in handles))
        assert sum(inserted) == sum(SEED_ROWS.values())
        assert await counts(handles[0]) == SEED_ROWS
    finally:
        for db in handles:
            await db.dispose()


async def test_the_seed_never_undoes_an_admins_change(database: Database) -> None:
    await catalog_seed.apply(database)
    mock = by_code(await catalog.list_providers(database))["mock"]
    await catalog.update_provider(database, str(mock["id"]), {"name": "Simulator", "enabled": False})
    zone = by_code(await catalog.list_zones(database, provider="mock"))["mock-par-1"]
    await catalog.update_zone(database, str(zone["id"]), {"enabled": False})
    gpu = by_code(await catalog.list_instance_types(database, provider="mock"))["MOCK-GPU-S"]
    await catalog.update_instance_type(database, str(gpu["id"]), {"hourly_price_eur": "0.30"})
    assert await catalog_seed.apply(database) == 0
    again = by_code(await catalog.list_providers(database))["mock"]
    assert (again["name"], again["enabled"]) == ("Simulator", False)
    assert by_code(await catalog.list_zones(database, provider="mock"))["mock-par-1"]["enabled"] is False
    price = by_code(await catalog.list_instance_types(database, provider="mock"))["MOCK-GPU-S"][
        "hourly_price_eur"
    ]
    assert price == Decimal("0.30")


# --- the sync -------------------------------------------------------------------------------------------
async def test_a_sync_of_the_seeded_offers_changes_nothing(database: Database) -> None:
    await catalog_seed.apply(database)
    result = await catalog_sync.sync(database, OffersOnly("mock", list(catalog_seed.MOCK_OFFERS)))
    assert {
        k: result[k] for k in ("offers", "added", "updated", "unavailable", "unchanged", "zones_added")
    } == {
        "offers": len(catalog_seed.MOCK_OFFERS),
        "added": 0,
        "updated": 0,
        "unavailable": 0,
        "unchanged": 3,
        "zones_added": 0,
    }
    assert await counts(database) == SEED_ROWS


async def test_a_sync_adds_updates_and_marks_unavailable_without_deleting(database: Database) -> None:
    await catalog_seed.apply(database)
    kept = [o for o in catalog_seed.MOCK_OFFERS if o.instance_type != "MOCK-GPU-M"]  # no longer sold
    repriced = [
        replace(o, hourly_price_eur=Decimal("0.2750")) if o.instance_type == "MOCK-GPU-S" else o for o in kept
    ]
    # MOCK-CPU-S sold out in mock-par-1; a new type in a new zone of a new region
    changed = [
        replace(o, available=False) if (o.instance_type, o.zone) == ("MOCK-CPU-S", "mock-par-1") else o
        for o in repriced
    ]
    new = replace(
        catalog_seed.MOCK_OFFERS[0],
        instance_type="MOCK-GPU-XL",
        zone="mock-ams-1",
        region="mock-ams",
        gpu_count=8,
    )
    gpu_s = by_code(await catalog.list_instance_types(database, provider="mock"))["MOCK-GPU-S"]
    await catalog.update_instance_type(database, str(gpu_s["id"]), {"name": "Small GPU"})
    await catalog.set_type_zones(
        database,
        str(gpu_s["id"]),
        [str(by_code(await catalog.list_zones(database, provider="mock"))["mock-par-2"]["id"])],
    )

    result = await catalog_sync.sync(database, OffersOnly("mock", [*changed, new]), actor="admin")

    assert (result["added"], result["updated"], result["unavailable"], result["unchanged"]) == (1, 1, 1, 1)
    assert result["zones_added"] == 1
    types = by_code(await catalog.list_instance_types(database, provider="mock"))
    assert set(types) == {"MOCK-CPU-S", "MOCK-GPU-S", "MOCK-GPU-M", "MOCK-GPU-XL"}  # nothing deleted
    assert types["MOCK-GPU-M"]["available"] is False
    assert types["MOCK-GPU-M"]["zones"] == []
    assert (types["MOCK-GPU-S"]["hourly_price_eur"], types["MOCK-GPU-S"]["name"]) == (
        Decimal("0.275"),
        "Small GPU",
    )
    assert types["MOCK-GPU-XL"]["zones"] == ["mock-ams-1"]
    assert types["MOCK-CPU-S"]["zones"] == ["mock-par-2"]
    assert await listings(database, "MOCK-CPU-S") == {"mock-par-1": (False, True), "mock-par-2": (True, True)}
    # the admin took MOCK-GPU-S out of mock-par-1: a sync says where it is sold, never re-offers it
    assert await listings(database, "MOCK-GPU-S") == {"mock-par-1": (True, False), "mock-par-2": (True, True)}
    assert await listings(database, "MOCK-GPU-M") == {
        "mock-par-1": (False, True),
        "mock-par-2": (False, True),
    }
    async with database.read() as tx:
        synced = [e for e in await events.read(tx, after=0, limit=100) if e.kind == "catalog.synced"]
    assert [
        (e.actor, e.data["added"], e.data["updated"], e.data["unavailable"], e.data["zonesAdded"])
        for e in synced
    ] == [("admin", 1, 1, 1, 1)]

    back = await catalog_sync.sync(database, OffersOnly("mock", list(catalog_seed.MOCK_OFFERS)))
    assert (back["added"], back["updated"], back["unavailable"]) == (
        0,
        2,
        1,
    )  # GPU-M back, GPU-S price; XL gone
    assert (
        by_code(await catalog.list_instance_types(database, provider="mock"))["MOCK-GPU-M"]["available"]
        is True
    )


async def test_a_sync_skips_and_names_offers_the_catalog_cannot_hold(database: Database) -> None:
    good = catalog_seed.MOCK_OFFERS[0]
    bad = replace(good, instance_type="MOCK CPU", zone="mock-par-9")
    result = await catalog_sync.sync(database, OffersOnly("other", [good, bad]))
    assert result["rejected"] == [{"offer": "MOCK CPU@mock-par-9", "reason": "invalid_code"}]
    assert result["added"] == 1
    assert [z["code"] for z in await catalog.list_zones(database, provider="other")] == [good.zone]
    # a provider the seed does not know gets its row, enabled
    assert by_code(await catalog.list_providers(database))["other"]["enabled"] is True


async def test_a_failed_offers_call_is_a_provider_error_and_changes_nothing(database: Database) -> None:
    await catalog_seed.apply(database)
    down = ProviderError("HTTP 503 from the API", reason="provider_unavailable", retryable=True, status=503)
    with pytest.raises(catalog_sync.ProviderFailed) as failed:
        await catalog_sync.sync(database, OffersOnly("mock", failure=down), actor="admin")
    assert (failed.value.status_code, failed.value.reason) == (502, "provider_unavailable")
    assert failed.value.details == {"provider": "mock", "retryable": True}
    assert await counts(database) == SEED_ROWS
    async with database.read() as tx:
        errors = [
            e
            for e in await events.read(tx, after=0, limit=100)
            if e.kind.startswith(("provider.", "catalog."))
        ]
    assert [(e.kind, e.data) for e in errors] == [
        ("provider.error", {"provider": "mock", "operation": "offers", "reason": "provider_unavailable"})
    ]


async def test_concurrent_syncs_count_each_change_once(database_url: str) -> None:
    first, second = Database(database_url), Database(database_url)
    try:
        await catalog_seed.apply(first)
        offers = [*catalog_seed.MOCK_OFFERS, replace(catalog_seed.MOCK_OFFERS[0], instance_type="MOCK-NEW")]
        results = await asyncio.gather(
            catalog_sync.sync(first, OffersOnly("mock", offers)),
            catalog_sync.sync(second, OffersOnly("mock", offers)),
        )
        assert sorted(r["added"] for r in results) == [0, 1]
        assert sorted(r["unchanged"] for r in results) == [3, 4]
        assert (await counts(first))["instance_types"] == SEED_ROWS["instance_types"] + 1
    finally:
        await first.dispose()
        await second.dispose()


# --- deployments ask the catalog ------------------------------------------------------------------------
async def test_check_deployable_answers_the_offer_or_the_first_reason_it_cannot_be_deployed(
    database: Database,
) -> None:
    await catalog_seed.apply(database)
    types = by_code(await catalog.list_instance_types(database))
    zone_ids = {z["code"]: str(z["id"]) for z in await catalog.list_zones(database)}
    model_ids = {m["name"]: str(m["id"]) for m in await catalog.list_models(database)}
    qwen = model_ids["Qwen/Qwen2.5-0.5B-Instruct"]

    async def check(type_code: str, zone: str, model: str = qwen) -> Any:
        async with database.read() as tx:
            return await catalog.check_deployable(
                tx, instance_type_id=str(types[type_code]["id"]), zone_id=zone_ids[zone], model_id=model
            )

    async def refused(type_code: str, zone: str, model: str = qwen) -> str:
        with pytest.raises(Invalid) as refusal:
            await check(type_code, zone, model)
        return refusal.value.reason

    found = await check("MOCK-GPU-S", "mock-par-1")
    assert (found.provider, found.zone, found.region, found.instance_type) == (
        "mock",
        "mock-par-1",
        "mock-par",
        "MOCK-GPU-S",
    )
    assert (found.hourly_price_eur, found.model_name, found.serving) == (
        Decimal("0.25"),
        "Qwen/Qwen2.5-0.5B-Instruct",
        "vllm",
    )
    assert await refused("MOCK-GPU-M", "mock-par-1") == "not_offered_in_zone"  # out of stock there
    assert await refused("MOCK-GPU-S", "fr-par-2") == "not_offered_in_zone"  # another provider's zone
    assert await refused("MOCK-CPU-S", "mock-par-1") == "model_too_large"
    assert await refused("L4-1-24G", "fr-par-2") == "provider_disabled"
    await catalog.update_zone(database, zone_ids["mock-par-2"], {"enabled": False})
    assert await refused("MOCK-GPU-S", "mock-par-2") == "zone_disabled"
    async with database.read() as tx:
        with pytest.raises(Invalid) as unknown:
            await catalog.check_deployable(
                tx, instance_type_id="nope", zone_id=zone_ids["mock-par-1"], model_id=qwen
            )
    assert (unknown.value.reason, unknown.value.details["field"]) == (
        "instance_type_not_found",
        "instance_type_id",
    )


# --- over HTTP: validation with stable reasons, and roles -----------------------------------------------
async def client_token(client: httpx.AsyncClient, role: str) -> str:
    answer = await client.post("/v1/api-clients", json={"name": f"catalog-{role}", "role": role})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


async def test_routes_answer_the_catalog_in_camel_case_with_prices_as_text(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        mock = by_code((await client.get("/providers")).json())["mock"]
        assert (mock["enabled"], mock["configured"]) == (True, True)
        assert {"createdAt", "updatedAt"} <= mock.keys()
        kinds = by_code((await client.get("/instance_types", params={"provider": "mock"})).json())
        gpu = kinds["MOCK-GPU-S"]
        assert (gpu["hourlyPriceEur"], gpu["ramMb"], gpu["gpuMemoryMb"], gpu["providerCode"]) == (
            "0.25",
            32768,
            24576,
            "mock",
        )
        zone = by_code(
            (await client.get("/zones", params={"provider": "mock", "region": "mock-par"})).json()
        )["mock-par-1"]
        assert zone["regionCode"] == "mock-par"
        in_zone = (await client.get(f"/zones/{zone['id']}/instance_types")).json()
        assert [t["code"] for t in in_zone] == ["MOCK-CPU-S", "MOCK-GPU-S"]
        listed = (await client.get(f"/zones/{zone['id']}/instance_types", params={"all": "true"})).json()
        assert [(t["code"], t["zoneAvailable"]) for t in listed] == [
            ("MOCK-CPU-S", True),
            ("MOCK-GPU-M", False),
            ("MOCK-GPU-S", True),
        ]
        where = (await client.get(f"/instance_types/{gpu['id']}/zones")).json()
        assert [(z["zoneCode"], z["available"], z["enabled"]) for z in where] == [
            ("mock-par-1", True, True),
            ("mock-par-2", True, True),
        ]
        assert [
            r["code"] for r in (await client.get("/regions", params={"provider": "scaleway"})).json()
        ] == [
            "fr-par",
            "nl-ams",
            "pl-waw",
        ]
        assert (await client.get("/instance_types", params={"available": "false"})).json() == []
        qwen = next(
            m for m in (await client.get("/models")).json() if m["name"] == "Qwen/Qwen2.5-0.5B-Instruct"
        )
        assert (qwen["gpuMemoryMb"], qwen["serving"]) == (2048, "vllm")
        assert (await client.get(f"/models/{qwen['id']}")).json() == qwen


async def test_changes_are_validated_with_stable_reasons(database_url: str, tmp_path: Path) -> None:
    async with running_app(database_url, tmp_path) as (client, _ctx):
        gpu = by_code((await client.get("/instance_types", params={"provider": "mock"})).json())["MOCK-GPU-S"]
        path = f"/instance_types/{gpu['id']}"
        for bad in ("-1", "abc", "0.1234567", "1000000", True):
            refused = await client.put(path, json={"hourlyPriceEur": bad})
            assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_price"), bad
        refused = await client.put(path, json={"name": "  "})
        assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_name")
        refused = await client.put(path, json={"enabled": None})
        assert refused.status_code == 422
        changed = await client.put(path, json={"hourlyPriceEur": 0.3, "name": "Small GPU", "enabled": False})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["hourlyPriceEur"], changed.json()["name"], changed.json()["enabled"]) == (
            "0.30",
            "Small GPU",
            False,
        )
        exact = await client.put(path, json={"hourlyPriceEur": "0.123456"})
        assert exact.json()["hourlyPriceEur"] == "0.123456"

        missing = await client.put(
            "/instance_types/00000000-0000-0000-0000-000000000000", json={"enabled": True}
        )
        assert (missing.status_code, missing.json()["reason"]) == (404, "instance_type_not_found")
        for path_name in ("providers", "regions", "zones"):
            gone = await client.put(
                f"/{path_name}/00000000-0000-0000-0000-000000000000", json={"enabled": True}
            )
            assert (gone.status_code, gone.json()["reason"]) == (404, f"{path_name[:-1]}_not_found")

        paris = by_code((await client.get("/zones", params={"provider": "scaleway"})).json())["fr-par-2"]
        other = await client.put(f"{path}/zones", json={"zoneIds": [paris["id"]]})
        assert (other.status_code, other.json()["reason"]) == (422, "zone_of_other_provider")
        unknown = await client.put(
            f"{path}/zones", json={"zoneIds": ["00000000-0000-0000-0000-000000000000"]}
        )
        assert (unknown.status_code, unknown.json()["reason"]) == (422, "zone_not_found")
        mock_zones = by_code((await client.get("/zones", params={"provider": "mock"})).json())
        only = await client.put(f"{path}/zones", json={"zoneIds": [mock_zones["mock-par-2"]["id"]]})
        assert [(z["zoneCode"], z["enabled"]) for z in only.json()] == [
            ("mock-par-1", False),
            ("mock-par-2", True),
        ]

        for body, reason in (
            ({"name": "not a model", "gpuMemoryMb": 1, "serving": "vllm"}, "invalid_model_name"),
            ({"name": "org/m", "gpuMemoryMb": -1, "serving": "vllm"}, "invalid_gpu_memory"),
            ({"name": "org/m", "gpuMemoryMb": 1, "serving": "docker"}, "invalid_serving"),
        ):
            refused = await client.post("/models", json=body)
            assert (refused.status_code, refused.json()["reason"]) == (422, reason)
        created = await client.post(
            "/models",
            json={"name": "org/m-1B", "gpuMemoryMb": 4096, "serving": "mock", "parameters": {"a": 1}},
        )
        assert created.status_code == 201, created.text
        assert {
            k: created.json()[k] for k in ("name", "gpuMemoryMb", "serving", "parameters", "enabled")
        } == {
            "name": "org/m-1B",
            "gpuMemoryMb": 4096,
            "serving": "mock",
            "parameters": {"a": 1},
            "enabled": True,
        }
        twice = await client.post("/models", json={"name": "org/m-1B", "gpuMemoryMb": 1, "serving": "mock"})
        assert (twice.status_code, twice.json()["reason"]) == (409, "model_exists")


async def test_everyone_reads_the_catalog_and_only_admins_change_or_sync_it(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        ctx.providers.clear()
        ctx.providers["mock"] = OffersOnly("mock", list(catalog_seed.MOCK_OFFERS))
        mock = by_code((await client.get("/providers")).json())["mock"]
        gpu = by_code((await client.get("/instance_types")).json())["MOCK-GPU-S"]
        zone = by_code((await client.get("/zones")).json())["mock-par-1"]
        region = by_code((await client.get("/regions")).json())["mock-par"]
        changes = [
            ("PUT", f"/providers/{mock['id']}", {"name": "Mock"}),
            ("PUT", f"/regions/{region['id']}", {"name": "Mock Paris"}),
            ("PUT", f"/zones/{zone['id']}", {"enabled": True}),
            ("PUT", f"/instance_types/{gpu['id']}", {"enabled": True}),
            ("PUT", f"/instance_types/{gpu['id']}/zones", {"zoneIds": [zone["id"]]}),
            ("POST", "/models", {"name": "org/roles", "gpuMemoryMb": 0, "serving": "mock"}),
            ("POST", "/catalog/sync", {"provider": "mock"}),
        ]
        reads = [
            "/providers",
            "/regions",
            "/zones",
            f"/zones/{zone['id']}/instance_types",
            "/instance_types",
            f"/instance_types/{gpu['id']}",
            f"/instance_types/{gpu['id']}/zones",
            "/models",
        ]
        for role in ("observer", "operator"):
            async with as_client(client, await client_token(client, role)) as caller:
                for path in reads:
                    assert (await caller.get(path)).status_code == 200, (role, path)
                for method, path, body in changes:
                    refused = await caller.request(method, path, json=body)
                    assert (refused.status_code, refused.json()["reason"]) == (403, "forbidden"), (role, path)
        async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as anonymous:
            assert (await anonymous.get("/providers")).status_code == 401
        async with as_client(client, await client_token(client, "admin")) as admin:
            for method, path, body in changes:
                answer = await admin.request(method, path, json=body)
                assert answer.status_code in (200, 201), (path, answer.text)
        audited = (await client.get("/action_logs", params={"action": "PUT /instance_types"})).json()["items"]
        assert {(e["outcome"], e["role"]) for e in audited} >= {("denied", "observer"), ("allowed", "admin")}


async def test_sync_route_answers_counts_and_refuses_an_unconfigured_provider(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(database_url, tmp_path) as (client, ctx):
        ctx.providers.clear()
        gone = [o for o in catalog_seed.MOCK_OFFERS if o.instance_type != "MOCK-GPU-M"]
        ctx.providers["mock"] = OffersOnly("mock", [*gone, replace(gone[0], instance_type="MOCK-NEW")])
        answer = await client.post("/catalog/sync")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["added"], body["updated"], body["unavailable"]) == (1, 0, 1)
        assert [
            (p["provider"], p["unchanged"], p["zonesAdded"], p["rejected"]) for p in body["providers"]
        ] == [("mock", 2, 0, [])]
        refused = await client.post("/catalog/sync", json={"provider": "scaleway"})
        assert (refused.status_code, refused.json()["reason"]) == (422, "provider_not_configured")
        ctx.providers["mock"] = OffersOnly(
            "mock", failure=ProviderError("down", reason="provider_timeout", retryable=True)
        )
        failed = await client.post("/catalog/sync", json={"provider": "mock"})
        assert (failed.status_code, failed.json()["reason"]) == (502, "provider_timeout")


async def test_syncing_the_real_mock_provider_finds_the_seed_as_it_is(
    database_url: str, tmp_path: Path
) -> None:
    """The Mock adapter (providers/mock) sells what the seed lists: a fresh install's sync changes nothing."""
    async with running_app(database_url, tmp_path) as (client, ctx):
        assert "mock" in ctx.providers
        answer = await client.post("/catalog/sync", json={"provider": "mock"})
        assert answer.status_code == 200, answer.text
        [mock] = answer.json()["providers"]
        assert (
            mock["added"],
            mock["updated"],
            mock["unavailable"],
            mock["zonesAdded"],
            mock["rejected"],
        ) == (
            0,
            0,
            0,
            0,
            [],
        )
        assert mock["unchanged"] == len({o.instance_type for o in catalog_seed.MOCK_OFFERS})


# --- the CLI against a real server ----------------------------------------------------------------------
def test_cli_lists_types_and_models_syncs_and_adds_a_model(shared_server: support.LiveServer) -> None:
    env = {"IKOMA_API_URL": shared_server.url, "IKOMA_ADMIN_KEY": shared_server.admin_key, "COLUMNS": "200"}

    def ikoma(*args: str) -> Any:
        return CliRunner().invoke(cli, ["catalog", *args], env={**env, "NO_COLOR": "1"})

    listed = ikoma("list", "--provider", "mock", "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(t["code"] for t in json.loads(listed.stdout)) == ["MOCK-CPU-S", "MOCK-GPU-M", "MOCK-GPU-S"]
    table = ikoma("list", "--zone", "mock-par-1")
    assert table.exit_code == 0, table.output
    gpu_line = next(line for line in table.stdout.splitlines() if "MOCK-GPU-S" in line)
    assert "1x Mock L4 (24 GiB)" in gpu_line
    assert "0.25" in gpu_line
    assert "MOCK-GPU-M" not in table.stdout  # listed in mock-par-1 but sold out there
    assert "provider off" in ikoma("list", "--provider", "scaleway").stdout  # no credentials here
    models = ikoma("models")
    assert "Qwen/Qwen2.5-0.5B-Instruct" in models.stdout
    synced = ikoma("sync", "--json")
    assert synced.exit_code == 0, synced.output
    assert [(p["provider"], p["added"]) for p in json.loads(synced.stdout)["providers"]] == [("mock", 0)]
    refused = ikoma("sync", "--provider", "nowhere")
    assert refused.exit_code == 1
    assert "provider_not_configured" in refused.output
    name = f"org/cli-{uuid.uuid4().hex[:8]}"
    added = ikoma("add-model", name, "--gpu-memory-mb", "0", "--serving", "mock", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["name"] == name
