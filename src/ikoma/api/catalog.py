"""The catalog routes (seed 002 paths, without /v1): providers, regions, zones, instance types, where each
type is sold, models, and `POST /catalog/sync`.

Reads are the observer's, changes the admin's (api/policy.py). Parsing only here: the queries are
services/catalog.py, the changes services/catalog_changes.py, the sync services/catalog_sync.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Security

from ikoma.api.catalog_schemas import (
    InstanceTypePublic,
    InstanceTypeUpdate,
    ModelCreate,
    ModelPublic,
    PlaceUpdate,
    ProviderPublic,
    ProviderUpdate,
    RegionPublic,
    SyncAnswer,
    SyncRequest,
    TypeZonePublic,
    TypeZonesUpdate,
    ZoneInstanceType,
    ZonePublic,
)
from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.bootstrap import Context
from ikoma.domain.errors import Invalid
from ikoma.providers.base import Provider
from ikoma.services import catalog, catalog_changes, catalog_sync

router = APIRouter(tags=["catalog"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the role does not allow it; csrf_failed"},
}
INVALID: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    422: {"description": "invalid_name, invalid_price, zone_not_found, zone_of_other_provider, ..."},
}
ProviderCode = Annotated[str | None, Query(max_length=50, description="a provider code: `mock`, `scaleway`")]


def configured(ctx: Context) -> Mapping[str, Provider]:
    """The providers this IKOMA has an adapter for (providers/registry.py), by catalog code."""
    return ctx.providers


# --- providers, regions, zones -------------------------------------------------------------------------
@router.get("/providers", response_model=list[ProviderPublic], responses=ERRORS)
async def list_providers(ctx: Ctx) -> Any:
    adapters = configured(ctx)
    return [{**p, "configured": p["code"] in adapters} for p in await catalog.list_providers(ctx.db)]


@router.put("/providers/{provider_id}", response_model=ProviderPublic, responses=INVALID)
async def update_provider(provider_id: uuid.UUID, body: ProviderUpdate, ctx: Ctx) -> Any:
    """Enable or disable a provider, or rename it."""
    row = await catalog_changes.update_provider(ctx.db, str(provider_id), body.model_dump(exclude_unset=True))
    return {**row, "configured": row["code"] in configured(ctx)}


@router.get("/regions", response_model=list[RegionPublic], responses=ERRORS)
async def list_regions(ctx: Ctx, provider: ProviderCode = None) -> Any:
    return await catalog.list_regions(ctx.db, provider=provider)


@router.put("/regions/{region_id}", response_model=RegionPublic, responses=INVALID)
async def update_region(region_id: uuid.UUID, body: PlaceUpdate, ctx: Ctx) -> Any:
    return await catalog_changes.update_region(ctx.db, str(region_id), body.model_dump(exclude_unset=True))


@router.get("/zones", response_model=list[ZonePublic], responses=ERRORS)
async def list_zones(
    ctx: Ctx,
    provider: ProviderCode = None,
    region: Annotated[str | None, Query(max_length=50, description="a region code: `fr-par`")] = None,
) -> Any:
    return await catalog.list_zones(ctx.db, provider=provider, region=region)


@router.put("/zones/{zone_id}", response_model=ZonePublic, responses=INVALID)
async def update_zone(zone_id: uuid.UUID, body: PlaceUpdate, ctx: Ctx) -> Any:
    """Enable or disable a zone (nothing deploys in a disabled one), or rename it."""
    return await catalog_changes.update_zone(ctx.db, str(zone_id), body.model_dump(exclude_unset=True))


@router.get("/zones/{zone_id}/instance_types", response_model=list[ZoneInstanceType], responses=ERRORS)
async def list_zone_instance_types(
    zone_id: uuid.UUID,
    ctx: Ctx,
    everything: Annotated[
        bool, Query(alias="all", description="every type listed in the zone, deployable or not")
    ] = False,
) -> Any:
    """The types that can be deployed in this zone now (provider, zone, type and listing enabled, the
    provider selling it there); `all=true`: every type listed there, with its flags."""
    return await catalog.types_of_zone(ctx.db, str(zone_id), everything=everything)


# --- instance types -------------------------------------------------------------------------------------
@router.get("/instance_types", response_model=list[InstanceTypePublic], responses=ERRORS)
async def list_instance_types(
    ctx: Ctx,
    provider: ProviderCode = None,
    available: Annotated[bool | None, Query(description="sold by the provider")] = None,
    enabled: Annotated[bool | None, Query(description="offered by the admin")] = None,
) -> Any:
    return await catalog.list_instance_types(ctx.db, provider=provider, available=available, enabled=enabled)


@router.get("/instance_types/{instance_type_id}", response_model=InstanceTypePublic, responses=ERRORS)
async def get_instance_type(instance_type_id: uuid.UUID, ctx: Ctx) -> Any:
    return await catalog.get_instance_type(ctx.db, str(instance_type_id))


@router.put("/instance_types/{instance_type_id}", response_model=InstanceTypePublic, responses=INVALID)
async def update_instance_type(instance_type_id: uuid.UUID, body: InstanceTypeUpdate, ctx: Ctx) -> Any:
    """Enable or disable a type, rename it, or set its hourly price (decimal text is exact)."""
    changes = body.model_dump(exclude_unset=True)
    if isinstance(changes.get("hourly_price_eur"), float):
        # a JSON number: its shortest text is what the client wrote (0.75, not 0.74999...)
        changes["hourly_price_eur"] = Decimal(repr(changes["hourly_price_eur"]))
    return await catalog_changes.update_instance_type(ctx.db, str(instance_type_id), changes)


@router.get("/instance_types/{instance_type_id}/zones", response_model=list[TypeZonePublic], responses=ERRORS)
async def list_instance_type_zones(instance_type_id: uuid.UUID, ctx: Ctx) -> Any:
    """Every zone where the type is listed: sold there (`available`) and offered there (`enabled`)."""
    return await catalog.zones_of_type(ctx.db, str(instance_type_id))


@router.put(
    "/instance_types/{instance_type_id}/zones", response_model=list[TypeZonePublic], responses=INVALID
)
async def set_instance_type_zones(instance_type_id: uuid.UUID, body: TypeZonesUpdate, ctx: Ctx) -> Any:
    """Offer the type in exactly these zones of its provider; its other listings are disabled (kept, so a
    sync does not offer them again)."""
    return await catalog_changes.set_type_zones(ctx.db, str(instance_type_id), body.zone_ids)


# --- models ---------------------------------------------------------------------------------------------
@router.get("/models", response_model=list[ModelPublic], responses=ERRORS)
async def list_models(ctx: Ctx, enabled: Annotated[bool | None, Query()] = None) -> Any:
    return await catalog.list_models(ctx.db, enabled=enabled)


@router.post(
    "/models",
    status_code=201,
    response_model=ModelPublic,
    responses={
        **INVALID,
        409: {"description": "model_exists"},
        422: {"description": "invalid_model_name, invalid_serving, invalid_gpu_memory, invalid_parameters"},
    },
)
async def create_model(body: ModelCreate, ctx: Ctx) -> Any:
    return await catalog_changes.create_model(
        ctx.db,
        name=body.name,
        gpu_memory_mb=body.gpu_memory_mb,
        serving=body.serving,
        parameters=body.parameters,
        enabled=body.enabled,
    )


@router.get("/models/{model_id}", response_model=ModelPublic, responses=ERRORS)
async def get_model(model_id: uuid.UUID, ctx: Ctx) -> Any:
    return await catalog.get_model(ctx.db, str(model_id))


# --- sync -----------------------------------------------------------------------------------------------
@router.post(
    "/catalog/sync",
    response_model=SyncAnswer,
    responses={
        **ERRORS,
        422: {"description": "provider_not_configured"},
        502: {"description": "the provider did not list its offers (its reason: provider_unavailable, ...)"},
    },
)
async def sync_catalog(ctx: Ctx, principal: CurrentPrincipal, body: SyncRequest | None = None) -> Any:
    """Refresh the catalog from the providers' offers: one (`provider`), or every configured one. Counts
    of instance types added, updated, and marked unavailable (no longer sold), per provider."""
    adapters = configured(ctx)
    wanted = body.provider if body is not None else None
    if wanted is not None and wanted not in adapters:
        known = ", ".join(sorted(adapters)) or "none"
        raise Invalid(
            f"no provider {wanted!r} is configured here (configured: {known})",
            reason="provider_not_configured",
            field="provider",
        )
    names = [wanted] if wanted is not None else sorted(adapters)
    results = [await catalog_sync.sync(ctx.db, adapters[name], actor=principal.actor) for name in names]
    return {
        "added": sum(r["added"] for r in results),
        "updated": sum(r["updated"] for r in results),
        "unavailable": sum(r["unavailable"] for r in results),
        "providers": results,
    }
