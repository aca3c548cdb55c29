"""Cloud tables (issue 16): the catalog of what providers sell, in the one `metadata` of tables.py.

Kept apart from tables.py (already long) by concept; tables.py imports this module at its end, so
`tables.metadata` holds these tables too and the migrations must build them exactly.

The catalog (seed 002 names): `providers` > `regions` > `zones`; `instance_types` per provider;
`instance_type_zones` says where a type is sold (`available`: the provider's word, refreshed by a sync)
and whether IKOMA offers it there (`enabled`: the admin's word, which a sync never changes). Rows are
never deleted by a sync: a type the provider stopped selling becomes `available = false`, because
instances keep pointing at it. Prices are EUR per hour as exact decimals (NUMERIC on PostgreSQL, the
decimal's text on SQLite, which has no exact decimal type): never binary floats.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ikoma.storage.clock import db_now
from ikoma.storage.tables import Id, Json, Timestamp, metadata


class Money(TypeDecorator[Decimal]):
    """EUR per hour, up to 999,999.999999, read and written as `Decimal` on both backends: NUMERIC(12, 6)
    on PostgreSQL, the decimal's text on SQLite (SQLAlchemy's Numeric there goes through a float)."""

    impl = Numeric(12, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(Numeric(12, 6, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
        return f"{exact:f}" if dialect.name == "sqlite" else exact

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


providers = Table(
    "providers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("code", String(50), nullable=False, unique=True),  # the registry's name: `mock`, `scaleway`
    Column("name", String(200), nullable=False),
    Column("description", String(500), nullable=False, server_default=""),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
)

regions = Table(
    "regions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("provider_id", Id, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(50), nullable=False),  # `fr-par`
    Column("name", String(200), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    UniqueConstraint("provider_id", "code"),
)

zones = Table(
    "zones",
    metadata,
    Column("id", Id, primary_key=True),
    # the provider too, so that a zone code (`fr-par-2`, what offers name) is unique per provider
    Column("provider_id", Id, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False),
    Column("region_id", Id, ForeignKey("regions.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(50), nullable=False),
    Column("name", String(200), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    UniqueConstraint("provider_id", "code"),
)

instance_types = Table(
    "instance_types",
    metadata,
    Column("id", Id, primary_key=True),
    Column("provider_id", Id, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(100), nullable=False),  # the provider's commercial type: `L4-1-24G`
    Column("name", String(200), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("ram_mb", Integer, nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("gpu_model", String(100)),
    Column("gpu_memory_mb", Integer),  # per GPU
    Column("hourly_price_eur", Money(), nullable=False),
    Column("available", Boolean, nullable=False),  # the provider still sells it (somewhere)
    Column("enabled", Boolean, nullable=False),  # the admin offers it
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    UniqueConstraint("provider_id", "code"),
    CheckConstraint("vcpus >= 0 AND ram_mb >= 0 AND gpu_count >= 0", name="sizes"),
)

instance_type_zones = Table(
    "instance_type_zones",
    metadata,
    Column(
        "instance_type_id",
        Id,
        ForeignKey("instance_types.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("zone_id", Id, ForeignKey("zones.id", ondelete="CASCADE"), primary_key=True),
    Column("available", Boolean, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
)

# The models a deployment may name (seed 002 `models`): a Hugging Face id and how a worker serves it.
models = Table(
    "models",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),  # `Qwen/Qwen2.5-0.5B-Instruct`
    Column("gpu_memory_mb", Integer, nullable=False),  # in all, across the instance's GPUs; 0: CPU
    Column("serving", String(50), nullable=False),  # `vllm`, `mock`
    Column("parameters", Json, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    CheckConstraint("gpu_memory_mb >= 0", name="gpu_memory_mb"),
)

# instances (migration 0018) use `Money`: imported once it exists, whichever module was imported first
from ikoma.storage import tables_instances  # noqa: E402, F401
