"""Instances (issue 16, migration 0018): IKOMA's view of the machines it asked providers for.

In the one `metadata` of tables.py (imported at its end). `instances` is one row per deployment, kept
after termination (FinOps bills from `instance_state_changes`, one row per transition with the
database clock's time). The provider's own view of a machine is never stored here beyond what IKOMA
needs to find it again (`provider_id`, zone and type codes, the ownership tags).

Worker enrolment: `bootstrap_token_id` is the one-time runner bootstrap token put in the instance's
user data; the runner that spends it is this instance's runner (`runner_id`), whatever IP it has.

`installation` holds one row: this IKOMA's id, the value of the OWNER_TAG on every machine it creates.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    false,
)

from ikoma.storage.clock import db_now
from ikoma.storage.tables import Id, Json, Serial, Timestamp, metadata
from ikoma.storage.tables_cloud import Money

INSTANCE_STATES = (
    "'provisioning','booting','ready','unreachable','terminating','terminated','failed','orphaned'"
)

installation = Table(
    "installation",
    metadata,
    Column("id", Id, primary_key=True),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("provider", String(50), nullable=False),  # the catalog's provider code (registry key)
    # NULL only on an orphan (a machine IKOMA did not ask for, found by its tags): deployments
    # always name all three
    Column("zone_id", Id, ForeignKey("zones.id")),
    Column("instance_type_id", Id, ForeignKey("instance_types.id")),
    Column("model_id", Id, ForeignKey("models.id")),
    # the provider's codes, copied at creation: the calls must not depend on later catalog edits
    Column("zone", String(64), nullable=False),
    Column("instance_type", String(64), nullable=False),
    Column("hourly_price_eur", Money),  # the price when it was created (orphans: the catalog's, if known)
    Column("state", String(16), nullable=False),
    Column("provider_id", String(200)),
    Column("provider_state", String(32)),  # the provider's last word (PowerState), diagnostics
    Column("public_ip", String(45)),
    Column("private_ip", String(45)),
    Column("tags", Json, nullable=False),  # ownership tags sent with create
    Column("bootstrap_token_id", Id, ForeignKey("runner_bootstrap_tokens.id", ondelete="SET NULL")),
    Column("runner_id", Id, ForeignKey("runners.id", ondelete="SET NULL")),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="SET NULL")),
    # who works on the row now (a process id) and until when: the provider call is made outside any
    # transaction, so a crashed worker's lease simply runs out and the next one adopts by tag
    Column("lease_owner", String(64)),
    Column("lease_until", Timestamp),
    Column("attempts", Integer, nullable=False, server_default="0"),  # create calls made
    Column("missing_checks", Integer, nullable=False, server_default="0"),  # consecutive not-founds
    Column("gone_checks", Integer, nullable=False, server_default="0"),  # terminator: gone answers
    Column("last_error", String(64)),  # a stable reason
    Column("last_error_message", String(500)),
    Column("created_by", String(100)),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    Column("state_changed_at", Timestamp, nullable=False, server_default=db_now()),
    Column("booting_at", Timestamp),
    Column("ready_at", Timestamp),
    Column("terminating_at", Timestamp),
    Column("terminated_at", Timestamp),
    Column("failed_at", Timestamp),
    Column("archived", Boolean, nullable=False, server_default=false()),
    Column("archived_at", Timestamp),
    CheckConstraint(f"state IN ({INSTANCE_STATES})", name="state"),
)
Index("ix_instances_state", instances.c.state)
Index("ix_instances_provider_id", instances.c.provider_id)

instance_state_changes = Table(
    "instance_state_changes",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("instance_id", Id, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
    Column("from_state", String(16)),  # NULL: the instance's first state
    Column("to_state", String(16), nullable=False),
    Column("reason", String(200)),
    Column("at", Timestamp, nullable=False, server_default=db_now()),
)
Index("ix_instance_state_changes_instance_id", instance_state_changes.c.instance_id)
