"""Settings from the environment (documented in docs/configuration.md).

Names are the seed's promises (`DATABASE_URL`, `IKOMA_ADMIN_KEY`, `PORT`), so no prefix is applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """Malformed settings: start-up stops with this message."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    admin_key: SecretStr | None = Field(default=None, validation_alias="IKOMA_ADMIN_KEY")
    host: str = Field(default="127.0.0.1", validation_alias="HOST")
    port: int = Field(default=3000, ge=1, le=65535, validation_alias="PORT")
    # connections the kernel queues before the server accepts them: a fleet of runners reconnecting at
    # once (a restart) overflows a small queue (the kernel caps it at net.core.somaxconn)
    backlog: int = Field(default=4096, ge=1, le=65535, validation_alias="IKOMA_BACKLOG")
    data_dir: Path = Field(default=Path("data"), validation_alias="IKOMA_DATA_DIR")
    reconcile_interval: float = Field(
        default=30.0, gt=0, le=3600, validation_alias="IKOMA_RECONCILE_INTERVAL"
    )
    claim_lease: float = Field(default=60.0, gt=0, le=86400, validation_alias="IKOMA_CLAIM_LEASE")
    stale_after: float = Field(default=120.0, gt=0, le=86400, validation_alias="IKOMA_STALE_AFTER")
    order_timeout: float = Field(default=3600.0, gt=0, le=7 * 86400, validation_alias="IKOMA_ORDER_TIMEOUT")
    log_limit_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, validation_alias="IKOMA_LOG_LIMIT_BYTES"
    )
    # request body limits per route family (413 payload_too_large past them, read as it streams in):
    # admin and tool routes, runner calls (heartbeats, reports), and runner log batches
    body_limit_admin: int = Field(
        default=2 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, validation_alias="IKOMA_BODY_LIMIT_ADMIN"
    )
    body_limit_runner: int = Field(
        default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024, validation_alias="IKOMA_BODY_LIMIT_RUNNER"
    )
    body_limit_logs: int = Field(
        default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, validation_alias="IKOMA_BODY_LIMIT_LOGS"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=AliasChoices("IKOMA_LOG_LEVEL", "LOG_LEVEL")
    )

    # --- operations tools (issue 5) ---------------------------------------------------------------
    # the JSONL mirror of the audit log (optional): one line per entry, appended after the database write
    audit_log: Path | None = Field(default=None, validation_alias="IKOMA_AUDIT_LOG")
    # anchors of the audit chain outside the database (services/audit_anchor.py): the HMAC key of the
    # signed checkpoints (default: <data dir>/audit.key, made 0600), their file, and how often the
    # reconciler's leader signs the chain's head (0: never)
    audit_key: SecretStr | None = Field(default=None, validation_alias="IKOMA_AUDIT_KEY")
    # Fernet keys sealing secrets at rest (services/vault.py), the first seals; default: a key file
    # <data dir>/encryption.keys made 0600 when a secret is first sealed
    encryption_keys: SecretStr | None = Field(default=None, validation_alias="IKOMA_ENCRYPTION_KEYS")
    # the key file used when IKOMA_ENCRYPTION_KEYS is unset (default <data dir>/encryption.keys);
    # `ikoma keys rotate` puts a new key first in it (issue 14)
    master_key_file: Path | None = Field(default=None, validation_alias="IKOMA_MASTER_KEY_FILE")
    # --- agentless machines over SSH (issue 14): the executor inside `ikoma serve`, its bound on open
    # SSH connections, and the time a connection (TCP + handshake + auth) may take
    ssh_executor: bool = Field(default=True, validation_alias="IKOMA_SSH_EXECUTOR")
    ssh_max_connections: int = Field(default=32, ge=1, le=10000, validation_alias="IKOMA_SSH_MAX_CONNECTIONS")
    ssh_connect_timeout: float = Field(
        default=10.0, gt=0, le=300, validation_alias="IKOMA_SSH_CONNECT_TIMEOUT"
    )
    audit_checkpoints: Path | None = Field(default=None, validation_alias="IKOMA_AUDIT_CHECKPOINTS")
    audit_checkpoint_interval: float = Field(
        default=60.0, ge=0, le=86400, validation_alias="IKOMA_AUDIT_CHECKPOINT_INTERVAL"
    )
    # the server `/execute` and MCP act on when the body names none; default: the `ikoma up` local server
    default_server: str | None = Field(default=None, validation_alias="IKOMA_DEFAULT_SERVER")
    # longest a caller of /execute or MCP may wait for a tool's order before getting 202 + the order id
    execute_max_wait: float = Field(default=300.0, gt=0, le=3600, validation_alias="IKOMA_EXECUTE_MAX_WAIT")
    # --- live event stream (issue 12): SSE comment heartbeat, and events queued per subscriber before
    # it is told it lags (`stream.lagging`) and its stream is closed
    sse_heartbeat_seconds: float = Field(
        default=15.0, gt=0, le=3600, validation_alias="IKOMA_SSE_HEARTBEAT_SECONDS"
    )
    sse_queue_size: int = Field(default=1000, ge=1, le=1_000_000, validation_alias="IKOMA_SSE_QUEUE_SIZE")

    # --- machine state, reports, retention, schedules (issue 4) ----------------------------------
    # raw log artifacts: days kept per retention policy (pinned ones are kept until unpinned)
    artifact_retention_days: float = Field(
        default=30.0, gt=0, le=3650, validation_alias="IKOMA_ARTIFACT_RETENTION_DAYS"
    )
    artifact_retention_failed_days: float = Field(
        default=90.0, gt=0, le=3650, validation_alias="IKOMA_ARTIFACT_RETENTION_FAILED_DAYS"
    )
    artifact_retention_short_days: float = Field(
        default=7.0, gt=0, le=3650, validation_alias="IKOMA_ARTIFACT_RETENTION_SHORT_DAYS"
    )
    # comma-separated playbook keys whose successful logs get the `short` policy
    artifact_short_playbooks: str = Field(
        default="system.metrics", validation_alias="IKOMA_ARTIFACT_SHORT_PLAYBOOKS"
    )
    # the event log (GET /v1/events, SSE, webhooks): events older than this are deleted
    event_retention_days: float = Field(
        default=30.0, gt=0, le=3650, validation_alias="IKOMA_EVENT_RETENTION_DAYS"
    )
    # snapshots older than this go, except the newest (and newest successful) one per server and playbook
    snapshot_retention_days: float = Field(
        default=30.0, gt=0, le=3650, validation_alias="IKOMA_SNAPSHOT_RETENTION_DAYS"
    )
    # metrics history: one point per collection for this long, then hourly averages; rows kept per server
    metrics_raw_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, validation_alias="IKOMA_METRICS_RAW_HOURS"
    )
    metrics_max_points: int = Field(
        default=2000, ge=10, le=1_000_000, validation_alias="IKOMA_METRICS_MAX_POINTS"
    )
    # how often the reconciler runs the retention sweeper; files without a row older than the grace go
    retention_sweep_interval: float = Field(
        default=300.0, gt=0, le=86400, validation_alias="IKOMA_RETENTION_SWEEP_INTERVAL"
    )
    artifact_orphan_grace: float = Field(
        default=3600.0, ge=0, le=7 * 86400, validation_alias="IKOMA_ARTIFACT_ORPHAN_GRACE"
    )
    # default collection schedules for every server with a runner (`ikoma up` turns them on);
    # an interval of 0 leaves that playbook without a default schedule
    default_schedules: bool = Field(default=False, validation_alias="IKOMA_DEFAULT_SCHEDULES")
    schedule_metrics_interval: int = Field(
        default=300, ge=0, le=90 * 86400, validation_alias="IKOMA_SCHEDULE_METRICS_INTERVAL"
    )
    schedule_apt_interval: int = Field(
        default=86400, ge=0, le=90 * 86400, validation_alias="IKOMA_SCHEDULE_APT_INTERVAL"
    )
    schedule_facts_interval: int = Field(
        default=7 * 86400, ge=0, le=90 * 86400, validation_alias="IKOMA_SCHEDULE_FACTS_INTERVAL"
    )
    schedule_docker_interval: int = Field(
        default=3600, ge=0, le=90 * 86400, validation_alias="IKOMA_SCHEDULE_DOCKER_INTERVAL"
    )

    # --- webhooks (issue 12, services/webhook_delivery.py) -------------------------------------------
    # targets on loopback, private, link-local or reserved addresses are refused unless this is set
    webhook_allow_private: bool = Field(default=False, validation_alias="IKOMA_WEBHOOK_ALLOW_PRIVATE")
    webhook_timeout: float = Field(default=10.0, gt=0, le=300, validation_alias="IKOMA_WEBHOOK_TIMEOUT")
    # a failed attempt is retried after base x 2^(n-1) s (at most the max delay, with jitter) until the
    # delivery is older than the window; so many failed attempts in a row disable the webhook
    webhook_retry_base: float = Field(
        default=10.0, gt=0, le=3600, validation_alias="IKOMA_WEBHOOK_RETRY_BASE"
    )
    webhook_retry_max_delay: float = Field(
        default=3600.0, gt=0, le=86400, validation_alias="IKOMA_WEBHOOK_RETRY_MAX_DELAY"
    )
    webhook_retry_window: float = Field(
        default=86400.0, gt=0, le=30 * 86400, validation_alias="IKOMA_WEBHOOK_RETRY_WINDOW"
    )
    webhook_disable_after: int = Field(
        default=15, ge=1, le=10000, validation_alias="IKOMA_WEBHOOK_DISABLE_AFTER"
    )
    # the safety-net look for work no wake-up announced (another replica's events, retries coming due)
    webhook_poll_interval: float = Field(
        default=1.0, gt=0, le=3600, validation_alias="IKOMA_WEBHOOK_POLL_INTERVAL"
    )

    # --- users and sessions (issue 13, services/users.py, services/sessions.py) ---------------------
    # the admin created at the first start when no user exists; its password is read from the file,
    # written there (0600) when missing: default <data dir>/secrets/default_admin_password
    default_admin_username: str = Field(default="admin", validation_alias="IKOMA_DEFAULT_ADMIN_USERNAME")
    default_admin_email: str = Field(
        default="admin@ikoma.local", validation_alias="IKOMA_DEFAULT_ADMIN_EMAIL"
    )
    default_admin_password_file: Path | None = Field(
        default=None, validation_alias="IKOMA_DEFAULT_ADMIN_PASSWORD_FILE"
    )
    # a session's absolute lifetime, and how long it may stay unused (both by the database clock)
    session_ttl: float = Field(default=43200.0, ge=60, le=90 * 86400, validation_alias="IKOMA_SESSION_TTL")
    session_idle_timeout: float = Field(
        default=7200.0, ge=60, le=90 * 86400, validation_alias="IKOMA_SESSION_IDLE_TIMEOUT"
    )
    # the session cookie gets `Secure` (sent over HTTPS only): set it when the console is served over TLS
    cookie_secure: bool = Field(default=False, validation_alias="IKOMA_COOKIE_SECURE")
    # failed sign-ins allowed per account and per client address within the window, then 429
    login_max_failures_account: int = Field(
        default=5, ge=1, le=100000, validation_alias="IKOMA_LOGIN_MAX_FAILURES_ACCOUNT"
    )
    login_max_failures_address: int = Field(
        default=20, ge=1, le=100000, validation_alias="IKOMA_LOGIN_MAX_FAILURES_ADDRESS"
    )
    login_failure_window: float = Field(
        default=900.0, ge=1, le=86400, validation_alias="IKOMA_LOGIN_FAILURE_WINDOW"
    )

    # --- the Mock provider (issue 16, providers/mock/): on unless IKOMA_PROVIDER_MOCK=0; its machines'
    # boot time for every type (unset: each type's own, 2 to 6 s), and how often the leader moves them
    provider_mock: bool = Field(default=True, validation_alias="IKOMA_PROVIDER_MOCK")
    mock_boot_seconds: float | None = Field(
        default=None, ge=0, le=3600, validation_alias="IKOMA_MOCK_BOOT_SECONDS"
    )
    mock_tick_interval: float = Field(default=1.0, gt=0, le=60, validation_alias="IKOMA_MOCK_TICK_INTERVAL")

    # --- Scaleway (issue 16, providers/scaleway/): on once a secret key is set, read from the file
    # (recommended) or the variable or the seed's aliases; never logged, shown or put in an event
    scaleway_secret_key_file: Path | None = Field(default=None, validation_alias="SCALEWAY_SECRET_KEY_FILE")
    scaleway_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SCALEWAY_SECRET_KEY", "SCALEWAY_API_TOKEN", "SCW_SECRET_KEY"),
    )
    scaleway_project_id: str | None = Field(default=None, validation_alias="SCALEWAY_PROJECT_ID")
    # the zones IKOMA offers, lists and creates in (comma-separated), the image label or id new
    # servers boot, the API's root (a local fake in tests) and the time one HTTP call may take
    scaleway_zones: str = Field(
        default="fr-par-1,fr-par-2,nl-ams-1,pl-waw-1", validation_alias="SCALEWAY_ZONES"
    )
    scaleway_image: str = Field(default="ubuntu_jammy", min_length=1, validation_alias="SCALEWAY_IMAGE")
    scaleway_api_url: str = Field(default="https://api.scaleway.com", validation_alias="SCALEWAY_API_URL")
    scaleway_timeout: float = Field(default=30.0, gt=0, le=600, validation_alias="SCALEWAY_TIMEOUT")

    # --- instances (issue 16, services/instances.py, services/instance_loops.py): the URL a new
    # instance's runner enrols at (default http://HOST:PORT), how long a machine may boot before it is
    # failed and terminated, how long a ready one may go without a runner heartbeat before it is
    # unreachable, what the orphan watchdog does with machines IKOMA does not know (`flag` or
    # `terminate`), how often the leader's loops run, create attempts, and a provider call's lease
    public_url: str | None = Field(default=None, validation_alias="IKOMA_PUBLIC_URL")
    instance_boot_timeout: float = Field(
        default=900.0, ge=1, le=86400, validation_alias="IKOMA_INSTANCE_BOOT_TIMEOUT"
    )
    instance_heartbeat_timeout: float = Field(
        default=180.0, ge=1, le=86400, validation_alias="IKOMA_INSTANCE_HEARTBEAT_TIMEOUT"
    )
    orphan_policy: Literal["flag", "terminate"] = Field(
        default="flag", validation_alias="IKOMA_ORPHAN_POLICY"
    )
    instance_loop_interval: float = Field(
        default=5.0, gt=0, le=3600, validation_alias="IKOMA_INSTANCE_LOOP_INTERVAL"
    )
    instance_create_attempts: int = Field(
        default=3, ge=1, le=20, validation_alias="IKOMA_INSTANCE_CREATE_ATTEMPTS"
    )
    instance_lease: float = Field(default=120.0, ge=1, le=3600, validation_alias="IKOMA_INSTANCE_LEASE")

    @property
    def schedule_defaults(self) -> dict[str, int]:
        """Playbook key -> interval of the default schedules ({} when they are off)."""
        if not self.default_schedules:
            return {}
        intervals = {
            "system.metrics": self.schedule_metrics_interval,
            "apt.analyze": self.schedule_apt_interval,
            "system.facts": self.schedule_facts_interval,
            "docker.status": self.schedule_docker_interval,
        }
        return {key: interval for key, interval in intervals.items() if interval > 0}

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("sqlite", "postgres")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _stale_after_outlasts_a_heartbeat(self) -> Settings:
        # A runner heartbeats its order every min(4 s, lease / 3) (runner/config.py): a threshold at or
        # below that would mark a healthy run STALE between two heartbeats and kill it.
        from ikoma.runner.config import DEFAULT_LEASE_HEARTBEAT

        heartbeat = min(DEFAULT_LEASE_HEARTBEAT, self.claim_lease / 3)
        if self.stale_after <= heartbeat:
            raise ValueError(
                f"IKOMA_STALE_AFTER={self.stale_after:g} must be above the runners' heartbeat interval "
                f"({heartbeat:g} s with IKOMA_CLAIM_LEASE={self.claim_lease:g}); 3x or more is advised"
            )
        return self

    @model_validator(mode="after")
    def _scaleway_key_needs_a_project(self) -> Settings:
        # servers belong to a project: a key without one would fail at the first create, not at start
        key = self.scaleway_secret_key.get_secret_value().strip() if self.scaleway_secret_key else ""
        if (key or self.scaleway_secret_key_file is not None) and not self.scaleway_project_id:
            raise ValueError(
                "SCALEWAY_PROJECT_ID is needed with a Scaleway secret key (servers belong to a project)"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def resolved_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ikoma.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Read settings; a malformed value raises SettingsError naming the variable and the rule broken."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            # a model-level error's input is every variable read, secrets included: name the rule only
            shown = f"={err.get('input')!r}" if err["loc"] else ""
            lines.append(f"  {name}{shown}: {err['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
