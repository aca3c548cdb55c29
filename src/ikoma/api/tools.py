"""Tool routes: `POST /execute/<tool>` (the seed 001 runbook's URL, no /v1) and `GET /v1/tools`.

Thin on purpose: the body is parsed here, everything else (role, confirmation, schema, server,
audit, order, wait) is `services.tools.execute_tool`, the code path MCP shares.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from ikoma.api.deps import Ctx, CurrentPrincipal
from ikoma.api.errors import json_response
from ikoma.domain.errors import BadRequest, DomainError, Invalid
from ikoma.services import tools

router = APIRouter(tags=["tools"])

# db.migrate's `sql` may be 1 MiB; anything far beyond is not a tool call
MAX_BODY_BYTES = 2 * 1024 * 1024
# body fields that steer the call rather than being the tool's params
CALL_FIELDS = ("serverId", "wait")

EXECUTE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "The tool's params at the top level (see GET /v1/tools), plus optional "
        "`serverId` (id or name; default: IKOMA_DEFAULT_SERVER, else the `ikoma up` local server) "
        "and `wait` (seconds, capped by IKOMA_EXECUTE_MAX_WAIT). Read as JSON whatever the "
        "Content-Type, as `curl -d` sends.",
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
    503: {"description": "runner_lost"},
    504: {"description": "tool_timeout"},
}


def _call_body(raw: bytes) -> tuple[dict[str, Any], str | None, float | None]:
    """(params, serverId, wait) from an /execute body; an empty body is a call without params."""
    if len(raw) > MAX_BODY_BYTES:
        raise Invalid("request body is too large", reason="payload_too_large", limitBytes=MAX_BODY_BYTES)
    if not raw.strip():
        return {}, None, None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", reason="invalid_json") from None
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
        params, server_id, wait = _call_body(await request.body())
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
