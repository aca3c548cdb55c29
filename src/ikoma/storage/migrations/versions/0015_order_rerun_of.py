"""orders.rerun_of: the order a re-run repeats (POST /v1/orders/{id}/rerun, issue 15)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 21:20:00

A nullable link to the original order (kept NULL if that row ever goes), and an index to list an
order's re-runs with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rerun_of", sa.Uuid(as_uuid=False), nullable=True))
        batch_op.create_foreign_key(
            "fk_orders_rerun_of_orders", "orders", ["rerun_of"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_index("ix_orders_rerun_of", ["rerun_of"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_rerun_of")
        batch_op.drop_constraint("fk_orders_rerun_of_orders", type_="foreignkey")
        batch_op.drop_column("rerun_of")
