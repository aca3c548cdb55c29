"""API client routes: create (the token is shown once), list, show, revoke."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Security

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.schemas import ApiClientCreate, ApiClientIssued, ApiClientPublic
from ikoma.domain.roles import Role
from ikoma.services import api_clients

router = APIRouter(prefix="/v1/api-clients", tags=["api-clients"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "needs the admin role"},
}


@router.post("", status_code=201, response_model=ApiClientIssued, responses=ERRORS)
async def create_api_client(body: ApiClientCreate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await api_clients.create_api_client(
        ctx.db,
        name=body.name,
        role=Role.parse(body.role),
        created_by=principal.actor,
        expires_at=body.expires_at,
        expires_in_s=body.expires_in_seconds,
        server_ids=[str(s) for s in body.server_ids] if body.server_ids is not None else None,
    )


@router.get("", response_model=list[ApiClientPublic], responses=ERRORS)
async def list_api_clients(ctx: Ctx) -> Any:
    return await api_clients.list_api_clients(ctx.db)


@router.get("/{client_id}", response_model=ApiClientPublic, responses=ERRORS)
async def get_api_client(client_id: uuid.UUID, ctx: Ctx) -> Any:
    return await api_clients.get_api_client(ctx.db, str(client_id))


@router.delete("/{client_id}", response_model=ApiClientPublic, responses=ERRORS)
async def revoke_api_client(client_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Revoked at once: the token's next request is refused with 401."""
    return await api_clients.revoke_api_client(ctx.db, str(client_id), actor=principal.actor)
