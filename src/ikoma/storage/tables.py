"""The schema, as SQLAlchemy Core tables. Migrations in `migrations/versions` must build exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB

from ikoma.storage.clock import db_now

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
Id = Uuid(as_uuid=False)
Timestamp = DateTime(timezone=True)
# SQLite only auto-increments an INTEGER PRIMARY KEY.
Serial = BigInteger().with_variant(Integer(), "sqlite")

ORDER_STATUSES = "'QUEUED','CLAIMED','RUNNING','SUCCEEDED','FAILED','CANCELLED','TIMEOUT','STALE'"

runners = Table(
    "runners",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False),
    Column("token_prefix", String(16), nullable=False),
    Column("last_heartbeat_at", Timestamp),
    Column("version", String(100)),
    Column("hostname", String(255)),
    Column("capabilities", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("revoked_at", Timestamp),
    Column("revoked_by", String(100)),  # who revoked it: `admin` or `api_client:<id>`
    Column("token_rotated_at", Timestamp),
)

servers = Table(
    "servers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("labels", Json, nullable=False),
    Column("os_family", String(50), nullable=False),
    Column("os_version", String(100)),
    Column("os_codename", String(100)),
    Column("arch", String(50)),
    Column("machine_kind", String(50)),
    Column("virtualization", String(50)),
    Column("hardware_profile", String(50)),
    # The server owns the relation (seed 000): one runner per server, one server per runner.
    Column("runner_id", Id, ForeignKey("runners.id", ondelete="SET NULL"), unique=True),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    # Deleted servers are kept: their orders are history that must not be lost.
    Column("deleted_at", Timestamp),
    # issue 14: `agent` (a runner) or `ssh` (the API's SSH executor, through the server's ssh runner row)
    Column("connection_mode", String(8), nullable=False, server_default="agent"),
    Column("ssh_username", String(100)),
    Column("ssh_key_fingerprint", String(100)),  # of the private key given, never the key
    Column("host_key_fingerprint", String(100)),  # pinned at the first successful connection
    Column("host_key_pinned_at", Timestamp),
    Column("apt_proxy_mode", String(8), nullable=False, server_default="direct"),
    Column("apt_proxy_url", String(500)),
)
# SSH secrets, each sealed (AES-256-GCM, services/vault.py) with its row and field as associated data:
# apart from `servers` so that no query of servers can ever carry them by accident.
server_credentials = Table(
    "server_credentials",
    metadata,
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("password", Text),
    Column("private_key", Text),
    Column("key_passphrase", Text),
    Column("sudo_password", Text),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
)
Index(
    "uq_servers_name_live",
    servers.c.name,
    unique=True,
    sqlite_where=servers.c.deleted_at.is_(None),
    postgresql_where=servers.c.deleted_at.is_(None),
)

playbooks = Table(
    "playbooks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key", String(200), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("params_schema", Json, nullable=False),
    Column("min_role", String(20), nullable=False),
    Column("destructive", Boolean, nullable=False),
    Column("default_timeout_s", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("builtin", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    # declarative playbooks only (migration 0004): the argv templates the runner executes
    Column("steps", Json),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Id, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="RESTRICT"), nullable=False),
    Column("runner_id", Id, ForeignKey("runners.id", ondelete="SET NULL")),
    Column("playbook_key", String(200), ForeignKey("playbooks.key"), nullable=False),
    Column("action", String(64), nullable=False),
    Column("params", Json, nullable=False),
    Column("attempt", Integer, nullable=False),  # claims so far
    Column("executions", Integer, nullable=False),  # attempts that reached RUNNING
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Integer, nullable=False),
    Column("lease_token", String(36)),
    Column("lease_expires_at", Timestamp),
    Column("cancel_requested", Boolean, nullable=False),
    Column("not_before", Timestamp),
    Column("claimed_at", Timestamp),
    Column("started_at", Timestamp),
    Column("last_heartbeat_at", Timestamp),
    Column("finished_at", Timestamp),
    Column("report", Json),
    Column("report_version", String(8)),
    Column("report_summary", Text),
    Column("status_reason", String(64)),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    # added by migration 0003 (at the end, where ALTER TABLE puts them)
    Column("log_bytes", Integer, nullable=False, server_default="0"),
    Column("log_truncated", Boolean, nullable=False, server_default=false()),
    # a declarative playbook's steps as they were when the order was created (migration 0004): an order
    # runs what was asked for, even if the playbook is changed while it waits
    Column("steps", Json),
    # who created the order, when it came with an Idempotency-Key (migration 0008): keys are unique per
    # caller, another client's key is another key
    Column("idempotency_scope", String(100)),
    CheckConstraint(f"status IN ({ORDER_STATUSES})", name="status"),
    # the order this one re-runs (POST /v1/orders/{id}/rerun, migration 0015)
    Column("rerun_of", Id, ForeignKey("orders.id", ondelete="SET NULL")),
)
# claim-next: the oldest QUEUED order of a runner, or of its server.
UniqueConstraint(orders.c.idempotency_scope, orders.c.idempotency_key)
Index("ix_orders_claim_runner", orders.c.runner_id, orders.c.status, orders.c.created_at)
Index("ix_orders_claim_server", orders.c.server_id, orders.c.status, orders.c.created_at)
# listing newest first, and the reconciler's scans of CLAIMED/RUNNING orders.
Index("ix_orders_status_created", orders.c.status, orders.c.created_at)
Index("ix_orders_created", orders.c.created_at)
Index("ix_orders_rerun_of", orders.c.rerun_of)  # an order's re-runs, shown with it

order_attempts = Table(
    "order_attempts",
    metadata,
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("runner_id", Id, nullable=False),
    Column("lease_token", String(36), nullable=False),
    Column("claimed_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("ended_at", Timestamp),
    Column("outcome", String(16)),
    Column("reason", String(64)),
)

order_events = Table(
    "order_events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("at", Timestamp, nullable=False, server_default=db_now()),
    Column("from_status", String(16)),
    Column("to_status", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("details", Json),
)
Index("ix_order_events_order", order_events.c.order_id, order_events.c.id)

order_logs = Table(
    "order_logs",
    metadata,
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True),
    # the runner numbers its chunks: a retried chunk has the same seq and is stored once
    Column("seq", Integer, primary_key=True),
    Column("stream", String(8), nullable=False),
    Column("data", Text, nullable=False),
    Column("at", Timestamp, nullable=False, server_default=db_now()),
)

runner_bootstrap_tokens = Table(
    "runner_bootstrap_tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token_prefix", String(16), nullable=False),
    Column("name", String(200)),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE")),
    Column("expires_at", Timestamp, nullable=False),
    Column("used_at", Timestamp),
    Column("runner_id", Id, ForeignKey("runners.id", ondelete="SET NULL")),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
)

admin_keys = Table(
    "admin_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key_prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
)

# --- API clients and the audit log (migration 0005) ------------------------------------------------
ROLES = "'observer','builder','operator','admin'"

# Automation's own credentials (seed 003 `api_clients`): a role, an optional expiry and server scope.
api_clients = Table(
    "api_clients",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("token_prefix", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    # null: every server; otherwise the ids of the only servers this client may see or act on
    Column("server_ids", Json),
    Column("expires_at", Timestamp),
    Column("created_by", String(100), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("last_used_at", Timestamp),
    Column("revoked_at", Timestamp),
    CheckConstraint(f"role IN ({ROLES})", name="role"),
)

# Append-only, hash-chained: each entry's hash covers its fields and the previous entry's hash, and ids
# follow each other without gaps, so an edited, deleted or reordered row breaks the chain.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Timestamp, nullable=False),
    Column("channel", String(10), nullable=False),
    Column("actor_kind", String(20), nullable=False),
    Column("actor_id", String(100)),
    Column("token_prefix", String(16)),
    Column("role", String(20)),
    Column("action", String(200), nullable=False),
    Column("target", String(300)),
    Column("params", Json),
    Column("outcome", String(10), nullable=False),
    Column("status_code", Integer),
    Column("reason", String(64)),
    Column("order_id", String(36)),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    CheckConstraint("outcome IN ('allowed','denied','error')", name="outcome"),
)
Index("ix_audit_log_at", audit_log.c.at)


# One row per applied migration with the SHA-256 of its file: `ikoma db check` compares both ways.
migration_history = Table(
    "ikoma_migration_history",
    metadata,
    Column("revision", String(64), primary_key=True),
    Column("checksum", String(64), nullable=False),
    Column("applied_at", Timestamp, nullable=False, server_default=db_now()),
)

# --- machine state, snapshots, timeline, reports (migration 0006) ----------------------------------
# Every completed order leaves a snapshot: what its playbook found, normalised (kind = playbook key).
# Snapshots are the source of truth for the derived tables below; `id` orders them (rebuild folds them
# in id order, the order completions were applied in).
snapshots = Table(
    "snapshots",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(200), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", Json, nullable=False),
    Column("important", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
)
Index("ix_snapshots_server_kind", snapshots.c.server_id, snapshots.c.kind, snapshots.c.id)
Index("ix_snapshots_order", snapshots.c.order_id)

# One row per server: a cache derived only from snapshots (`ikoma state rebuild` recomputes it).
machine_state = Table(
    "machine_state",
    metadata,
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("health", String(16), nullable=False),
    Column("apt_status", String(32)),
    Column("apt_updates", Integer, nullable=False),
    Column("apt_security", Integer, nullable=False),
    Column("apt_reboot_required", Boolean, nullable=False),
    Column("apt_analyzed_at", Timestamp),
    Column("docker_installed", Boolean, nullable=False),
    Column("docker_status", String(32)),
    Column("docker_containers", Integer),
    Column("docker_running", Integer),
    Column("docker_unhealthy", Integer, nullable=False),
    Column("docker_stacks", Integer, nullable=False),
    Column("docker_prunable_bytes", BigInteger),
    Column("docker_checked_at", Timestamp),
    Column("load1", Float),
    Column("memory_used_percent", Float),
    Column("root_used_percent", Float),
    Column("metrics", Json),
    Column("metrics_collected_at", Timestamp),
    Column("disk_warnings", Integer, nullable=False),
    Column("hardware_warnings", Integer, nullable=False),
    Column("facts_collected_at", Timestamp),
    # the latest outcome per playbook: lastError is the newest failure still standing among them
    Column("outcomes", Json, nullable=False),
    Column("last_error_order_id", Id),
    Column("last_error_playbook", String(200)),
    Column("last_error_message", Text),
    Column("last_error_at", Timestamp),
    Column("last_snapshot_id", BigInteger),
    # the time of the newest snapshot folded in (not of the write): a rebuild gives the same row
    Column("updated_at", Timestamp),
)

machine_hardware = Table(
    "machine_hardware",
    metadata,
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("snapshot_id", BigInteger, nullable=False),
    Column("hostname", String(255)),
    Column("os", Json, nullable=False),
    Column("kernel", String(200)),
    Column("arch", String(50)),
    Column("virtualization", String(50)),
    Column("machine_kind", String(50)),
    Column("cpu_model", String(255)),
    Column("cpu_cores", Integer),
    Column("memory_bytes", BigInteger),
    Column("disks", Json, nullable=False),
    Column("network", Json, nullable=False),
    Column("gpus", Json, nullable=False),
    Column("warnings", Json, nullable=False),
    Column("collected_at", Timestamp, nullable=False),
)

# One point per collection; the sweeper folds points older than 24 h into hourly averages
# (`period_s` 3600, `samples` = points averaged) and bounds the rows kept per server.
machine_metrics = Table(
    "machine_metrics",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("at", Timestamp, nullable=False),
    Column("period_s", Integer, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("load1", Float),
    Column("load5", Float),
    Column("memory_used_percent", Float),
    Column("root_used_percent", Float),
)
Index("ix_machine_metrics_server_at", machine_metrics.c.server_id, machine_metrics.c.at)

# Timeline entries that are not order transitions (those are read from order_events, see timeline.py).
machine_events = Table(
    "machine_events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("at", Timestamp, nullable=False, server_default=db_now()),
    Column("type", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("order_id", Id),
    Column("details", Json),
    CheckConstraint("severity IN ('info','warning','error')", name="severity"),
)
Index("ix_machine_events_server_at", machine_events.c.server_id, machine_events.c.at)

important_messages = Table(
    "important_messages",
    metadata,
    Column("id", Id, primary_key=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    # sha256 of (server, source, category, normalised message): one row per recurring message
    Column("fingerprint", String(64), nullable=False),
    Column("source", String(32), nullable=False),
    Column("category", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("package_name", String(200)),
    Column("count", Integer, nullable=False),
    Column("first_seen_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    Column("last_order_id", Id),
    Column("acknowledged", Boolean, nullable=False),
    Column("acknowledged_at", Timestamp),
    Column("acknowledged_by", String(100)),
    # every acknowledgement ({by, at}), kept when a reappearance makes the message new again
    Column("acks", Json, nullable=False),
    UniqueConstraint("server_id", "fingerprint"),
)
Index(
    "ix_important_messages_server_seen",
    important_messages.c.server_id,
    important_messages.c.acknowledged,
    important_messages.c.last_seen_at,
)

reports = Table(
    "reports",
    metadata,
    Column("id", Id, primary_key=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("playbook_key", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("title", String(300), nullable=False),
    Column("summary", Text, nullable=False),
    Column("markdown", Text, nullable=False),
    Column("artifact_id", Id),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
)
Index("ix_reports_server_created", reports.c.server_id, reports.c.created_at)
Index("ix_reports_order", reports.c.order_id)

# Files under <data dir>/artifacts/<id>; a deleted artifact keeps its row with why it went.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("order_id", Id, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("retention_policy", String(16), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("expires_at", Timestamp),
    Column("deleted_at", Timestamp),
    Column("delete_reason", String(200)),
    CheckConstraint("retention_policy IN ('default','failed','pinned','short')", name="retention_policy"),
)
Index("ix_artifacts_expires", artifacts.c.expires_at)
Index("ix_artifacts_order", artifacts.c.order_id)

# Collection schedules: the reconciler queues an ordinary order when one is due and none is pending.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Id, primary_key=True),
    Column("server_id", Id, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("playbook_key", String(200), ForeignKey("playbooks.key"), nullable=False),
    Column("interval_s", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("next_run_at", Timestamp),
    Column("last_order_id", Id),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    UniqueConstraint("server_id", "playbook_key"),
)
Index("ix_schedules_next_run", schedules.c.next_run_at)

# What the reconciler last saw of each runner, to put "online"/"offline" on the timeline once per change.
runner_presence = Table(
    "runner_presence",
    metadata,
    Column("runner_id", Id, ForeignKey("runners.id", ondelete="CASCADE"), primary_key=True),
    Column("online", Boolean, nullable=False),
    Column("changed_at", Timestamp, nullable=False, server_default=db_now()),
)

# --- webhooks (migration 0010) ---------------------------------------------------------------------
# Each webhook follows the event log with its own cursor (`last_event_id`); its deliveries go out one at
# a time in event id order. The signing secret is sealed by the vault: HMAC needs it in clear, so it is
# encrypted, not hashed, and never shown after creation.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("description", String(200)),
    # event kinds or prefixes (`order.failed`, `order.`): an event matching one of them is delivered
    Column("kinds", Json, nullable=False),
    # null: events of every server (and events of none); otherwise only events of these servers
    Column("server_ids", Json),
    # null: no label filter; otherwise the event's server must carry every one of these labels
    Column("labels", Json),
    Column("secret", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(64)),
    Column("disabled_at", Timestamp),
    Column("last_event_id", BigInteger, nullable=False),
    Column("consecutive_failures", Integer, nullable=False),
    # one delivery in flight per webhook, whatever the number of API replicas: taken before the HTTP
    # call, released after it, and expired if the process holding it died
    Column("lease_until", Timestamp),
    Column("created_by", String(100), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
)

# One row per delivery (its id is the `X-Ikoma-Delivery` header); a redelivery is a new row.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Id, primary_key=True),
    Column("webhook_id", Id, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Integer),
    Column("error", String(500)),
    Column("next_attempt_at", Timestamp),
    Column("redelivery_of", Id),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("last_attempt_at", Timestamp),
    Column("delivered_at", Timestamp),
    Column("failed_at", Timestamp),
    CheckConstraint("status IN ('pending','delivered','failed')", name="status"),
)
Index(
    "ix_webhook_deliveries_webhook_created",
    webhook_deliveries.c.webhook_id,
    webhook_deliveries.c.created_at,
)
# the dispatcher's look for deliveries that are due
Index(
    "ix_webhook_deliveries_status_next",
    webhook_deliveries.c.status,
    webhook_deliveries.c.next_attempt_at,
)

# --- the event log (migration 0009) ----------------------------------------------------------------
# One ordered log of what happens in the fleet (services/events.py): written in the transaction of the
# change it describes, read by id (the cursor of GET /v1/events, SSE and webhooks). No foreign keys:
# the history outlives the rows it names. AUTOINCREMENT on SQLite: an id is never handed out twice,
# even after retention deleted every row (a reader's cursor would otherwise skip the new ones).
events = Table(
    "events",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("ts", Timestamp, nullable=False, server_default=db_now()),
    Column("kind", String(64), nullable=False),
    Column("topic", String(32), nullable=False),
    Column("server_id", Id),
    Column("order_id", Id),
    Column("runner_id", Id),
    Column("actor", String(100)),
    Column("data", Json, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_events_server", events.c.server_id, events.c.id)
Index("ix_events_order", events.c.order_id, events.c.id)
# retention deletes by age
Index("ix_events_ts", events.c.ts)

# --- users and sessions (migration 0013) -----------------------------------------------------------
# Console accounts (seed 002). Usernames and emails are stored lower-cased, so unique means unique
# whatever the case. The password is an argon2id hash; the TOTP secret is sealed by the vault.
users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("first_name", String(100), nullable=False),
    Column("last_name", String(100), nullable=False),
    Column("role", String(20), nullable=False),
    Column("disabled", Boolean, nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("totp_secret", Text),
    Column("totp_enabled", Boolean, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("updated_at", Timestamp, nullable=False, server_default=db_now()),
    Column("password_changed_at", Timestamp, nullable=False, server_default=db_now()),
    CheckConstraint(f"role IN ({ROLES})", name="role"),
)

# One row per sign-in, keyed by the SHA-256 of the cookie's random id (the id itself is never stored).
# Ended sessions are kept (ended_at, end_reason) until their user is deleted.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    Column("last_seen_at", Timestamp, nullable=False, server_default=db_now()),
    Column("expires_at", Timestamp, nullable=False),
    Column("ended_at", Timestamp),
    Column("end_reason", String(32)),
    Column("client_address", String(64)),
)
Index("ix_user_sessions_user_id", user_sessions.c.user_id)

# Failed sign-ins, the login rate limiter's state (services/login_limits.py), shared by every replica.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Serial, primary_key=True, autoincrement=True),
    Column("account", String(254), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", Timestamp, nullable=False, server_default=db_now()),
)
Index("ix_login_failures_account_at", login_failures.c.account, login_failures.c.at)
Index("ix_login_failures_address_at", login_failures.c.address, login_failures.c.at)
Index("ix_login_failures_at", login_failures.c.at)

# Issue 16's tables live in their own modules, in this `metadata` (imported last: they import it from here)
from ikoma.storage import (  # noqa: E402
    tables_cloud,  # noqa: F401
    tables_mock,  # noqa: F401
)
