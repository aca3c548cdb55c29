"""Deployments and instances (seed 002 paths, without /v1): `POST /deployments`, `GET /instances`,
`GET|DELETE /instances/{id}`, `PUT /instances/{id}/archive`, `POST /reconcile`.

Reads are the observer's; deploying, terminating, archiving and reconciling the operator's
(api/policy.py). Parsing only here: services/instances.py and services/instance_loops.py do the work.
A deployment names its instance type, zone and model, each required: a missing one is 422
`<field>_required` (the seed's snake_case names are accepted, and their camelCase forms).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Security
from pydantic import Field

from ikoma.api.catalog_schemas import Price
from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.schemas import Public, UtcDatetime, Wire
from ikoma.domain.errors import Invalid
from ikoma.services.identity import Principal
from ikoma.services.instance_loops import from_context

router = APIRouter(tags=["instances"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the role does not allow it; csrf_failed"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {**ERRORS, 404: {"description": "instance_not_found"}}


class DeploymentRequest(Wire):
    instance_type_id: str | None = Field(default=None, max_length=100)
    zone_id: str | None = Field(default=None, max_length=100)
    model_id: str | None = Field(default=None, max_length=100)
    name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
    )


class StateChange(Public):
    from_state: str | None
    to_state: str
    reason: str | None
    at: UtcDatetime


class InstancePublic(Public):
    id: str
    name: str
    provider: str
    zone_id: str | None
    instance_type_id: str | None
    model_id: str | None
    zone: str
    instance_type: str
    hourly_price_eur: Price | None = Field(description="EUR per hour when it was created, decimal text")
    state: str = Field(
        description="provisioning, booting, ready, unreachable, terminating, terminated, failed, orphaned"
    )
    provider_id: str | None
    provider_state: str | None
    public_ip: str | None
    private_ip: str | None
    runner_id: str | None
    server_id: str | None
    attempts: int
    last_error: str | None
    last_error_message: str | None
    created_by: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    state_changed_at: UtcDatetime
    booting_at: UtcDatetime | None
    ready_at: UtcDatetime | None
    terminating_at: UtcDatetime | None
    terminated_at: UtcDatetime | None
    failed_at: UtcDatetime | None
    archived: bool
    archived_at: UtcDatetime | None
    history: list[StateChange] | None = Field(default=None, description="on GET /instances/{id} only")


def _actor(principal: Principal) -> str:
    return principal.actor[:100]


@router.post("/deployments", response_model=InstancePublic, status_code=201, responses=ERRORS)
async def create_deployment(body: DeploymentRequest, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """A new instance of `instance_type_id` in `zone_id` for `model_id`: created at the provider at
    once (the answer is `booting`, or still `provisioning` when the provider call is to be retried,
    or `failed`); it becomes `ready` once its runner enrolled and heartbeats."""
    given = {}
    for field in ("instance_type_id", "zone_id", "model_id"):
        value = getattr(body, field)
        if not value:
            raise Invalid(f"{field} is required", reason=f"{field}_required", field=field)
        given[field] = str(value)
    return await from_context(ctx).fleet.deploy(
        instance_type_id=given["instance_type_id"],
        zone_id=given["zone_id"],
        model_id=given["model_id"],
        name=body.name,
        actor=_actor(principal),
    )


@router.get("/instances", response_model=list[InstancePublic], responses=ERRORS)
async def list_instances(
    ctx: Ctx,
    archived: Annotated[
        bool | None, Query(description="true: archived ones only; false (default): the others")
    ] = False,
) -> Any:
    return await from_context(ctx).fleet.list_instances(archived=archived)


@router.get("/instances/{instance_id}", response_model=InstancePublic, responses=NOT_FOUND)
async def get_instance(instance_id: uuid.UUID, ctx: Ctx) -> Any:
    fleet = from_context(ctx).fleet
    row = await fleet.get(str(instance_id))
    return {**row, "history": await fleet.history(str(instance_id))}


@router.delete(
    "/instances/{instance_id}", response_model=InstancePublic, status_code=202, responses=NOT_FOUND
)
async def delete_instance(instance_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """`terminating` now; the terminator terminates it at the provider until the provider says it is
    gone (twice), then `terminated`. Already terminating or terminated: answered as it is."""
    return await from_context(ctx).fleet.request_termination(str(instance_id), actor=_actor(principal))


@router.put(
    "/instances/{instance_id}/archive",
    response_model=InstancePublic,
    responses={**NOT_FOUND, 409: {"description": "instance_not_terminated"}},
)
async def archive_instance(instance_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Out of the default list (`GET /instances?archived=true` shows it); terminated instances only."""
    return await from_context(ctx).fleet.archive(str(instance_id), actor=_actor(principal))


class ReconcileAnswer(Public):
    done: dict[str, int] = Field(description="what each loop did: provision_created, health_ready, ...")


@router.post("/reconcile", response_model=ReconcileAnswer, responses=ERRORS)
async def reconcile(ctx: Ctx) -> Any:
    """Run the instance loops once now (provisioning, health, terminator, orphan watchdog)."""
    return {"done": await from_context(ctx).reconcile()}
