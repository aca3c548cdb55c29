"""agentless SSH servers: connection mode, SSH settings, pinned host key, apt proxy, sealed credentials

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:20:00

Issue 14. Existing servers become `agent` servers with a `direct` apt proxy mode: nothing changes for
them. The credentials live in their own table, every value sealed by the vault (never plaintext).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ikoma.storage.clock import db_now

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("connection_mode", sa.String(length=8), nullable=False, server_default="agent")
        )
        batch_op.add_column(sa.Column("ssh_username", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("ssh_key_fingerprint", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("host_key_fingerprint", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("host_key_pinned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("apt_proxy_mode", sa.String(length=8), nullable=False, server_default="direct")
        )
        batch_op.add_column(sa.Column("apt_proxy_url", sa.String(length=500), nullable=True))
    op.create_table(
        "server_credentials",
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("private_key", sa.Text(), nullable=True),
        sa.Column("key_passphrase", sa.Text(), nullable=True),
        sa.Column("sudo_password", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name="fk_server_credentials_server_id_servers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("server_id", name="pk_server_credentials"),
    )


def downgrade() -> None:
    op.drop_table("server_credentials")
    with op.batch_alter_table("servers", schema=None) as batch_op:
        for column in (
            "apt_proxy_url",
            "apt_proxy_mode",
            "host_key_pinned_at",
            "host_key_fingerprint",
            "ssh_key_fingerprint",
            "ssh_username",
            "connection_mode",
        ):
            batch_op.drop_column(column)
