"""The run page (`/run`): run a playbook (every playbook is also a tool) on a server.

The form is generated from each playbook's params schema (console/forms.py) and posts
`{serverId, playbookKey, params}` to `POST /v1/orders`; the browser then goes to the new order's page.
Only the playbooks the caller's role may run are offered (the API checks the playbook's `minRole`
anyway), and an observer is offered none: the page says so and shows no Run button.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from ikoma.api.deps import Ctx
from ikoma.console.forms import FormField, form_fields, needs_acknowledgement
from ikoma.console.rendering import can, page, principal_of
from ikoma.domain.roles import Role
from ikoma.services import playbooks, servers

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class RunnablePlaybook:
    key: str
    name: str
    description: str
    min_role: str
    destructive: bool
    fields: list[FormField]
    acknowledge: bool  # a destructive playbook without a typed confirmation: a box to tick


def runnable(catalog: list[dict[str, Any]], role: Role) -> list[RunnablePlaybook]:
    """The playbooks `role` may run, with their form fields (observers run nothing from the console)."""
    if role <= Role.OBSERVER:
        return []
    found = []
    for playbook in catalog:
        needed = Role.parse(str(playbook["min_role"]))
        if role < needed:
            continue
        destructive = bool(playbook["destructive"])
        fields = form_fields(playbook["params_schema"], destructive=destructive)
        found.append(
            RunnablePlaybook(
                key=str(playbook["key"]),
                name=str(playbook["name"]),
                description=str(playbook["description"] or ""),
                min_role=needed.label,
                destructive=destructive,
                fields=fields,
                acknowledge=needs_acknowledgement(destructive, fields),
            )
        )
    return found


@router.get("/run")
async def run_page(
    request: Request,
    ctx: Ctx,
    server: Annotated[str | None, Query(max_length=100, description="the server to preselect")] = None,
    playbook: Annotated[str | None, Query(max_length=200, description="the playbook to preselect")] = None,
) -> Response:
    principal = principal_of(request)
    role = principal.role if principal is not None else Role.OBSERVER
    offered = (
        runnable(await playbooks.list_playbooks(ctx.db), role) if can(request, "POST", "/v1/orders") else []
    )
    targets = [
        s
        for s in await servers.list_servers(ctx.db)
        if principal is None or principal.can_see_server(str(s["id"]))
    ]
    server_id = server if any(str(s["id"]) == server for s in targets) else None
    chosen = next((p for p in offered if p.key == playbook), offered[0] if offered else None)
    return page(
        request,
        "run.html",
        {
            "playbooks": offered,
            "servers": targets,
            "server_id": server_id or (str(targets[0]["id"]) if len(targets) == 1 else ""),
            "chosen": chosen.key if chosen else "",
            "role": role.label,
        },
    )
