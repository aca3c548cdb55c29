"""The catalog page (`/catalog/manage`): providers, zones, instance types (sizes, EUR/hour prices, where
each is sold and offered) and models, as `GET /providers`, `/zones`, `/instance_types` and `/models`
answer them. Everyone signed in reads it; an admin also gets Enable/Disable buttons (`PUT /providers/{id}`,
`PUT /zones/{id}`, `PUT /instance_types/{id}`) and "Sync from provider" (`POST /catalog/sync`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.instances import gib, type_summary
from ikoma.console.rendering import page
from ikoma.domain.catalog import format_price
from ikoma.services import catalog
from ikoma.storage.database import Database
from ikoma.storage.tables_cloud import instance_type_zones, zones

router = APIRouter(include_in_schema=False)


async def listings(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Per instance type, every zone where it is listed: sold there (`available`) and offered there
    (`enabled`), zone codes in order — what `GET /instance_types/{id}/zones` answers, for all types
    in one read."""
    query = (
        select(
            instance_type_zones.c.instance_type_id,
            instance_type_zones.c.available,
            instance_type_zones.c.enabled,
            zones.c.code,
        )
        .join(zones, zones.c.id == instance_type_zones.c.zone_id)
        .order_by(zones.c.code)
    )
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async with db.read() as tx:
        for row in (await tx.execute(query)).mappings():
            found[str(row["instance_type_id"])].append(dict(row))
    return found


@router.get("/catalog/manage")
async def catalog_page(request: Request, ctx: Ctx) -> Response:
    providers = [
        {**p, "configured": p["code"] in ctx.providers} for p in await catalog.list_providers(ctx.db)
    ]
    where = await listings(ctx.db)
    types = [
        {
            **t,
            "summary": type_summary(t),
            "price": format_price(t["hourly_price_eur"]),
            "listings": where.get(str(t["id"]), []),
        }
        for t in await catalog.list_instance_types(ctx.db)
    ]
    return page(
        request,
        "catalog.html",
        {
            "providers": providers,
            "configured": sorted(p["code"] for p in providers if p["configured"]),
            "zones": await catalog.list_zones(ctx.db),
            "types": types,
            "models": [{**m, "gpu": gib(m["gpu_memory_mb"])} for m in await catalog.list_models(ctx.db)],
        },
    )
