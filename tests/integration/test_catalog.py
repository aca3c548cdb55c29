"""The catalog on SQLite and PostgreSQL: the seed (idempotent, concurrent, never undoing an admin's change),
the sync from a provider's offers (added, updated, marked unavailable, rows kept), what a deployment is
checked against.

The sync is driven by `OffersOnly` (catalog_helpers.py), a small object implementing the Provider
interface's `offers()` (the rest refuses): the sync logic needs nothing else from a provider. The routes
and the CLI: test_catalog_api.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from ikoma.domain.errors import Invalid
from ikoma.providers.base import ProviderError
from ikoma.services import catalog, catalog_changes, catalog_seed, catalog_sync, events
from ikoma.storage.database import Database
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones
from tests.integration.catalog_helpers import OffersOnly, by_code

CATALOG_TABLES = (providers, regions, zones, instance_types, instance_type_zones, models)


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as tx:
        return {
            t.name: int((await tx.execute(select(func.count()).select_from(t))).scalar_one())
            for t in CATALOG_TABLES
        }


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
    await catalog_changes.update_provider(database, str(mock["id"]), {"name": "Simulator", "enabled": False})
    zone = by_code(await catalog.list_zones(database, provider="mock"))["mock-par-1"]
    await catalog_changes.update_zone(database, str(zone["id"]), {"enabled": False})
    gpu = by_code(await catalog.list_instance_types(database, provider="mock"))["MOCK-GPU-S"]
    await catalog_changes.update_instance_type(database, str(gpu["id"]), {"hourly_price_eur": "0.30"})
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
    await catalog_changes.update_instance_type(database, str(gpu_s["id"]), {"name": "Small GPU"})
    await catalog_changes.set_type_zones(
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
    await catalog_changes.update_zone(database, zone_ids["mock-par-2"], {"enabled": False})
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
