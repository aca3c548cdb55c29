"""The tool catalog and tool answers as MCP shows them: one translation for `/mcp` and `ikoma mcp`.

The streamable HTTP endpoint (inside the API) and the stdio proxy (`ikoma mcp`, over REST) present a
catalog entry as the same MCP tool and an `/execute` answer as the same tool result, so an assistant
sees one IKOMA whichever way it is connected. The MCP arguments of a call are the `/execute` body:
the tool's params plus the optional `serverId` and `wait`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types as types
import orjson

# orjson with the API's options, so a structured result is the very JSON `/execute` answers
_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z

SERVER_ID = "serverId"
WAIT = "wait"

# What every tool accepts besides its own params (the /execute body fields); a tool's own property of
# the same name wins, so the catalog can narrow them.
EXECUTION_PROPERTIES: dict[str, dict[str, Any]] = {
    SERVER_ID: {
        "type": "string",
        "description": "Server to run on (id). Default: the server IKOMA is configured with "
        "(the machine `ikoma up` runs on).",
    },
    WAIT: {
        "type": "number",
        "minimum": 0,
        "description": "Seconds to wait for the result (capped by the server, 300 by default). Past "
        "it the answer is the order id and status, still running (HTTP 202 in /execute).",
    },
}

INSTRUCTIONS = (
    "IKOMA operations tools. Each tool runs a playbook on a managed server and answers its result; "
    "`serverId` picks the server (default: IKOMA's configured one). What a tool may do depends on the "
    "role of the API key: a refused call says which role it needs. Destructive tools (remove, restore) "
    "need `confirm` equal to the app name. Every call is recorded in IKOMA's audit log."
)


def tool_from_entry(entry: Mapping[str, Any]) -> types.Tool:
    """One catalog entry (as `GET /v1/tools` lists it) as an MCP tool."""
    schema: dict[str, Any] = copy.deepcopy(dict(entry.get("paramsSchema") or {}))
    # MCP requires an object schema at the root; the catalog's params are always an object
    schema["type"] = "object"
    properties: dict[str, Any] = dict(schema.get("properties") or {})
    for name, spec in EXECUTION_PROPERTIES.items():
        properties.setdefault(name, copy.deepcopy(spec))
    schema["properties"] = properties
    description = str(entry.get("description") or "")
    if entry.get("allowed") is False:
        # listed so the assistant can tell the user what is out of reach and why, rather than guess
        description = f"{description} (Needs role {entry.get('minRole')}; this key cannot run it.)".strip()
    read_only = bool(entry.get("readOnly"))
    return types.Tool(
        name=str(entry["key"]),
        title=entry.get("name"),
        description=description or None,
        input_schema=schema,
        annotations=types.ToolAnnotations(
            title=entry.get("name"),
            read_only_hint=read_only,
            destructive_hint=bool(entry.get("destructive")),
            # a read changes nothing, so repeating it changes nothing either; nothing else is claimed
            idempotent_hint=True if read_only else None,
        ),
    )


# --- resources: the fleet summary and each server's state, as GET /v1/fleet/summary and
# GET /v1/servers/{id}/state answer them ------------------------------------------------------------
FLEET_SUMMARY_URI = "ikoma://fleet/summary"
SERVER_STATE_TEMPLATE = "ikoma://servers/{serverId}/state"
_SERVER_STATE_URI = re.compile(r"ikoma://servers/([0-9A-Fa-f-]{36})/state")
JSON_MIME = "application/json"


def server_state_uri(server_id: str) -> str:
    return f"ikoma://servers/{server_id}/state"


def server_of_state_uri(uri: str) -> str | None:
    """The server id a state URI names, or None when `uri` is not one."""
    found = _SERVER_STATE_URI.fullmatch(uri)
    return found.group(1) if found else None


def resources(servers: Sequence[Mapping[str, Any]]) -> types.ListResourcesResult:
    """The fleet summary, and the state of each server the caller may see."""
    listed = [
        types.Resource(
            uri=FLEET_SUMMARY_URI,
            name="fleet-summary",
            title="Fleet summary",
            description="Which servers need attention, and why, most pressing first.",
            mime_type=JSON_MIME,
        )
    ]
    listed += [
        types.Resource(
            uri=server_state_uri(str(server["id"])),
            name=f"{server['name']}-state",
            title=f"{server['name']} state",
            description=f"Machine state of server {server['name']}: runner up, health, apt, docker, metrics.",
            mime_type=JSON_MIME,
        )
        for server in servers
    ]
    return types.ListResourcesResult(resources=listed)


def resource_templates() -> types.ListResourceTemplatesResult:
    return types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(
                uri_template=SERVER_STATE_TEMPLATE,
                name="server-state",
                title="Server state",
                description="Machine state of one server (its id, as GET /v1/servers lists it).",
                mime_type=JSON_MIME,
            )
        ]
    )


def resource_contents(uri: str, body: Any) -> types.ReadResourceResult:
    """A resource as the JSON text its REST route answers."""
    text = orjson.dumps(body, option=_JSON_OPTIONS).decode()
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type=JSON_MIME, text=text)]
    )


def split_arguments(arguments: Mapping[str, Any] | None) -> tuple[dict[str, Any], Any, Any]:
    """MCP arguments → (the tool's params, serverId, wait), as the `/execute` body is read."""
    params = dict(arguments or {})
    return params, params.pop(SERVER_ID, None), params.pop(WAIT, None)


def to_json(value: Any) -> Any:
    """`value` as the API renders it (datetimes as ISO 8601 with Z, and so on)."""
    return orjson.loads(orjson.dumps(value, option=_JSON_OPTIONS))


def tool_result(status_code: int, body: Any) -> types.CallToolResult:
    """An `/execute` answer (status, JSON body) as a tool result: the body structured and as text.

    A status of 400 and above is a tool error (`isError`), so the assistant reads it as a failure it
    can explain; 202 (still running after `wait`) is not an error: its body carries the order id.
    """
    data = to_json(body)
    # structuredContent must be an object before protocol 2026-07-28; the catalog's bodies always are
    structured = data if isinstance(data, dict) else {"result": data}
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    if status_code >= 400 and isinstance(data, dict) and isinstance(data.get("message"), str):
        text = f"{refusal_text(data)}\n{text}"
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content=structured,
        is_error=status_code >= 400,
    )


def error_body(reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The API's error shape `{"reason", "message", "details"?, "errors"?}`."""
    body: dict[str, Any] = {"reason": reason, "message": message}
    rest = dict(details or {})
    errors = rest.pop("errors", None)
    if rest:
        body["details"] = rest
    if errors:
        body["errors"] = errors
    return body


def refusal_text(body: Mapping[str, Any]) -> str:
    """One line an assistant can repeat: the reason, the sentence, and the role needed if any."""
    line = f"{body.get('reason')}: {body.get('message')}"
    details = body.get("details")
    required = details.get("required") if isinstance(details, Mapping) else None
    if required and f"role {required}" not in line:
        line += f" (needs role {required})"
    return line
