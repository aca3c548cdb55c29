"""The catalog: providers, regions, zones, instance types and where they are sold, and models.

Reads for everyone (`GET /providers`, `/regions`, `/zones`, `/instance_types`, `/models`...) and
`check_deployable`, which a deployment calls to turn (type, zone, model) into what the provider needs,
refusing with a stable reason what cannot be deployed. The admin's changes are
services/catalog_changes.py, the seed services/catalog_seed.py, the sync services/catalog_sync.py.

Rows come back as dicts of column names (prices as `Decimal`); the API shapes them (api/catalog.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ikoma.domain import catalog as rules
from ikoma.domain.errors import Invalid, NotFound
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones

# PostgreSQL: the seed and syncs write the catalog one at a time, so their counts are exact and two
# replicas seeding at once never interleave (SQLite has one writer at a time already)
CATALOG_LOCK = 0x1C0A_CA7A

ZONE_COLUMNS = (*zones.c, regions.c.code.label("region_code"), providers.c.code.label("provider_code"))
ZONES_JOIN = zones.join(regions, regions.c.id == zones.c.region_id).join(
    providers, providers.c.id == zones.c.provider_id
)
TYPE_COLUMNS = (
    *instance_types.c,
    providers.c.code.label("provider_code"),
    providers.c.enabled.label("provider_enabled"),
)
TYPES_JOIN = instance_types.join(providers, providers.c.id == instance_types.c.provider_id)
REGION_COLUMNS = (*regions.c, providers.c.code.label("provider_code"))
REGIONS_JOIN = regions.join(providers, providers.c.id == regions.c.provider_id)


def insert_for(tx: Tx, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both backends."""
    return (postgresql if tx.dialect == "postgresql" else sqlite).insert(table)


async def lock_catalog(tx: Tx) -> None:
    if tx.dialect == "postgresql":
        await tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})


def not_found(what: str, id_: str) -> NotFound:
    return NotFound(f"no {what.replace('_', ' ')} with this id", reason=f"{what}_not_found", id=id_)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def fetch_rows(db: Database, query: Any) -> list[dict[str, Any]]:
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(query)).mappings().all()]


# --- reads ----------------------------------------------------------------------------------------------
async def list_providers(db: Database) -> list[dict[str, Any]]:
    return await fetch_rows(db, select(providers).order_by(providers.c.code))


async def list_regions(db: Database, *, provider: str | None = None) -> list[dict[str, Any]]:
    query = select(*REGION_COLUMNS).select_from(REGIONS_JOIN).order_by(providers.c.code, regions.c.code)
    if provider is not None:
        query = query.where(providers.c.code == provider)
    return await fetch_rows(db, query)


async def list_zones(
    db: Database, *, provider: str | None = None, region: str | None = None
) -> list[dict[str, Any]]:
    query = select(*ZONE_COLUMNS).select_from(ZONES_JOIN).order_by(providers.c.code, zones.c.code)
    if provider is not None:
        query = query.where(providers.c.code == provider)
    if region is not None:
        query = query.where(regions.c.code == region)
    return await fetch_rows(db, query)


async def _zone_codes(tx: Tx, type_ids: list[str]) -> dict[str, list[str]]:
    """Per type, the zones where it is sold and offered (listing available and enabled, zone enabled)."""
    found: dict[str, list[str]] = {type_id: [] for type_id in type_ids}
    if not type_ids:
        return found
    query = (
        select(instance_type_zones.c.instance_type_id, zones.c.code)
        .join(zones, zones.c.id == instance_type_zones.c.zone_id)
        .where(
            instance_type_zones.c.instance_type_id.in_(type_ids),
            instance_type_zones.c.available.is_(True),
            instance_type_zones.c.enabled.is_(True),
            zones.c.enabled.is_(True),
        )
        .order_by(zones.c.code)
    )
    for row in (await tx.execute(query)).mappings().all():
        found[str(row["instance_type_id"])].append(row["code"])
    return found


