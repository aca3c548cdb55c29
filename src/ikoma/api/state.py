"""Machine state routes: state, hardware, metrics, timeline, important messages, reports, artifacts,
schedules and the fleet summary. Parse, check the caller's server scope, call one service, shape.

A scoped API client learns nothing about servers outside its scope: their state, reports and
artifacts answer 404 exactly as if they did not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Security
from starlette.responses import Response

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.state_schemas import (
    ArtifactPublic,
    FleetSummary,
    HardwarePublic,
    ImportantMessagePublic,
    MachineStatePublic,
    MetricsSeries,
    RebuildDone,
    RebuildRequest,
    ReportPage,
    ReportPublic,
    SchedulePublic,
    SchedulesPut,
    TimelinePage,
)
from ikoma.domain.errors import NotFound
from ikoma.services import fleet, messages, metrics_history, reports, schedules, state, timeline
from ikoma.services.identity import Principal

router = APIRouter(prefix="/v1", tags=["machine state"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the caller's role does not allow this"},
    404: {"description": "no such server (or outside the caller's scope)"},
}
SHA256_HEADER = "X-Content-SHA256"


def _last_error(view: dict[str, Any]) -> dict[str, Any] | None:
    if not view["last_error_order_id"]:
        return None
    return {
        "order_id": view["last_error_order_id"],
        "playbook_key": view["last_error_playbook"],
        "message": view["last_error_message"],
        "at": view["last_error_at"],
    }


def _state_wire(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "server_id": view["server_id"],
        "server_name": view["server_name"],
        "up": view["online"],
        "runner_id": view["runner_id"],
        "runner_name": view["runner_name"],
        "last_heartbeat_at": view["last_heartbeat_at"],
        "running_order_ids": view["running_order_ids"],
        "health": view["health"],
        "apt": {
            "status": view["apt_status"],
            "updates": view["apt_updates"],
            "security": view["apt_security"],
            "reboot_required": view["apt_reboot_required"],
            "analyzed_at": view["apt_analyzed_at"],
        },
        "docker": {
            "installed": view["docker_installed"],
            "status": view["docker_status"],
            "containers": view["docker_containers"],
            "running": view["docker_running"],
            "unhealthy": view["docker_unhealthy"],
            "stacks": view["docker_stacks"],
            "prunable_bytes": view["docker_prunable_bytes"],
            "checked_at": view["docker_checked_at"],
        },
        "metrics": {
            "load1": view["load1"],
            "memory_used_percent": view["memory_used_percent"],
            "root_used_percent": view["root_used_percent"],
            "collected_at": view["metrics_collected_at"],
            "disk_warnings": view["disk_warnings"],
            "latest": view["metrics"],
        },
        "hardware_warnings": view["hardware_warnings"],
        "facts_collected_at": view["facts_collected_at"],
        "last_error": _last_error(view),
        "outcomes": view["outcomes"],
        "updated_at": view["updated_at"],
    }


def _message_wire(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "new": not row["acknowledged"], "acks": row["acks"] or []}


async def _visible(principal: Principal, server_id: str, kind: str, object_id: str) -> None:
    """Reports and artifacts outside the caller's scope do not exist for them."""
    if not principal.can_see_server(server_id):
        raise NotFound(f"no {kind} with this id", reason=f"{kind}_not_found", **{f"{kind}Id": object_id})


