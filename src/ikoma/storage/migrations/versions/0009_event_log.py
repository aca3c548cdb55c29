"""event log (issue 12): one ordered table of what happens in the fleet, the outbox of every change

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:20:00

`events` is written in the transaction of the change it describes (services/events.py) and read by id:
the cursor of `GET /v1/events`, the SSE stream and webhook deliveries. No foreign keys (the history
outlives the rows it names); AUTOINCREMENT on SQLite so an id is never reused after retention.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ikoma.storage.clock import db_now

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("ts", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=32), nullable=False),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("order_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("runner_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("actor", sa.String(length=100), nullable=True),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_server", ["server_id", "id"], unique=False)
        batch_op.create_index("ix_events_order", ["order_id", "id"], unique=False)
        batch_op.create_index("ix_events_ts", ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_ts")
        batch_op.drop_index("ix_events_order")
        batch_op.drop_index("ix_events_server")
    op.drop_table("events")
