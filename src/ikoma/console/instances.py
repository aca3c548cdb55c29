"""The instances page (`/instances/manage`): the instances IKOMA created at cloud providers, their state
kept live from the event stream (`instance.*` events, static/cloud.js), the archived ones on request,
and for operators a "New instance" form (provider → zone → instance type → model) and each instance's
Terminate and Archive buttons.

Read through the services `GET /instances` and the catalog routes use; the buttons call those routes
(`POST /deployments`, `DELETE /instances/{id}`, `PUT /instances/{id}/archive`), so the one policy table
decides. The page is not `/instances` itself: that path is the API's JSON list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.rendering import can, page
from ikoma.domain.catalog import format_price
from ikoma.domain.event_kinds import INSTANCE_KINDS
from ikoma.domain.instances import DELETABLE, State, can_archive
from ikoma.services import catalog, events
from ikoma.services.instance_loops import from_context

router = APIRouter(include_in_schema=False)

# how a state is shown: its badge's colour (the same palette as the fleet's and the orders')
STATE_BADGE = {
    State.PROVISIONING.value: "unknown",
    State.BOOTING.value: "warning",
    State.READY.value: "ok",
    State.UNREACHABLE.value: "error",
    State.TERMINATING.value: "warning",
    State.TERMINATED.value: "unknown",
    State.FAILED.value: "error",
    State.ORPHANED.value: "error",
}
TERMINABLE = sorted(state.value for state in DELETABLE)
ARCHIVABLE = sorted(state.value for state in State if can_archive(state))


def gib(mib: int | None) -> str:
    """`32 GiB` (or `0.5 GiB`) from MiB, as the catalog stores sizes."""
    if mib is None:
        return "—"
    amount = mib / 1024
    return f"{amount:.0f} GiB" if amount == int(amount) else f"{amount:.1f} GiB"


def type_summary(kind: Mapping[str, Any]) -> str:
    """`8 vCPU · 32 GiB RAM · 1x Mock L4 (24 GiB)` — what an operator compares types by."""
    parts = [f"{kind['vcpus']} vCPU", f"{gib(kind['ram_mb'])} RAM"]
    if kind["gpu_count"]:
        memory = f" ({gib(kind['gpu_memory_mb'])})" if kind.get("gpu_memory_mb") else ""
        parts.append(f"{kind['gpu_count']}x {kind['gpu_model'] or 'GPU'}{memory}")
    return " · ".join(parts)


async def deployment_choices(ctx: Ctx) -> dict[str, Any]:
    """What the "New instance" form offers: enabled providers, their enabled zones, the types that can
    be deployed now (each with the zone codes where it can), and the enabled models."""
    providers = [
        p for p in await catalog.list_providers(ctx.db) if p["enabled"] and p["code"] in ctx.providers
    ]
    codes = {p["code"] for p in providers}
    zones = [z for z in await catalog.list_zones(ctx.db) if z["enabled"] and z["provider_code"] in codes]
    types = [
        {
            **t,
            "summary": type_summary(t),
            "price": format_price(t["hourly_price_eur"]),
        }
        for t in await catalog.list_instance_types(ctx.db)
        if t["provider_code"] in codes and t["zones"]
    ]
    models = await catalog.list_models(ctx.db, enabled=True)
    return {"providers": providers, "zones": zones, "types": types, "models": models}


@router.get("/instances/manage")
async def instances_page(
    request: Request,
    ctx: Ctx,
    archived: Annotated[bool, Query(description="true: the archived instances")] = False,
) -> Response:
    # the event log's head first: a transition committed after the list was read comes by the stream
    async with ctx.db.read() as tx:
        after = await events.last_id(tx)
    items = [
        {**row, "price": None if row["hourly_price_eur"] is None else format_price(row["hourly_price_eur"])}
        for row in await from_context(ctx).fleet.list_instances(archived=archived)
    ]
    return page(
        request,
        "instances.html",
        {
            "items": items,
            "archived": archived,
            "after": after,
            "instance_kinds": list(INSTANCE_KINDS),
            "state_badge": STATE_BADGE,
            "terminable": TERMINABLE,
            "archivable": ARCHIVABLE,
            # the form's choices are read only for a caller the API would let deploy
            "choices": await deployment_choices(ctx) if can(request, "POST", "/deployments") else None,
        },
    )
