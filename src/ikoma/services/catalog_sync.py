"""`POST /catalog/sync`: refresh a provider's part of the catalog from what it sells now (`offers()`).

The provider is asked first, outside any transaction; then one transaction (PostgreSQL: under the
catalog's advisory lock, so concurrent syncs and seeds apply one after the other) upserts regions,
zones, instance types and where each type is sold, following `domain.catalog.plan_sync`:
- a new type is added (enabled), a known one whose sizes, price or availability changed is updated;
- a known type no offer names is marked unavailable, never deleted (instances keep pointing at it);
- a listing (type in zone) no offer names is marked unavailable; the admin's `enabled` flags are kept.
An offer the catalog cannot hold (a malformed code, a negative or over-precise price) is skipped and
named in `rejected`. A failed `offers()` call is a `provider.error` event and a 502 with the provider's
reason; the catalog is left as it was.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import select, update

from ikoma.domain import catalog as rules
from ikoma.domain.errors import DomainError
from ikoma.providers.base import Provider, ProviderError
from ikoma.services import events
from ikoma.services.catalog import insert_for, lock_catalog
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, providers, regions, zones

log = structlog.get_logger("ikoma.catalog")


class ProviderFailed(DomainError):
    """502: the provider did not answer what was asked; `reason` is its stable ProviderError reason."""

    status_code = 502
    reason = "provider_unavailable"


async def sync(db: Database, provider: Provider, *, actor: str | None = None) -> dict[str, Any]:
    """Sync one provider; the counts (`added`, `updated`, `unavailable`, `unchanged`, `zones_added`,
    `offers`) and the offers `rejected` with their reason."""
    try:
        offers = await provider.offers()
    except ProviderError as failure:
        async with db.write() as tx:
            events.publish(
                tx,
                "provider.error",
                actor=actor,
                data={"provider": provider.name, "operation": "offers", "reason": failure.reason},
            )
        log.warning("catalog sync failed", provider=provider.name, reason=failure.reason)
        raise ProviderFailed(
            f"provider {provider.name} did not list its offers ({failure.reason})",
            reason=failure.reason,
            provider=provider.name,
            retryable=failure.retryable,
        ) from None
    async with db.write() as tx:
        await lock_catalog(tx)
        provider_id = await _provider_id(tx, provider.name)
        known = await _known_types(tx, provider_id)
        plan = rules.plan_sync(offers, known)
        zones_added = await _upsert_places(tx, provider_id, plan)
        await _upsert_types(tx, provider_id, plan)
        await _upsert_listings(tx, provider_id, plan)
        result = {
            "provider": provider.name,
            "offers": len(offers),
            "added": len(plan.added),
            "updated": len(plan.updated),
            "unavailable": len(plan.unavailable),
            "unchanged": len(plan.unchanged),
            "zones_added": zones_added,
            "rejected": [{"offer": what, "reason": reason} for what, reason in plan.rejected],
        }
        counts = {events.camel(k): v for k, v in result.items() if isinstance(v, int)}
        events.publish(tx, "catalog.synced", actor=actor, data={"provider": provider.name, **counts})
    log.info("catalog synced", **{k: v for k, v in result.items() if k != "rejected"})
    return result


async def _provider_id(tx: Tx, code: str) -> str:
    """The provider's row; a configured provider the seed does not know gets one (enabled)."""
    await tx.execute(
        insert_for(tx, providers)
        .values(id=str(uuid.uuid4()), code=code, name=code, description="", enabled=True)
        .on_conflict_do_nothing(index_elements=["code"])
    )
    return str((await tx.execute(select(providers.c.id).where(providers.c.code == code))).scalar_one())


async def _known_types(tx: Tx, provider_id: str) -> dict[str, rules.KnownType]:
    rows = (
        await tx.execute(select(instance_types).where(instance_types.c.provider_id == provider_id))
    ).mappings()
    return {
        row["code"]: rules.KnownType(
            spec=rules.TypeSpec(
                vcpus=row["vcpus"],
                ram_mb=row["ram_mb"],
                gpu_count=row["gpu_count"],
                gpu_model=row["gpu_model"],
                gpu_memory_mb=row["gpu_memory_mb"],
                hourly_price_eur=row["hourly_price_eur"],
            ),
            available=row["available"],
        )
        for row in rows
    }


async def _codes(tx: Tx, table: Any, provider_id: str) -> dict[str, str]:
    found = await tx.execute(select(table.c.code, table.c.id).where(table.c.provider_id == provider_id))
    return {row["code"]: str(row["id"]) for row in found.mappings()}


