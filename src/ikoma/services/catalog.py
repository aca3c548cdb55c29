"""The catalog: providers, regions, zones, instance types and where they are sold, and models.

Reads for everyone (`GET /providers`, `/regions`, `/zones`, `/instance_types`, `/models`...), the admin's
changes (enable/disable, names, a type's price and zones, new models), and `check_deployable`, which a
deployment calls to turn (type, zone, model) into what the provider needs, refusing with a stable
reason what cannot be deployed. The seed is services/catalog_seed.py, the sync services/catalog_sync.py.

Rows come back as dicts of column names (prices as `Decimal`); the API shapes them (api/catalog.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ikoma.domain import catalog as rules
from ikoma.domain.errors import Conflict, Invalid, NotFound
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database, Tx
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones

# PostgreSQL: the seed and syncs write the catalog one at a time, so their counts are exact and two
# replicas seeding at once never interleave (SQLite has one writer at a time already)
CATALOG_LOCK = 0x1C0A_CA7A

_ZONE_COLUMNS = (*zones.c, regions.c.code.label("region_code"), providers.c.code.label("provider_code"))
_ZONES = zones.join(regions, regions.c.id == zones.c.region_id).join(
    providers, providers.c.id == zones.c.provider_id
)
_TYPE_COLUMNS = (
    *instance_types.c,
    providers.c.code.label("provider_code"),
    providers.c.enabled.label("provider_enabled"),
)
_TYPES = instance_types.join(providers, providers.c.id == instance_types.c.provider_id)
_REGION_COLUMNS = (*regions.c, providers.c.code.label("provider_code"))
_REGIONS = regions.join(providers, providers.c.id == regions.c.provider_id)


def insert_for(tx: Tx, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both backends."""
    return (postgresql if tx.dialect == "postgresql" else sqlite).insert(table)


async def lock_catalog(tx: Tx) -> None:
    if tx.dialect == "postgresql":
        await tx.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CATALOG_LOCK})


def _not_found(what: str, id_: str) -> NotFound:
    return NotFound(f"no {what.replace('_', ' ')} with this id", reason=f"{what}_not_found", id=id_)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def _rows(db: Database, query: Any) -> list[dict[str, Any]]:
    async with db.read() as tx:
        return [dict(r) for r in (await tx.execute(query)).mappings().all()]


# --- reads ----------------------------------------------------------------------------------------------
async def list_providers(db: Database) -> list[dict[str, Any]]:
    return await _rows(db, select(providers).order_by(providers.c.code))


async def list_regions(db: Database, *, provider: str | None = None) -> list[dict[str, Any]]:
    query = select(*_REGION_COLUMNS).select_from(_REGIONS).order_by(providers.c.code, regions.c.code)
    if provider is not None:
        query = query.where(providers.c.code == provider)
    return await _rows(db, query)


async def list_zones(
    db: Database, *, provider: str | None = None, region: str | None = None
) -> list[dict[str, Any]]:
    query = select(*_ZONE_COLUMNS).select_from(_ZONES).order_by(providers.c.code, zones.c.code)
    if provider is not None:
        query = query.where(providers.c.code == provider)
    if region is not None:
        query = query.where(regions.c.code == region)
    return await _rows(db, query)


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
    query = select(*_TYPE_COLUMNS).select_from(_TYPES).order_by(providers.c.code, instance_types.c.code)
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
    found = await list_instance_types(db, type_id=type_id) if _is_uuid(type_id) else []
    if not found:
        raise _not_found("instance_type", type_id)
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
    return await _rows(db, query)


