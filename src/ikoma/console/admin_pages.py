"""The admin pages: users (`/users/manage`), API clients (`/api-clients/manage`) and runners with their
bootstrap tokens (`/runners/manage`). Admin only (api/policy.py), as the routes they call.

They read through the services and change nothing themselves: every button is a form that
static/ikoma.js sends to the existing REST route (`/users*`, `/v1/api-clients*`, `/v1/runners*`,
`/v1/runner-bootstrap-tokens`), so the policy table decides and the audit records. A token the API
shows once (an API client's, a bootstrap token) is put in the page by static/admin.js and never
rendered by the server.
"""

from __future__ import annotations

import shlex
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.rendering import page
from ikoma.domain.roles import ROLE_NAMES
from ikoma.services import api_clients, runners, servers, users

router = APIRouter(include_in_schema=False)

# how long a new API client's token lives (seconds; "" = until revoked)
CLIENT_LIFETIMES = (("", "Until revoked"), ("86400", "1 day"), ("2592000", "30 days"), ("31536000", "1 year"))
# a bootstrap token is short-lived: it is typed on the new machine soon after (60 s to 7 days)
BOOTSTRAP_LIFETIMES = (("3600", "1 hour"), ("86400", "1 day"), ("604800", "7 days"))


def enrol_prefix(api_url: str) -> str:
    """The start of the command the new machine runs (`admin.js` appends the token): the API URL
    quoted for a POSIX shell, since it comes from the request's Host header."""
    return f"ikoma runner register --api-url {shlex.quote(api_url)} --bootstrap-token "


def public_url(request: Request) -> str:
    """The URL this console was reached at: what a runner on another machine calls too (behind a
    proxy, the proxy's address, as the browser used it)."""
    return str(request.base_url).rstrip("/")


@router.get("/users/manage")
async def users_page(request: Request, ctx: Ctx) -> Response:
    return page(request, "users.html", {"users": await users.list_users(ctx.db), "roles": ROLE_NAMES})


@router.get("/api-clients/manage")
async def api_clients_page(request: Request, ctx: Ctx) -> Response:
    clients = await api_clients.list_api_clients(ctx.db)
    names = {str(s["id"]): str(s["name"]) for s in await servers.list_servers(ctx.db)}
    return page(
        request,
        "api_clients.html",
        {
            "clients": clients,
            "roles": ROLE_NAMES,
            "server_names": names,
            "lifetimes": CLIENT_LIFETIMES,
        },
    )


@router.get("/runners/manage")
async def runners_page(request: Request, ctx: Ctx) -> Response:
    known = await runners.list_runners(ctx.db, stale_after=ctx.settings.stale_after)
    every_server = await servers.list_servers(ctx.db)
    # a bootstrap token may name a server; one that has a runner already would be refused (409)
    free: list[dict[str, Any]] = [s for s in every_server if not s.get("runner_id")]
    return page(
        request,
        "runners.html",
        {
            "runners": known,
            "free_servers": free,
            "lifetimes": BOOTSTRAP_LIFETIMES,
            "enrol_prefix": enrol_prefix(public_url(request)),
        },
    )
