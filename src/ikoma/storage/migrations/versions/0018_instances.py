"""instances, their state history, and this installation's id (issue 16)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 21:50:00

Seed 002's `instances` (one row per deployment, kept after termination, with the ownership tags, the
price copied at creation, the lease that makes provider calls safe to retry, and the enrolment link to
its one-time runner bootstrap token) and `instance_state_changes` (every transition with the database
clock's time: what FinOps bills from). `installation` gets its one row here: a random id, the value of
the ownership tag on every machine this IKOMA creates. The shapes are frozen here on purpose.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ikoma.storage.clock import db_now

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_ID = sa.Uuid(as_uuid=False)
_TS = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(12, 6).with_variant(sa.String(32), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_STATES = "'provisioning','booting','ready','unreachable','terminating','terminated','failed','orphaned'"


def upgrade() -> None:
    installation = op.create_table(
        "installation",
        sa.Column("id", _ID, nullable=False),
        sa.Column("created_at", _TS, server_default=db_now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    op.bulk_insert(installation, [{"id": str(uuid.uuid4())}])
    op.create_table(
        "instances",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("zone_id", _ID, nullable=True),
        sa.Column("instance_type_id", _ID, nullable=True),
        sa.Column("model_id", _ID, nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("hourly_price_eur", _MONEY, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column("provider_state", sa.String(length=32), nullable=True),
        sa.Column("public_ip", sa.String(length=45), nullable=True),
        sa.Column("private_ip", sa.String(length=45), nullable=True),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("bootstrap_token_id", _ID, nullable=True),
        sa.Column("runner_id", _ID, nullable=True),
        sa.Column("server_id", _ID, nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("missing_checks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gone_checks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("last_error_message", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.String(length=100), nullable=True),
        sa.Column("created_at", _TS, server_default=db_now(), nullable=False),
        sa.Column("updated_at", _TS, server_default=db_now(), nullable=False),
        sa.Column("state_changed_at", _TS, server_default=db_now(), nullable=False),
        sa.Column("booting_at", _TS, nullable=True),
        sa.Column("ready_at", _TS, nullable=True),
        sa.Column("terminating_at", _TS, nullable=True),
        sa.Column("terminated_at", _TS, nullable=True),
        sa.Column("failed_at", _TS, nullable=True),
        sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("archived_at", _TS, nullable=True),
        sa.CheckConstraint(f"state IN ({_STATES})", name=op.f("ck_instances_state")),
        sa.ForeignKeyConstraint(["zone_id"], ["zones.id"], name=op.f("fk_instances_zone_id_zones")),
        sa.ForeignKeyConstraint(
            ["instance_type_id"],
            ["instance_types.id"],
            name=op.f("fk_instances_instance_type_id_instance_types"),
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_instances_model_id_models")),
        sa.ForeignKeyConstraint(
            ["bootstrap_token_id"],
            ["runner_bootstrap_tokens.id"],
            name=op.f("fk_instances_bootstrap_token_id_runner_bootstrap_tokens"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["runner_id"], ["runners.id"], name=op.f("fk_instances_runner_id_runners"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_instances_server_id_servers"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    op.create_index(op.f("ix_instances_state"), "instances", ["state"])
    op.create_index(op.f("ix_instances_provider_id"), "instances", ["provider_id"])
    op.create_table(
        "instance_state_changes",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("instance_id", _ID, nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("at", _TS, server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_state_changes_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_state_changes")),
    )
    op.create_index(op.f("ix_instance_state_changes_instance_id"), "instance_state_changes", ["instance_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_instance_state_changes_instance_id"), table_name="instance_state_changes")
    op.drop_table("instance_state_changes")
    op.drop_index(op.f("ix_instances_provider_id"), table_name="instances")
    op.drop_index(op.f("ix_instances_state"), table_name="instances")
    op.drop_table("instances")
    op.drop_table("installation")
