"""the catalog: providers, regions, zones, instance types, type-zone availability, models (issue 16)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 21:50:00

Seed 002's catalog tables. Prices are EUR per hour as exact decimals (NUMERIC on PostgreSQL, the
decimal's text on SQLite). The rows themselves come from services/catalog_seed.py, applied at start
(idempotent), not from here. The table shapes are frozen here on purpose: a migration must not follow
later edits of the models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from ikoma.storage.clock import db_now

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.Uuid(as_uuid=False)
_TS = sa.DateTime(timezone=True)
_MONEY = sa.Numeric(12, 6).with_variant(sa.String(32), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _stamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", _TS, server_default=db_now(), nullable=False),
        sa.Column("updated_at", _TS, server_default=db_now(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("id", _ID, nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=500), server_default="", nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_providers")),
        sa.UniqueConstraint("code", name=op.f("uq_providers_code")),
    )
    op.create_table(
        "regions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_regions_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_regions")),
        sa.UniqueConstraint("provider_id", "code", name=op.f("uq_regions_provider_id_code")),
    )
    op.create_table(
        "zones",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("region_id", _ID, nullable=False),
        sa.Column("code", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["providers.id"], name=op.f("fk_zones_provider_id_providers"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["regions.id"], name=op.f("fk_zones_region_id_regions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zones")),
        sa.UniqueConstraint("provider_id", "code", name=op.f("uq_zones_provider_id_code")),
    )
    op.create_table(
        "instance_types",
        sa.Column("id", _ID, nullable=False),
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("ram_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(length=100), nullable=True),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=True),
        sa.Column("hourly_price_eur", _MONEY, nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.CheckConstraint(
            "vcpus >= 0 AND ram_mb >= 0 AND gpu_count >= 0", name=op.f("ck_instance_types_sizes")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_instance_types_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_types")),
        sa.UniqueConstraint("provider_id", "code", name=op.f("uq_instance_types_provider_id_code")),
    )
    op.create_table(
        "instance_type_zones",
        sa.Column("instance_type_id", _ID, nullable=False),
        sa.Column("zone_id", _ID, nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _TS, server_default=db_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_type_id"],
            ["instance_types.id"],
            name=op.f("fk_instance_type_zones_instance_type_id_instance_types"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["zone_id"], ["zones.id"], name=op.f("fk_instance_type_zones_zone_id_zones"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("instance_type_id", "zone_id", name=op.f("pk_instance_type_zones")),
    )
    op.create_table(
        "models",
        sa.Column("id", _ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("gpu_memory_mb", sa.Integer(), nullable=False),
        sa.Column("serving", sa.String(length=50), nullable=False),
        sa.Column("parameters", _JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.CheckConstraint("gpu_memory_mb >= 0", name=op.f("ck_models_gpu_memory_mb")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("name", name=op.f("uq_models_name")),
    )


def downgrade() -> None:
    op.drop_table("models")
    op.drop_table("instance_type_zones")
    op.drop_table("instance_types")
    op.drop_table("zones")
    op.drop_table("regions")
    op.drop_table("providers")
