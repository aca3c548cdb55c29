"""Runner admin routes: register, list, show, revoke, rotate the token, delete.

`{runner}` is a runner's id or its name. A client scoped to some servers only sees the runners attached
to them; any other runner does not exist for it (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Security
from starlette.responses import Response

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.schemas import RunnerCreate, RunnerCreated, RunnerPublic, RunnerRevoked
from ikoma.domain.errors import NotFound
from ikoma.services import runners
from ikoma.services.identity import Principal

router = APIRouter(prefix="/v1/runners", tags=["runners"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "the caller's role does not allow this"},
    404: {"description": "`runner_not_found`: no runner with this id or name"},
}
RunnerRef = Annotated[str, Path(min_length=1, max_length=200, description="The runner's id or name.")]


async def _check_scope(ctx: Ctx, principal: Principal, ref: str) -> None:
    """A scoped client may only act on runners attached to its servers."""
    if principal.server_ids is None:
        return
    runner = await runners.get_runner(ctx.db, ref, stale_after=ctx.settings.stale_after)
    if runner["server_id"] is None or not principal.can_see_server(str(runner["server_id"])):
        raise NotFound("no runner with this id or name", reason="runner_not_found", runner=ref)


@router.get("", response_model=list[RunnerPublic], responses=ERRORS)
async def list_runners(ctx: Ctx, principal: CurrentPrincipal) -> Any:
    found = await runners.list_runners(ctx.db, stale_after=ctx.settings.stale_after)
    if principal.server_ids is None:
        return found
    return [r for r in found if r["server_id"] is not None and principal.can_see_server(str(r["server_id"]))]


@router.post("", status_code=201, response_model=RunnerCreated, responses=ERRORS)
async def create_runner(body: RunnerCreate, ctx: Ctx) -> Any:
    return await runners.create_runner(ctx.db, name=body.name, stale_after=ctx.settings.stale_after)


@router.get("/{runner}", response_model=RunnerPublic, responses=ERRORS)
async def get_runner(runner: RunnerRef, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    await _check_scope(ctx, principal, runner)
    return await runners.get_runner(ctx.db, runner, stale_after=ctx.settings.stale_after)


@router.post("/{runner}/revoke", response_model=RunnerRevoked, responses=ERRORS)
async def revoke_runner(runner: RunnerRef, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Its token is refused from now on; the orders it holds are requeued or ended, never lost."""
    await _check_scope(ctx, principal, runner)
    return await runners.revoke_runner(
        ctx.db,
        ctx.reconciler,
        runner,
        actor=principal.actor,
        stale_after=ctx.settings.stale_after,
        broadcast=ctx.broadcast,
    )


@router.post(
    "/{runner}/rotate-token",
    response_model=RunnerCreated,
    responses={**ERRORS, 409: {"description": "`runner_revoked`: a revoked runner keeps no token"}},
)
async def rotate_token(runner: RunnerRef, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """A new token, shown once; the old one is refused at once."""
    await _check_scope(ctx, principal, runner)
    return await runners.rotate_token(
        ctx.db, runner, actor=principal.actor, stale_after=ctx.settings.stale_after, broadcast=ctx.broadcast
    )


@router.delete(
    "/{runner}",
    status_code=204,
    responses={**ERRORS, 409: {"description": "`runner_in_use`: orders refer to it; revoke it instead"}},
)
async def delete_runner(runner: RunnerRef, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await _check_scope(ctx, principal, runner)
    await runners.delete_runner(
        ctx.db, runner, actor=principal.actor, stale_after=ctx.settings.stale_after, broadcast=ctx.broadcast
    )
    return Response(status_code=204)