async def types_of_zone(db: Database, zone_id: str, *, everything: bool = False) -> list[dict[str, Any]]:
    """`GET /zones/{id}/instance_types`: the types that can be deployed in the zone now (its provider,
    the type and the listing enabled, the provider selling it there), or with `everything` every type
    listed there; each with `zoneAvailable` and `zoneEnabled`."""
    async with db.read() as tx:
        zone = (
            (await tx.execute(select(*_ZONE_COLUMNS).select_from(_ZONES).where(zones.c.id == zone_id)))
            .mappings()
            .first()
            if _is_uuid(zone_id)
            else None
        )
        if zone is None:
            raise _not_found("zone", zone_id)
        query = (
            select(
                *_TYPE_COLUMNS,
                instance_type_zones.c.available.label("zone_available"),
                instance_type_zones.c.enabled.label("zone_enabled"),
            )
            .select_from(
                _TYPES.join(
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
    return await _rows(db, query)


async def get_model(db: Database, model_id: str) -> dict[str, Any]:
    found = await _rows(db, select(models).where(models.c.id == model_id)) if _is_uuid(model_id) else []
    if not found:
        raise _not_found("model", model_id)
    return found[0]


# --- the admin's changes -------------------------------------------------------------------------------
async def _update(db: Database, table: Table, what: str, id_: str, values: dict[str, Any]) -> None:
    if not _is_uuid(id_):
        raise _not_found(what, id_)
    async with db.write() as tx:
        exists = (await tx.execute(select(table.c.id).where(table.c.id == id_))).first()
        if exists is None:
            raise _not_found(what, id_)
        if values:
            await tx.execute(update(table).where(table.c.id == id_).values(**values, updated_at=db_now()))


def _common(changes: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if "name" in changes:
        values["name"] = rules.check_name(changes["name"])
    if "enabled" in changes:
        values["enabled"] = bool(changes["enabled"])
    return values


async def update_provider(db: Database, provider_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Name, description, enabled. A disabled provider's types are not deployable."""
    values = _common(changes)
    if "description" in changes:
        values["description"] = rules.check_description(changes["description"])
    await _update(db, providers, "provider", provider_id, values)
    return (await _rows(db, select(providers).where(providers.c.id == provider_id)))[0]


async def update_region(db: Database, region_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    await _update(db, regions, "region", region_id, _common(changes))
    return (await _rows(db, select(*_REGION_COLUMNS).select_from(_REGIONS).where(regions.c.id == region_id)))[
        0
    ]


async def update_zone(db: Database, zone_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    await _update(db, zones, "zone", zone_id, _common(changes))
    return (await _rows(db, select(*_ZONE_COLUMNS).select_from(_ZONES).where(zones.c.id == zone_id)))[0]


async def update_instance_type(db: Database, type_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Name, enabled, and the hourly price (a sync of the provider sets it again from its offers)."""
    values = _common(changes)
    if "hourly_price_eur" in changes:
        values["hourly_price_eur"] = rules.parse_price(changes["hourly_price_eur"])
    await _update(db, instance_types, "instance_type", type_id, values)
    return await get_instance_type(db, type_id)


async def set_type_zones(db: Database, type_id: str, zone_ids: list[str]) -> list[dict[str, Any]]:
    """`PUT /instance_types/{id}/zones`: the type is offered in exactly these zones of its provider.

    Listed zones are enabled (a new listing is taken as sold there until a sync says otherwise); the
    others are disabled, not deleted, so a sync never offers again what the admin took away.
    """
    wanted = list(dict.fromkeys(zone_ids))
    for zone_id in wanted:
        if not _is_uuid(zone_id):
            raise Invalid("not a zone id", reason="zone_not_found", field="zoneIds", id=zone_id)
    type_row = await get_instance_type(db, type_id)
    async with db.write() as tx:
        found = (
            (await tx.execute(select(zones.c.id, zones.c.provider_id).where(zones.c.id.in_(wanted))))
            .mappings()
            .all()
        )
        provider_of = {str(row["id"]): str(row["provider_id"]) for row in found}
        for zone_id in wanted:
            if zone_id not in provider_of:
                raise Invalid("no zone with this id", reason="zone_not_found", field="zoneIds", id=zone_id)
            if provider_of[zone_id] != str(type_row["provider_id"]):
                raise Invalid(
                    "this zone belongs to another provider than the instance type",
                    reason="zone_of_other_provider",
                    field="zoneIds",
                    id=zone_id,
                )
        listing = instance_type_zones.c
        await tx.execute(
            update(instance_type_zones)
            .where(listing.instance_type_id == type_id, listing.zone_id.not_in(wanted))
            .values(enabled=False, updated_at=db_now())
        )
        if wanted:
            rows = [
                {"instance_type_id": type_id, "zone_id": z, "available": True, "enabled": True}
                for z in wanted
            ]
            statement = insert_for(tx, instance_type_zones).values(rows)
            await tx.execute(
                statement.on_conflict_do_update(
                    index_elements=["instance_type_id", "zone_id"],
                    set_={"enabled": True, "updated_at": db_now()},
                )
            )
    return await zones_of_type(db, type_id)


async def create_model(
    db: Database,
    *,
    name: str,
    gpu_memory_mb: int,
    serving: str,
    parameters: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    """`POST /models`; 409 `model_exists` when the name is taken."""
    model_id = str(uuid.uuid4())
    row = {
        "id": model_id,
        "name": rules.check_model_name(name),
        "gpu_memory_mb": rules.check_gpu_memory(gpu_memory_mb),
        "serving": rules.check_serving(serving),
        "parameters": rules.check_parameters(parameters or {}),
        "enabled": enabled,
    }
    exists = Conflict("a model with this name exists", reason="model_exists", field="name", name=name)
    try:
        async with db.write() as tx:
            if (await tx.execute(select(models.c.id).where(models.c.name == name))).first() is not None:
                raise exists
            await tx.execute(models.insert().values(row))
    except IntegrityError:
        raise exists from None  # a concurrent creation won the unique index
    return await get_model(db, model_id)


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
        if not _is_uuid(value):
            raise Invalid(
                f"no {what.replace('_', ' ')} with this id", reason=f"{what}_not_found", field=field
            )
    kind = (
        (
            await tx.execute(
                select(*_TYPE_COLUMNS).select_from(_TYPES).where(instance_types.c.id == instance_type_id)
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
        (await tx.execute(select(*_ZONE_COLUMNS).select_from(_ZONES).where(zones.c.id == zone_id)))
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
