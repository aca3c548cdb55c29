"""mock provider state: mock_machines and mock_scenarios (issue 16, providers/mock/store.py)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 21:50:00

The simulated cloud's memory (the Mock provider is "stateful in the database", seed 002): the
machines it runs, and the failure scenarios switched on. Times are the simulator's clock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_STATES = "'creating','starting','running','stopping','stopped','terminating','terminated'"


def upgrade() -> None:
    op.create_table(
        "mock_machines",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("image", sa.String(255), nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("public_ip", sa.String(45), nullable=True),
        sa.Column("private_ip", sa.String(45), nullable=True),
        sa.Column("user_data", sa.Text(), nullable=True),
        sa.Column("flags", _JSON, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(f"state IN ({_STATES})", name=op.f("ck_mock_machines_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mock_machines")),
    )
    op.create_index("ix_mock_machines_state", "mock_machines", ["state"])
    op.create_table(
        "mock_scenarios",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("instance_type", sa.String(64), nullable=True),
        sa.Column("calls", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.CheckConstraint("calls IS NULL OR calls > 0", name=op.f("ck_mock_scenarios_calls")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mock_scenarios")),
    )


def downgrade() -> None:
    op.drop_table("mock_scenarios")
    op.drop_index("ix_mock_machines_state", table_name="mock_machines")
    op.drop_table("mock_machines")
