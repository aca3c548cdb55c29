"""idempotency keys scoped per caller: unique (idempotency_scope, idempotency_key)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 16:20:00

Keys were unique across every client: two clients choosing the same key collided, and the 409 named
the other client's order. The scope is the principal that created the order (`admin` or
`api_client:<id>`), backfilled from each order's `created` event.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_scope", sa.String(length=100), nullable=True))
        batch_op.drop_constraint("uq_orders_idempotency_key", type_="unique")
    op.execute(
        "UPDATE orders SET idempotency_scope = COALESCE(("
        "SELECT e.actor FROM order_events e WHERE e.order_id = orders.id AND e.reason = 'created' "
        "ORDER BY e.id LIMIT 1), 'admin') WHERE idempotency_key IS NOT NULL"
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_orders_idempotency_scope_idempotency_key", ["idempotency_scope", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint("uq_orders_idempotency_scope_idempotency_key", type_="unique")
        batch_op.create_unique_constraint("uq_orders_idempotency_key", ["idempotency_key"])
        batch_op.drop_column("idempotency_scope")
