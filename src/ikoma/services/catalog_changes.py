"""The admin's changes to the catalog: enable or disable and rename providers, regions, zones and
instance types, set a type's price and the zones it is offered in, add models.

Every change is checked by domain/catalog.py first (422 with a stable reason); a missing row is 404
`<what>_not_found`. A sync (services/catalog_sync.py) never undoes `enabled` nor a name set here; it
does set prices and availability again from the provider's offers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError

from ikoma.domain import catalog as rules
from ikoma.domain.errors import Conflict, Invalid
from ikoma.services.catalog import (
    REGION_COLUMNS,
    REGIONS_JOIN,
    ZONE_COLUMNS,
    ZONES_JOIN,
    fetch_rows,
    get_instance_type,
    get_model,
    insert_for,
    is_uuid,
    not_found,
    zones_of_type,
)
from ikoma.storage.clock import db_now
from ikoma.storage.database import Database
from ikoma.storage.tables_cloud import instance_type_zones, instance_types, models, providers, regions, zones


async def _update(db: Database, table: Table, what: str, id_: str, values: dict[str, Any]) -> None:
    if not is_uuid(id_):
        raise not_found(what, id_)
    async with db.write() as tx:
        exists = (await tx.execute(select(table.c.id).where(table.c.id == id_))).first()
        if exists is None:
            raise not_found(what, id_)
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
    return (await fetch_rows(db, select(providers).where(providers.c.id == provider_id)))[0]


async def update_region(db: Database, region_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    await _update(db, regions, "region", region_id, _common(changes))
    query = select(*REGION_COLUMNS).select_from(REGIONS_JOIN).where(regions.c.id == region_id)
    return (await fetch_rows(db, query))[0]


async def update_zone(db: Database, zone_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    await _update(db, zones, "zone", zone_id, _common(changes))
    query = select(*ZONE_COLUMNS).select_from(ZONES_JOIN).where(zones.c.id == zone_id)
    return (await fetch_rows(db, query))[0]


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
        if not is_uuid(zone_id):
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
