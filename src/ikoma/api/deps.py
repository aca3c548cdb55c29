"""Typed dependencies for admin routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from ikoma.bootstrap import Context
from ikoma.services.identity import Principal


async def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(context)]

# Checked by PolicyMiddleware before routing; declared here so OpenAPI shows the requirement.
admin_key_header = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    description="The admin key or an API client token (also accepted: `Authorization: Bearer <token>`)",
)


async def principal(request: Request) -> Principal:
    """Set by PolicyMiddleware once the credential is verified and the route's role checked."""
    found: Principal = request.scope["state"]["principal"]
    return found


CurrentPrincipal = Annotated[Principal, Depends(principal)]
