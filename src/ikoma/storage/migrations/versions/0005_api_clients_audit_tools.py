"""API clients, the hash-chained audit log, and the operations tools catalog

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 22:55:00

The tools (seed 001's runbook) are playbooks with a role and a destructive flag; they are seeded here
the way 0002 seeded the built-ins: a key that already exists is left as it is. The table shape is
frozen here on purpose: a migration must not follow later edits of the models.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ikoma.storage.clock import db_now

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NS = uuid.UUID("6f1d6c1e-2c4b-4b9e-9d0e-1b5e7f3c2a10")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

# The rule the runner checks again before touching the disk (defence in depth).
APP_NAME: dict[str, Any] = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}
BACKUP_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
# Destructive tools ask the caller to type the app's name again.
CONFIRM: dict[str, Any] = {"type": "string", "description": "must equal appName"}


def _params(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": properties,
    }


def _tool(
    key: str,
    name: str,
    description: str,
    params: dict[str, Any],
    role: str,
    *,
    destructive: bool = False,
    timeout: int = 300,
) -> dict[str, Any]:
    return {
        "key": key,
        "name": name,
        "description": description,
        "params_schema": params,
        "min_role": role,
        "destructive": destructive,
        "default_timeout_s": timeout,
        # a tool is answered to a waiting caller: a silent second run would surprise them
        "max_attempts": 1,
    }


_APP = _params(["appName"], appName=APP_NAME)

TOOLS: list[dict[str, Any]] = [
    # observer
    _tool(
        "apps.env.example",
        "App env template",
        "The variables the app needs, as a .env template.",
        _APP,
        "observer",
    ),
    _tool(
        "apps.validate",
        "Validate app",
        "Manifest and compose file parse; every required variable is set.",
        _APP,
        "observer",
    ),
    _tool(
        "apps.status",
        "App status",
        "Running state, processes, ports, uptime, current release.",
        _APP,
        "observer",
    ),
    _tool(
        "apps.health",
        "App health",
        "Health of every process of the app (HTTP health path).",
        _APP,
        "observer",
    ),
    _tool(
        "apps.list",
        "List apps",
        "The apps under the apps root with their runtime and state.",
        _params([]),
        "observer",
    ),
    _tool(
        "apps.logs",
        "App logs",
        "The last lines of the app's process logs.",
        _params(
            ["appName"],
            appName=APP_NAME,
            lines={"type": "integer", "minimum": 1, "maximum": 5000, "default": 100},
            process={"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"},
        ),
        "observer",
    ),
    _tool("db.status", "Database status", "Exists, size, applied migrations, connections.", _APP, "observer"),
    _tool(
        "artifact.verify_release",
        "Verify release",
        "Compare the app's files with the sha256 manifest of its current release.",
        _APP,
        "observer",
    ),
    _tool(
        "platform.check",
        "Platform check",
        "Docker, PostgreSQL, apps root and disk: {healthy, checks}.",
        _params([]),
        "observer",
        timeout=120,
    ),
    # builder
    _tool(
        "apps.init",
        "Initialise app",
        "Create the app's directory structure and manifest under the apps root.",
        _params(
            ["appName"],
            appName=APP_NAME,
            runtime={"type": "string", "enum": ["auto", "process", "compose"], "default": "auto"},
        ),
        "builder",
    ),
    _tool(
        "db.create",
        "Create database",
        "A PostgreSQL role and database for the app; the password goes to the app's .env only.",
        _APP,
        "builder",
    ),
    _tool(
        "db.migrate",
        "Migrate database",
        "Apply the app's SQL migrations (or `sql`), each in a transaction, recorded with a checksum.",
        _params(["appName"], appName=APP_NAME, sql={"type": "string", "maxLength": 1048576}),
        "builder",
        timeout=900,
    ),
    # operator
    _tool(
        "deploy.up", "Deploy", "Validate, start the app and record a release.", _APP, "operator", timeout=900
    ),
    _tool("deploy.down", "Stop app", "Stop the app's processes or containers.", _APP, "operator"),
    _tool("deploy.restart", "Restart app", "Restart the app's processes or containers.", _APP, "operator"),
    _tool(
        "db.backup",
        "Back up database",
        "pg_dump (custom format) into the backups folder, with its sha256.",
        _params(["appName"], appName=APP_NAME, backupName=BACKUP_NAME),
        "operator",
        timeout=3600,
    ),
    _tool(
        "deploy.rollback",
        "Roll back",
        "Restore the previous (or named) release's files and redeploy.",
        _params(
            ["appName", "confirm"],
            appName=APP_NAME,
            confirm=CONFIRM,
            release={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
        ),
        "operator",
        destructive=True,
        timeout=900,
    ),
    _tool(
        "db.restore",
        "Restore database",
        "pg_restore a backup into the app's database after checking its sha256.",
        _params(
            ["appName", "backupName", "confirm"], appName=APP_NAME, backupName=BACKUP_NAME, confirm=CONFIRM
        ),
        "operator",
        destructive=True,
        timeout=3600,
    ),
    _tool(
        "apps.remove",
        "Remove app",
        "Stop the app and delete its directory (its database is kept unless dropDatabase).",
        _params(
            ["appName", "confirm"],
            appName=APP_NAME,
            confirm=CONFIRM,
            dropDatabase={"type": "boolean", "default": False},
        ),
        "operator",
        destructive=True,
    ),
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
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("server_ids", _JSON, nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('observer','builder','operator','admin')", name=op.f("ck_api_clients_role")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_clients_token_hash")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.String(length=100), nullable=True),
        sa.Column("token_prefix", sa.String(length=16), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("params", _JSON, nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.String(length=36), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("outcome IN ('allowed','denied','error')", name=op.f("ck_audit_log_outcome")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)

    conn = op.get_bind()
    existing = set(conn.execute(sa.select(_playbooks.c.key)).scalars())
    rows = [
        {**tool, "id": str(uuid.uuid5(_NS, tool["key"])), "builtin": True}
        for tool in TOOLS
        if tool["key"] not in existing
    ]
    if rows:
        conn.execute(sa.insert(_playbooks), rows)
    # any command on the machine is the admin's call (Rundeck/AWX reserve ad hoc commands the same way)
    conn.execute(
        sa.update(_playbooks)
        .where(_playbooks.c.key == "shell.exec", _playbooks.c.builtin.is_(True))
        .values(min_role="admin")
    )


def downgrade() -> None:
    op.get_bind().execute(
        sa.update(_playbooks)
        .where(_playbooks.c.key == "shell.exec", _playbooks.c.builtin.is_(True))
        .values(min_role="operator")
    )
    keys = [tool["key"] for tool in TOOLS]
    op.get_bind().execute(
        sa.delete(_playbooks).where(_playbooks.c.key.in_(keys), _playbooks.c.builtin.is_(True))
    )
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_clients")
