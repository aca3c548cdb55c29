"""Tool routes: `POST /execute/<tool>` (the seed 001 runbook's URL, no /v1) and `GET /v1/tools`.

Thin on purpose: the body is parsed here, everything else (role, confirmation, schema, server,
audit, order, wait) is `services.tools.execute_tool`, the code path MCP shares.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from ikoma.api import bodies
from ikoma.api.deps import Ctx, CurrentPrincipal
from ikoma.api.errors import json_response
from ikoma.domain.errors import DomainError, Invalid
from ikoma.services import tools

router = APIRouter(tags=["tools"])

# body fields that steer the call rather than being the tool's params
CALL_FIELDS = ("serverId", "wait")

EXECUTE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The tool's params at the top level (see GET /v1/tools), plus optional "
        "`serverId` (id or name; default: IKOMA_DEFAULT_SERVER, else the `ikoma up` local server) "
        "and `wait` (seconds, capped by IKOMA_EXECUTE_MAX_WAIT). Read as JSON also without a "
        "Content-Type or with curl -d's form type; another media type is 415.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "serverId": {"type": "string"},
                        "wait": {"type": "number", "minimum": 0},
                    },
                    "additionalProperties": True,
                },
                "example": {"appName": "myapp"},
            }
        },
    }
}
EXECUTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the tool's result (its `result` step data)"},
    202: {"description": "still running at `wait`: {orderId, status, location}"},
    403: {"description": "the tool needs a higher role (`details.required`)"},
    404: {"description": "tool_not_found or server_not_found"},
    409: {"description": "order_cancelled"},
    422: {
        "description": "validation_error, confirmation_required, server_required, or the tool's error code"
    },
    502: {"description": "tool_failed"},
    503: {"description": "runner_lost, audit_unavailable (nothing was done) or database_unavailable"},
    504: {"description": "tool_timeout"},
}


def _call_body(raw: bytes, content_type: str | None) -> tuple[dict[str, Any], str | None, float | None]:
    """(params, serverId, wait) from an /execute body; an empty body is a call without params.

    The body's size is bounded by IKOMA_BODY_LIMIT_ADMIN as it is read (api/guard.py); its media type,
    JSON and NUL characters are checked by the rules every route shares (api/bodies.py).
    """
    bodies.check_media_type(content_type)
    body = bodies.parse_json(raw, empty={}, content_type=content_type)
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object of the tool's params", field="<body>")
    server_id = body.pop("serverId", None)
    wait = body.pop("wait", None)
    if server_id is not None and (not isinstance(server_id, str) or not 0 < len(server_id) <= 200):
        raise Invalid("serverId must be a server id or name", field="serverId")
    if wait is not None and (isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0):
        raise Invalid("wait must be a number of seconds, 0 or more", field="wait")
    return body, server_id, None if wait is None else float(wait)


@router.post("/execute/{tool}", openapi_extra=EXECUTE_BODY, responses=EXECUTE_RESPONSES, response_model=None)
async def execute(
    # no max_length here: FastAPI's refusal would leave no audit entry; execute_tool refuses a name
    # too long to be a tool as tool_not_found, audited like every other refusal
    tool: Annotated[str, Path()],
    request: Request,
    ctx: Ctx,
    principal: CurrentPrincipal,
) -> Response:
    """Run a tool on a server and wait for its answer; `X-Order-Id` names the order it created."""
    try:
        params, server_id, wait = _call_body(await request.body(), request.headers.get("content-type"))
    except DomainError as refusal:
        # every call leaves a trace, even one whose body could not be read as the tool's params
        await tools.audit_refusal(ctx, principal, tool=tool, refusal=refusal)
        raise
    outcome = await tools.execute_tool(
        ctx, principal, tool=tool, params=params, server_id=server_id, wait=wait, channel="execute"
    )
    return json_response(outcome.body, outcome.status_code, headers=outcome.headers)


@router.get("/v1/tools")
async def list_tools(ctx: Ctx, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """The tools (catalog playbooks) with their params schema, role, and whether this caller may run them."""
    return await tools.list_tools(ctx, principal)
