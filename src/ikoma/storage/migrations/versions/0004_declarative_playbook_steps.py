"""declarative playbook steps

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 21:35:09.198852
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "steps",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )

    with op.batch_alter_table("playbooks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "steps",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("playbooks", schema=None) as batch_op:
        batch_op.drop_column("steps")

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("steps")