def _deployable_zones(row: Mapping[str, Any], where: dict[str, list[str]]) -> list[str]:
    """The zones a type can be deployed in now: none while it, or its provider, is off."""
    if not (row["provider_enabled"] and row["enabled"] and row["available"]):
        return []
    return where[str(row["id"])]


async def list_instance_types(
    db: Database,
    *,
    provider: str | None = None,
    available: bool | None = None,
    enabled: bool | None = None,
    type_id: str | None = None,
) -> list[dict[str, Any]]:
    """Instance types, each with `zones`: the codes of the zones it can be deployed in now."""
    query = select(*TYPE_COLUMNS).select_from(TYPES_JOIN).order_by(providers.c.code, instance_types.c.code)
    if provider is not None:
        query = query.where(providers.c.code == provider)
    if available is not None:
        query = query.where(instance_types.c.available.is_(available))
    if enabled is not None:
        query = query.where(instance_types.c.enabled.is_(enabled))
    if type_id is not None:
        query = query.where(instance_types.c.id == type_id)
    async with db.read() as tx:
        rows = [dict(r) for r in (await tx.execute(query)).mappings().all()]
        where = await _zone_codes(tx, [str(r["id"]) for r in rows])
    for row in rows:
        row["zones"] = _deployable_zones(row, where)
    return rows


async def get_instance_type(db: Database, type_id: str) -> dict[str, Any]:
    found = await list_instance_types(db, type_id=type_id) if is_uuid(type_id) else []
    if not found:
        raise not_found("instance_type", type_id)
    return found[0]


async def zones_of_type(db: Database, type_id: str) -> list[dict[str, Any]]:
    """`GET /instance_types/{id}/zones`: every zone of the type's provider where it is listed."""
    await get_instance_type(db, type_id)
    query = (
        select(
            instance_type_zones.c.instance_type_id,
            instance_type_zones.c.zone_id,
            instance_type_zones.c.available,
            instance_type_zones.c.enabled,
            zones.c.code.label("zone_code"),
            zones.c.name.label("zone_name"),
            regions.c.code.label("region_code"),
        )
        .join(zones, zones.c.id == instance_type_zones.c.zone_id)
        .join(regions, regions.c.id == zones.c.region_id)
        .where(instance_type_zones.c.instance_type_id == type_id)
        .order_by(zones.c.code)
    )
    return await fetch_rows(db, query)


async def types_of_zone(db: Database, zone_id: str, *, everything: bool = False) -> list[dict[str, Any]]:
    """`GET /zones/{id}/instance_types`: the types that can be deployed in the zone now (its provider,
    the type and the listing enabled, the provider selling it there), or with `everything` every type
    listed there; each with `zoneAvailable` and `zoneEnabled`."""
    async with db.read() as tx:
        zone = (
            (await tx.execute(select(*ZONE_COLUMNS).select_from(ZONES_JOIN).where(zones.c.id == zone_id)))
            .mappings()
            .first()
            if is_uuid(zone_id)
            else None
        )
        if zone is None:
            raise not_found("zone", zone_id)
        query = (
            select(
                *TYPE_COLUMNS,
                instance_type_zones.c.available.label("zone_available"),
                instance_type_zones.c.enabled.label("zone_enabled"),
            )
            .select_from(
                TYPES_JOIN.join(
                    instance_type_zones, instance_type_zones.c.instance_type_id == instance_types.c.id
                )
            )
            .where(instance_type_zones.c.zone_id == zone_id)
            .order_by(instance_types.c.code)
        )
        if not everything:
            query = query.where(
                providers.c.enabled.is_(True),
                instance_types.c.enabled.is_(True),
                instance_types.c.available.is_(True),
                instance_type_zones.c.available.is_(True),
                instance_type_zones.c.enabled.is_(True),
            )
        rows = [dict(r) for r in (await tx.execute(query)).mappings().all()]
        where = await _zone_codes(tx, [str(r["id"]) for r in rows])
    if not everything and not zone["enabled"]:
        return []  # nothing deploys in a disabled zone
    for row in rows:
        row["zones"] = _deployable_zones(row, where)
    return rows