async def _upsert_places(tx: Tx, provider_id: str, plan: rules.SyncPlan) -> int:
    """New regions and zones (named by their code until an admin names them); the zones added."""
    if plan.regions:
        await tx.execute(
            insert_for(tx, regions)
            .values(
                [
                    {
                        "id": str(uuid.uuid4()),
                        "provider_id": provider_id,
                        "code": c,
                        "name": c,
                        "enabled": True,
                    }
                    for c in sorted(plan.regions)
                ]
            )
            .on_conflict_do_nothing(index_elements=["provider_id", "code"])
        )
    region_ids = await _codes(tx, regions, provider_id)
    known = await _codes(tx, zones, provider_id)
    new = [
        {
            "id": str(uuid.uuid4()),
            "provider_id": provider_id,
            "region_id": region_ids[region],
            "code": zone,
            "name": zone,
            "enabled": True,
        }
        for zone, region in sorted(plan.zones.items())
        if zone not in known
    ]
    if new:
        await tx.execute(
            insert_for(tx, zones).values(new).on_conflict_do_nothing(index_elements=["provider_id", "code"])
        )
    return len(new)


async def _upsert_types(tx: Tx, provider_id: str, plan: rules.SyncPlan) -> None:
    changed = [*plan.added, *plan.updated]
    if changed:
        rows = [
            {
                "id": str(uuid.uuid4()),
                "provider_id": provider_id,
                "code": code,
                "name": code,
                "vcpus": plan.types[code].vcpus,
                "ram_mb": plan.types[code].ram_mb,
                "gpu_count": plan.types[code].gpu_count,
                "gpu_model": plan.types[code].gpu_model,
                "gpu_memory_mb": plan.types[code].gpu_memory_mb,
                "hourly_price_eur": plan.types[code].hourly_price_eur,
                "available": plan.type_available[code],
                "enabled": True,
            }
            for code in changed
        ]
        statement = insert_for(tx, instance_types).values(rows)
        fresh = statement.excluded
        await tx.execute(
            statement.on_conflict_do_update(
                index_elements=["provider_id", "code"],
                # what the provider says; the admin's name and `enabled` stay
                set_={
                    "vcpus": fresh.vcpus,
                    "ram_mb": fresh.ram_mb,
                    "gpu_count": fresh.gpu_count,
                    "gpu_model": fresh.gpu_model,
                    "gpu_memory_mb": fresh.gpu_memory_mb,
                    "hourly_price_eur": fresh.hourly_price_eur,
                    "available": fresh.available,
                    "updated_at": db_now(),
                },
            )
        )
    if plan.unavailable:
        await tx.execute(
            update(instance_types)
            .where(instance_types.c.provider_id == provider_id, instance_types.c.code.in_(plan.unavailable))
            .values(available=False, updated_at=db_now())
        )


async def _upsert_listings(tx: Tx, provider_id: str, plan: rules.SyncPlan) -> None:
    """Where each type is sold: the offered listings as offered, every other listing unavailable."""
    type_ids = await _codes(tx, instance_types, provider_id)
    zone_ids = await _codes(tx, zones, provider_id)
    listing = instance_type_zones.c
    offered = {
        (type_ids[type_code], zone_ids[zone_code]): available
        for (type_code, zone_code), available in plan.availability.items()
    }
    current = {
        (str(row["instance_type_id"]), str(row["zone_id"])): row["available"]
        for row in (
            await tx.execute(
                select(listing.instance_type_id, listing.zone_id, listing.available).where(
                    listing.instance_type_id.in_(list(type_ids.values()))
                )
            )
        ).mappings()
    }
    for available in (True, False):
        pairs = [
            pair for pair, now in offered.items() if now is available and current.get(pair) is not available
        ]
        if not pairs:
            continue
        statement = insert_for(tx, instance_type_zones).values(
            [{"instance_type_id": t, "zone_id": z, "available": available, "enabled": True} for t, z in pairs]
        )
        await tx.execute(
            statement.on_conflict_do_update(
                index_elements=["instance_type_id", "zone_id"],
                set_={"available": available, "updated_at": db_now()},
            )
        )
    gone = [pair for pair, now in current.items() if pair not in offered and now]
    for type_id, zone_id in gone:
        await tx.execute(
            update(instance_type_zones)
            .where(listing.instance_type_id == type_id, listing.zone_id == zone_id)
            .values(available=False, updated_at=db_now())
        )
