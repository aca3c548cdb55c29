"""`GET /action_types` (seed 002): how the console shows each kind of action log entry — a label, a
colour and an icon per action type — so badges read the same everywhere.

An entry's type is the start of its `action`: a REST mutation (`POST`, `PUT`, `DELETE`), a tool call
(`execute:`, `mcp:`) or what IKOMA did by itself at a provider (`provider.create`, `provider.adopt`,
`provider.terminate`, `provider.orphan_found`, channel `system`) or an instance's move
(`instance.<state>`, channel `system`). Icons are names of the console's
icon set; colours are CSS colour names the console maps to its palette.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Security

from ikoma.api.deps import admin_key_header

router = APIRouter(tags=["audit"], dependencies=[Security(admin_key_header)])

ACTION_TYPES: tuple[dict[str, str], ...] = (
    {"type": "provider.create", "label": "Create instance", "color": "green", "icon": "server-plus"},
    {"type": "provider.adopt", "label": "Adopt instance", "color": "teal", "icon": "link"},
    {"type": "provider.terminate", "label": "Terminate instance", "color": "red", "icon": "server-off"},
    {"type": "provider.orphan_found", "label": "Orphan found", "color": "orange", "icon": "alert-triangle"},
    {"type": "instance.", "label": "Instance state", "color": "gray", "icon": "activity"},
    {"type": "POST", "label": "Create", "color": "blue", "icon": "plus"},
    {"type": "PUT", "label": "Update", "color": "indigo", "icon": "edit"},
    {"type": "PATCH", "label": "Update", "color": "indigo", "icon": "edit"},
    {"type": "DELETE", "label": "Delete", "color": "red", "icon": "trash"},
    {"type": "execute:", "label": "Tool call", "color": "violet", "icon": "terminal"},
    {"type": "mcp:", "label": "MCP tool call", "color": "violet", "icon": "cpu"},
)


@router.get("/action_types", responses={401: {"description": "missing or invalid credential"}})
async def list_action_types() -> dict[str, Any]:
    """`{items}`: every action type with its `label`, `color` and `icon`; an entry's type is the
    longest `type` its `action` starts with."""
    return {"items": list(ACTION_TYPES)}
