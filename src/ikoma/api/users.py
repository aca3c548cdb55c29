"""`/users*` (admin): list, create, show, update (role, disabled, password reset), delete."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response, Security

from ikoma.api.deps import Ctx, CurrentPrincipal, admin_key_header
from ikoma.api.user_schemas import UserCreate, UserPublic, UserUpdate
from ikoma.domain.roles import Role
from ikoma.services import users

router = APIRouter(prefix="/users", tags=["users"], dependencies=[Security(admin_key_header)])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid credential"},
    403: {"description": "needs the admin role; csrf_failed"},
}
CONFLICTS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"description": "username_taken, email_taken, or last_admin"},
}


@router.get("", response_model=list[UserPublic], responses=ERRORS)
async def list_users(ctx: Ctx) -> Any:
    return await users.list_users(ctx.db)


@router.post("", status_code=201, response_model=UserPublic, responses=CONFLICTS)
async def create_user(body: UserCreate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    return await users.create_user(
        ctx.db,
        username=body.username,
        email=body.email,
        password=body.password,
        role=Role.parse(body.role),
        first_name=body.first_name,
        last_name=body.last_name,
        actor=principal.actor,
    )


@router.get("/{user_id}", response_model=UserPublic, responses=ERRORS)
async def get_user(user_id: uuid.UUID, ctx: Ctx) -> Any:
    return await users.get_user(ctx.db, str(user_id))


@router.put("/{user_id}", response_model=UserPublic, responses=CONFLICTS)
async def update_user(user_id: uuid.UUID, body: UserUpdate, ctx: Ctx, principal: CurrentPrincipal) -> Any:
    """Disabling the user, or setting their password, ends their sessions at once."""
    changes = body.model_dump(exclude_unset=True)
    return await users.update_user(ctx.db, str(user_id), changes, actor=principal.actor)


@router.delete("/{user_id}", status_code=204, responses=CONFLICTS)
async def delete_user(user_id: uuid.UUID, ctx: Ctx, principal: CurrentPrincipal) -> Response:
    await users.delete_user(ctx.db, str(user_id), actor=principal.actor)
    return Response(status_code=204)
