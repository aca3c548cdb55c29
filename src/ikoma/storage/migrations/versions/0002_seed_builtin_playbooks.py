"""seed the built-in playbook catalog

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 20:20:00

Seeds go through a migration (seed 000's policy), idempotently: a key that already exists is left as it
is, so re-running on a database that was seeded by hand changes nothing. The table shape is frozen here
on purpose: a migration must not follow later edits of the models.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NS = uuid.UUID("6f1d6c1e-2c4b-4b9e-9d0e-1b5e7f3c2a10")

_EMPTY: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {}}

BUILTINS: list[dict[str, Any]] = [
    {
        "key": "system.test_ping",
        "name": "Test ping",
        "description": "Echo a message back with timings: proves the runner path end to end.",
        "params_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"message": {"type": "string", "maxLength": 1000}},
        },
        "min_role": "observer",
        "destructive": False,
        "default_timeout_s": 60,
        "max_attempts": 3,
    },
    {
        "key": "system.facts",
        "name": "System facts",
        "description": "OS, kernel, arch, virtualization, CPU, memory, disks, network interfaces, GPUs.",
        "params_schema": _EMPTY,
        "min_role": "observer",
        "destructive": False,
        "default_timeout_s": 120,
        "max_attempts": 3,
    },
    {
        "key": "system.metrics",
        "name": "System metrics",
        "description": "Load averages, memory used/available, filesystems with used percent and warnings.",
        "params_schema": _EMPTY,
        "min_role": "observer",
        "destructive": False,
        "default_timeout_s": 60,
        "max_attempts": 3,
    },
    {
        "key": "apt.analyze",
        "name": "APT analyze",
        "description": "Pending upgrades (security or not), reboot required, held packages, notices.",
        "params_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"refresh": {"type": "boolean", "default": False}},
        },
        "min_role": "observer",
        "destructive": False,
        "default_timeout_s": 600,
        "max_attempts": 2,
    },
    {
        "key": "apt.upgrade",
        "name": "APT upgrade",
        "description": "Non-interactive upgrade; dryRun and packages params; reports reboot-required.",
        "params_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "dryRun": {"type": "boolean", "default": False},
                "packages": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.:-]*$"},
                },
            },
        },
        "min_role": "operator",
        "destructive": True,
        "default_timeout_s": 3600,
        "max_attempts": 1,
    },
    {
        "key": "docker.status",
        "name": "Docker status",
        "description": "Engine present and running, stacks, containers, prunable space.",
        "params_schema": _EMPTY,
        "min_role": "observer",
        "destructive": False,
        "default_timeout_s": 120,
        "max_attempts": 2,
    },
    {
        "key": "docker.prune",
        "name": "Docker prune",
        "description": "Remove unused containers, networks, images and build cache.",
        "params_schema": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"all": {"type": "boolean", "default": False}},
        },
        "min_role": "operator",
        "destructive": True,
        "default_timeout_s": 1800,
        "max_attempts": 1,
    },
    {
        "key": "shell.exec",
        "name": "Execute a command",
        "description": "Run one argv list (never through a shell).",
        "params_schema": {
            "type": "object",
            "additionalProperties": False,
            "required": ["argv"],
            "properties": {"argv": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        },
        "min_role": "operator",
        "destructive": True,
        "default_timeout_s": 600,
        "max_attempts": 1,
    },
]

_playbooks = sa.table(
    "playbooks",
    sa.column("id", sa.Uuid(as_uuid=False)),
    sa.column("key", sa.String),
    sa.column("name", sa.String),
    sa.column("description", sa.Text),
    sa.column("params_schema", sa.JSON),
    sa.column("min_role", sa.String),
    sa.column("destructive", sa.Boolean),
    sa.column("default_timeout_s", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("builtin", sa.Boolean),
)


def upgrade() -> None:
    conn = op.get_bind()
    existing = set(conn.execute(sa.select(_playbooks.c.key)).scalars())
    rows = [
        {**playbook, "id": str(uuid.uuid5(_NS, playbook["key"])), "builtin": True}
        for playbook in BUILTINS
        if playbook["key"] not in existing
    ]
    if rows:
        conn.execute(sa.insert(_playbooks), rows)


def downgrade() -> None:
    keys = [playbook["key"] for playbook in BUILTINS]
    op.get_bind().execute(
        sa.delete(_playbooks).where(_playbooks.c.key.in_(keys), _playbooks.c.builtin.is_(True))
    )
