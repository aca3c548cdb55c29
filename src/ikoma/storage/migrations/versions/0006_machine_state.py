"""machine state, snapshots, timeline, important messages, reports, artifacts, schedules

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 22:48:28.443908
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ikoma.storage.clock import db_now

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_presence",
        sa.Column("runner_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["runner_id"],
            ["runners.id"],
            name=op.f("fk_runner_presence_runner_id_runners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("runner_id", name=op.f("pk_runner_presence")),
    )
    op.create_table(
        "important_messages",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("package_name", sa.String(length=200), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_order_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column(
            "acks",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_important_messages_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_important_messages")),
        sa.UniqueConstraint(
            "server_id", "fingerprint", name=op.f("uq_important_messages_server_id_fingerprint")
        ),
    )
    with op.batch_alter_table("important_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_important_messages_server_seen", ["server_id", "acknowledged", "last_seen_at"], unique=False
        )

    op.create_table(
        "machine_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("order_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column(
            "details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.CheckConstraint("severity IN ('info','warning','error')", name=op.f("ck_machine_events_severity")),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_machine_events_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_events")),
    )
    with op.batch_alter_table("machine_events", schema=None) as batch_op:
        batch_op.create_index("ix_machine_events_server_at", ["server_id", "at"], unique=False)

    op.create_table(
        "machine_hardware",
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column(
            "os",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("kernel", sa.String(length=200), nullable=True),
        sa.Column("arch", sa.String(length=50), nullable=True),
        sa.Column("virtualization", sa.String(length=50), nullable=True),
        sa.Column("machine_kind", sa.String(length=50), nullable=True),
        sa.Column("cpu_model", sa.String(length=255), nullable=True),
        sa.Column("cpu_cores", sa.Integer(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column(
            "disks",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "network",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "gpus",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "warnings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_machine_hardware_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("server_id", name=op.f("pk_machine_hardware")),
    )
    op.create_table(
        "machine_metrics",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("load5", sa.Float(), nullable=True),
        sa.Column("memory_used_percent", sa.Float(), nullable=True),
        sa.Column("root_used_percent", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_machine_metrics_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_metrics")),
    )
    with op.batch_alter_table("machine_metrics", schema=None) as batch_op:
        batch_op.create_index("ix_machine_metrics_server_at", ["server_id", "at"], unique=False)

    op.create_table(
        "machine_state",
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("health", sa.String(length=16), nullable=False),
        sa.Column("apt_status", sa.String(length=32), nullable=True),
        sa.Column("apt_updates", sa.Integer(), nullable=False),
        sa.Column("apt_security", sa.Integer(), nullable=False),
        sa.Column("apt_reboot_required", sa.Boolean(), nullable=False),
        sa.Column("apt_analyzed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("docker_installed", sa.Boolean(), nullable=False),
        sa.Column("docker_status", sa.String(length=32), nullable=True),
        sa.Column("docker_containers", sa.Integer(), nullable=True),
        sa.Column("docker_running", sa.Integer(), nullable=True),
        sa.Column("docker_unhealthy", sa.Integer(), nullable=False),
        sa.Column("docker_stacks", sa.Integer(), nullable=False),
        sa.Column("docker_prunable_bytes", sa.BigInteger(), nullable=True),
        sa.Column("docker_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("load1", sa.Float(), nullable=True),
        sa.Column("memory_used_percent", sa.Float(), nullable=True),
        sa.Column("root_used_percent", sa.Float(), nullable=True),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("metrics_collected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disk_warnings", sa.Integer(), nullable=False),
        sa.Column("hardware_warnings", sa.Integer(), nullable=False),
        sa.Column("facts_collected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "outcomes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_error_order_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("last_error_playbook", sa.String(length=200), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_snapshot_id", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_machine_state_server_id_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("server_id", name=op.f("pk_machine_state")),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("playbook_key", sa.String(length=200), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_order_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["playbook_key"], ["playbooks.key"], name=op.f("fk_schedules_playbook_key_playbooks")
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_schedules_server_id_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("server_id", "playbook_key", name=op.f("uq_schedules_server_id_playbook_key")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_next_run", ["next_run_at"], unique=False)

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("retention_policy", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delete_reason", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "retention_policy IN ('default','failed','pinned','short')",
            name=op.f("ck_artifacts_retention_policy"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_artifacts_order_id_orders"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_artifacts_server_id_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index("ix_artifacts_expires", ["expires_at"], unique=False)
        batch_op.create_index("ix_artifacts_order", ["order_id"], unique=False)

    op.create_table(
        "reports",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("playbook_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=False),
        sa.Column("artifact_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_reports_order_id_orders"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_reports_server_id_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reports")),
    )
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.create_index("ix_reports_order", ["order_id"], unique=False)
        batch_op.create_index("ix_reports_server_created", ["server_id", "created_at"], unique=False)

    op.create_table(
        "snapshots",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("server_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=200), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "important",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_snapshots_order_id_orders"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["server_id"], ["servers.id"], name=op.f("fk_snapshots_server_id_servers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index("ix_snapshots_order", ["order_id"], unique=False)
        batch_op.create_index("ix_snapshots_server_kind", ["server_id", "kind", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index("ix_snapshots_server_kind")
        batch_op.drop_index("ix_snapshots_order")

    op.drop_table("snapshots")
    with op.batch_alter_table("reports", schema=None) as batch_op:
        batch_op.drop_index("ix_reports_server_created")
        batch_op.drop_index("ix_reports_order")

    op.drop_table("reports")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_order")
        batch_op.drop_index("ix_artifacts_expires")

    op.drop_table("artifacts")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_next_run")

    op.drop_table("schedules")
    op.drop_table("machine_state")
    with op.batch_alter_table("machine_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_metrics_server_at")

    op.drop_table("machine_metrics")
    op.drop_table("machine_hardware")
    with op.batch_alter_table("machine_events", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_events_server_at")

    op.drop_table("machine_events")
    with op.batch_alter_table("important_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_important_messages_server_seen")

    op.drop_table("important_messages")
    op.drop_table("runner_presence")