# --- per server ------------------------------------------------------------------------------------
@router.get("/servers/{server_id}/state", response_model=MachineStatePublic, responses=ERRORS)
async def get_state(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Derived state (a cache of the snapshots) plus what is live: runner up, running orders."""
    principal.require_server(str(server_id))
    view = await state.get_state(ctx.db, str(server_id), stale_after=ctx.settings.stale_after)
    return _state_wire(view)


@router.get("/servers/{server_id}/hardware", response_model=HardwarePublic, responses=ERRORS)
async def get_hardware(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    principal.require_server(str(server_id))
    return await state.get_hardware(ctx.db, str(server_id))


@router.get("/servers/{server_id}/metrics", response_model=MetricsSeries, responses=ERRORS)
async def get_metrics(
    server_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    step: Annotated[int | None, Query(ge=60, le=86400, description="seconds per averaged point")] = None,
) -> Any:
    """Metrics history (default: the last 24 h), oldest first; `step` averages points per bucket."""
    principal.require_server(str(server_id))
    return await metrics_history.series(ctx.db, str(server_id), start=start, end=end, step=step)


@router.get("/servers/{server_id}/timeline", response_model=TimelinePage, responses=ERRORS)
async def get_timeline(
    server_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    type_: Annotated[list[str] | None, Query(alias="type", max_length=20)] = None,
    severity: Annotated[list[str] | None, Query(max_length=3)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Any:
    """Newest first. `type=order` matches every `order.*`; repeat `type`/`severity` to allow several."""
    principal.require_server(str(server_id))
    async with ctx.db.read() as tx:
        await state.require_server(tx, str(server_id))
    items, next_cursor = await timeline.list_timeline(
        ctx.db, str(server_id), types=type_, severities=severity, limit=limit, cursor=cursor
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get(
    "/servers/{server_id}/important-messages",
    response_model=list[ImportantMessagePublic],
    responses=ERRORS,
)
async def list_important_messages(
    server_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    new: Annotated[bool, Query(description="only messages not acknowledged (new)")] = False,
) -> Any:
    """New ones first; a message seen again after its acknowledgement is new again."""
    principal.require_server(str(server_id))
    async with ctx.db.read() as tx:
        await state.require_server(tx, str(server_id))
    rows = await messages.list_messages(ctx.db, str(server_id), only_new=new)
    return [_message_wire(r) for r in rows]


@router.post(
    "/servers/{server_id}/important-messages/{message_id}/ack",
    response_model=ImportantMessagePublic,
    responses=ERRORS,
)
async def acknowledge_message(
    server_id: uuid.UUID, message_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    principal.require_server(str(server_id))
    row = await messages.acknowledge(ctx.db, str(server_id), str(message_id), actor=principal.actor)
    return _message_wire(row)


@router.get("/servers/{server_id}/reports", response_model=ReportPage, responses=ERRORS)
async def list_reports(
    server_id: uuid.UUID,
    ctx: Ctx,
    principal: CurrentPrincipal,
    playbook_key: Annotated[str | None, Query(alias="playbookKey", max_length=200)] = None,
    order_id: Annotated[uuid.UUID | None, Query(alias="orderId")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Any:
    """Newest first, without the Markdown (`GET /v1/reports/:id` has it)."""
    principal.require_server(str(server_id))
    async with ctx.db.read() as tx:
        await state.require_server(tx, str(server_id))
    items, next_cursor = await reports.list_reports(
        ctx.db,
        str(server_id),
        playbook_key=playbook_key,
        order_id=str(order_id) if order_id else None,
        limit=limit,
        cursor=cursor,
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/servers/{server_id}/schedules", response_model=list[SchedulePublic], responses=ERRORS)
async def list_schedules(server_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    principal.require_server(str(server_id))
    return await schedules.list_schedules(ctx.db, str(server_id))


@router.put("/servers/{server_id}/schedules", response_model=list[SchedulePublic], responses=ERRORS)
async def replace_schedules(
    server_id: uuid.UUID, body: SchedulesPut, ctx: Ctx, principal: CurrentPrincipal
) -> Any:
    """The server's collection schedules become exactly these; the others are disabled."""
    principal.require_server(str(server_id))
    wanted = [
        {"playbook_key": s.playbook_key, "interval_s": s.interval_seconds, "enabled": s.enabled}
        for s in body.schedules
    ]
    return await schedules.replace_schedules(ctx.db, str(server_id), wanted)


# --- reports and artifacts -------------------------------------------------------------------------
@router.get("/reports/{report_id}", response_model=ReportPublic, responses=ERRORS)
async def get_report(report_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    report = await reports.get_report(ctx.db, str(report_id))
    await _visible(principal, str(report["server_id"]), "report", str(report_id))
    return report


@router.get(
    "/artifacts/{artifact_id}",
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"text/plain": {}}, "description": "the raw log; its sha256 in X-Content-SHA256"},
        409: {"description": "deleted by retention (`artifact_deleted`)"},
    },
)
async def download_artifact(artifact_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    row = await ctx.artifacts.get(ctx.db, str(artifact_id))
    await _visible(principal, str(row["server_id"]), "artifact", str(artifact_id))
    row, data = await ctx.artifacts.read(ctx.db, str(artifact_id))
    return Response(
        content=data,
        media_type="text/plain; charset=utf-8",
        headers={
            SHA256_HEADER: row["sha256"],
            "Content-Disposition": f'attachment; filename="order-{row["order_id"]}.log"',
        },
    )


@router.post("/artifacts/{artifact_id}/pin", response_model=ArtifactPublic, responses=ERRORS)
async def pin_artifact(artifact_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Keep until unpinned (retention policy `pinned`)."""
    row = await ctx.artifacts.get(ctx.db, str(artifact_id))
    await _visible(principal, str(row["server_id"]), "artifact", str(artifact_id))
    return await ctx.artifacts.pin(ctx.db, str(artifact_id))


@router.delete("/artifacts/{artifact_id}/pin", response_model=ArtifactPublic, responses=ERRORS)
async def unpin_artifact(artifact_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Back to the policy its order gives it (`default`, `failed`, `short`), counted from its creation."""
    row = await ctx.artifacts.get(ctx.db, str(artifact_id))
    await _visible(principal, str(row["server_id"]), "artifact", str(artifact_id))
    return await ctx.artifacts.unpin(ctx.db, str(artifact_id))


# --- fleet -----------------------------------------------------------------------------------------
@router.get("/fleet/summary", response_model=FleetSummary, responses=ERRORS)
async def fleet_summary(ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Which servers need attention, and why (only the servers the caller may see)."""
    found = await fleet.summary(ctx.db, server_ids=principal.server_ids, stale_after=ctx.settings.stale_after)
    items = [
        {
            "server_id": i["view"]["server_id"],
            "server_name": i["view"]["server_name"],
            "up": i["view"]["online"],
            "health": i["view"]["health"],
            "attention": i["attention"],
            "apt_updates": i["view"]["apt_updates"],
            "apt_security": i["view"]["apt_security"],
            "reboot_required": i["view"]["apt_reboot_required"],
            "docker_status": i["view"]["docker_status"],
            "root_used_percent": i["view"]["root_used_percent"],
            "new_messages": i["new"],
            "last_error": _last_error(i["view"]),
        }
        for i in found["items"]
    ]
    return {**found, "items": items}


@router.post("/state/rebuild", response_model=RebuildDone, responses=ERRORS)
async def rebuild_state(ctx: Ctx, principal: CurrentPrincipal, body: RebuildRequest | None = None) -> Any:
    """Recompute machine state and hardware from the snapshots (one server, or all)."""
    server_id = body.server_id if body else None
    if server_id is not None:
        principal.require_server(server_id)
    return {"rebuilt": await state.rebuild_states(ctx.db, server_id)}