async def list_models(db: Database, *, enabled: bool | None = None) -> list[dict[str, Any]]:
    query = select(models).order_by(models.c.name)
    if enabled is not None:
        query = query.where(models.c.enabled.is_(enabled))
    return await fetch_rows(db, query)


async def get_model(db: Database, model_id: str) -> dict[str, Any]:
    found = await fetch_rows(db, select(models).where(models.c.id == model_id)) if is_uuid(model_id) else []
    if not found:
        raise not_found("model", model_id)
    return found[0]


# --- deployments ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deployable:
    """What a deployment needs from the catalog, checked: the provider's codes and the price."""

    provider: str  # provider code: the registry's key
    zone: str  # provider's zone code
    region: str
    instance_type: str  # provider's type code
    hourly_price_eur: Decimal
    model_name: str
    serving: str
    model_parameters: Mapping[str, Any]


async def check_deployable(tx: Tx, *, instance_type_id: str, zone_id: str, model_id: str) -> Deployable:
    """The offer a deployment asks for, or 422 with the first reason it cannot be deployed:
    `<what>_not_found`, `provider_disabled`, `zone_disabled`, `instance_type_disabled`,
    `instance_type_unavailable`, `not_offered_in_zone`, `model_disabled`, `model_too_large`."""
    for value, what, field in (
        (instance_type_id, "instance_type", "instance_type_id"),
        (zone_id, "zone", "zone_id"),
        (model_id, "model", "model_id"),
    ):
        if not is_uuid(value):
            raise Invalid(
                f"no {what.replace('_', ' ')} with this id", reason=f"{what}_not_found", field=field
            )
    kind = (
        (
            await tx.execute(
                select(*TYPE_COLUMNS).select_from(TYPES_JOIN).where(instance_types.c.id == instance_type_id)
            )
        )
        .mappings()
        .first()
    )
    if kind is None:
        raise Invalid(
            "no instance type with this id", reason="instance_type_not_found", field="instance_type_id"
        )
    zone = (
        (await tx.execute(select(*ZONE_COLUMNS).select_from(ZONES_JOIN).where(zones.c.id == zone_id)))
        .mappings()
        .first()
    )
    if zone is None:
        raise Invalid("no zone with this id", reason="zone_not_found", field="zone_id")
    model = (await tx.execute(select(models).where(models.c.id == model_id))).mappings().first()
    if model is None:
        raise Invalid("no model with this id", reason="model_not_found", field="model_id")
    listing = (
        (
            await tx.execute(
                select(instance_type_zones).where(
                    and_(
                        instance_type_zones.c.instance_type_id == instance_type_id,
                        instance_type_zones.c.zone_id == zone_id,
                    )
                )
            )
        )
        .mappings()
        .first()
    )
    refusals = (
        (not kind["provider_enabled"], "provider_disabled", "the instance type's provider is disabled"),
        (not zone["enabled"], "zone_disabled", "this zone is disabled"),
        (not kind["enabled"], "instance_type_disabled", "this instance type is disabled"),
        (
            not kind["available"],
            "instance_type_unavailable",
            "the provider no longer sells this instance type",
        ),
        (
            listing is None
            or not listing["enabled"]
            or not listing["available"]
            or zone["provider_id"] != kind["provider_id"],
            "not_offered_in_zone",
            "this instance type is not offered in this zone now",
        ),
        (not model["enabled"], "model_disabled", "this model is disabled"),
        (
            not rules.fits(
                model["gpu_memory_mb"], gpu_count=kind["gpu_count"], gpu_memory_mb=kind["gpu_memory_mb"]
            ),
            "model_too_large",
            "the model needs more GPU memory than this instance type has",
        ),
    )
    for refused, reason, message in refusals:
        if refused:
            raise Invalid(
                message, reason=reason, instance_type_id=instance_type_id, zone_id=zone_id, model_id=model_id
            )
    return Deployable(
        provider=kind["provider_code"],
        zone=zone["code"],
        region=zone["region_code"],
        instance_type=kind["code"],
        hourly_price_eur=kind["hourly_price_eur"],
        model_name=model["name"],
        serving=model["serving"],
        model_parameters=model["parameters"],
    )
