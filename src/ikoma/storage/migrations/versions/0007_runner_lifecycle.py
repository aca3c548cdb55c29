"""runner lifecycle: who revoked a runner, when its token was last rotated; capabilities always a list

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 15:45:00

`capabilities` of a runner that heartbeated without them (seed 000 sends only `{"version"}`) was stored
as JSON `null`, which made every runner listing fail; such rows are repaired to `[]` here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_by", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("token_rotated_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE runners SET capabilities = '[]'::jsonb WHERE jsonb_typeof(capabilities) <> 'array'"
        )
    else:
        op.execute(
            "UPDATE runners SET capabilities = '[]' "
            "WHERE capabilities IS NULL OR json_valid(capabilities) = 0 OR json_type(capabilities) <> 'array'"
        )


def downgrade() -> None:
    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_column("token_rotated_at")
        batch_op.drop_column("revoked_by")
