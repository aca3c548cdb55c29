"""Request and response shapes (camelCase on the wire): XCreate / XUpdate / XPublic families."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from ikoma.contracts.playbook import StepDefinition
from ikoma.domain.secret_params import redact_params


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC (the database clock).
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# pydantic writes an aware UTC datetime as ISO 8601 with a "Z"
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Id = Annotated[str, AfterValidator(lambda v: str(uuid.UUID(v)))]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
ShortText = Annotated[str, Field(min_length=1, max_length=100)]
Role = Literal["observer", "builder", "operator", "admin"]


def _not_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "may be left out, but not set to null")
    return value


# An update's field that may be left out but has no "no value": an explicit null is refused (422 with
# the field's path) instead of reaching a NOT NULL column. Checked on given input only, not defaults.
NotNull = BeforeValidator(_not_null)


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


# --- servers ---------------------------------------------------------------------------------------
Hostname = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.:_-]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Labels = dict[Annotated[str, Field(min_length=1, max_length=100)], Annotated[str, Field(max_length=500)]]


SshUsername = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]*$")]
# write-only: accepted on create and update, never answered (SecretStr keeps them out of reprs and errors)
SshSecret = Annotated[SecretStr, Field(min_length=1, max_length=1000)]
SshPrivateKey = Annotated[SecretStr, Field(min_length=1, max_length=20000)]


def _proxy_url(value: str) -> str:
    """An http(s) URL with a host, no credentials in clear text, nothing apt could read as another option."""
    parsed = urlsplit(value)
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or any(c.isspace() or c in "\"';" for c in value)
        or parsed.username
        or parsed.password
    ):
        raise PydanticCustomError(
            "apt_proxy_url", "must be an http:// or https:// URL with a host and no user or password"
        )
    return value


AptProxyUrl = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_proxy_url)]


class ServerFields(Wire):
    hostname: Hostname | None = None
    port: Port | None = None
    labels: Labels | None = None
    os_family: ShortText | None = None
    os_version: ShortText | None = None
    os_codename: ShortText | None = None
    arch: ShortText | None = None
    machine_kind: ShortText | None = None
    virtualization: ShortText | None = None
    hardware_profile: ShortText | None = None
    runner_id: uuid.UUID | None = None
    # issue 14: agentless machines over SSH, and apt's proxy (seed 003)
    ssh_username: SshUsername | None = None
    ssh_password: SshSecret | None = None
    ssh_private_key: SshPrivateKey | None = None
    ssh_key_passphrase: SshSecret | None = None
    sudo_password: SshSecret | None = None
    apt_proxy_url: AptProxyUrl | None = None


class ServerCreate(ServerFields):
    name: Name
    hostname: Hostname
    port: Port = 22
    labels: Labels = Field(default_factory=dict)
    os_family: ShortText = "unknown"
    connection_mode: Literal["agent", "ssh"] = "agent"
    apt_proxy_mode: Literal["direct", "proxy"] = "direct"


class ServerUpdate(ServerFields):
    """Only the fields given change; `null` clears a nullable one (`runnerId: null` detaches)."""

    name: Annotated[Name | None, NotNull] = None
    hostname: Annotated[Hostname | None, NotNull] = None
    port: Annotated[Port | None, NotNull] = None
    labels: Annotated[Labels | None, NotNull] = None
    os_family: Annotated[ShortText | None, NotNull] = None
    connection_mode: Annotated[Literal["agent", "ssh"] | None, NotNull] = None
    apt_proxy_mode: Annotated[Literal["direct", "proxy"] | None, NotNull] = None


HostKeyFingerprint = Annotated[str, Field(min_length=8, max_length=100, pattern=r"^SHA256:[A-Za-z0-9+/=]+$")]


class TrustHostKey(Wire):
    """The fingerprint to trust (`SHA256:…`, as test-connection shows it), or null: the next one seen."""

    fingerprint: HostKeyFingerprint | None = None


class ConnectionTest(Public):
    ok: bool
    reason: str
    message: str | None = None
    os: str | None = None
    kernel: str | None = None
    host_key_fingerprint: str | None = None
    sudo: str | None = None


class AttachRunner(Wire):
    runner_id: uuid.UUID | None


class ServerPublic(Public):
    id: str
    name: str
    hostname: str
    port: int
    # rows written before `labels: null` was refused hold null: shown as no labels, not a 500
    labels: Annotated[dict[str, str], BeforeValidator(lambda v: {} if v is None else v)]
    os_family: str
    os_version: str | None
    os_codename: str | None
    arch: str | None
    machine_kind: str | None
    virtualization: str | None
    hardware_profile: str | None
    runner_id: str | None
    runner_name: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    connection_mode: str = "agent"
    ssh_username: str | None = None
    # never a credential: only whether one is set, and the private key's fingerprint
    has_password: bool = False
    has_private_key: bool = False
    has_sudo_password: bool = False
    ssh_key_fingerprint: str | None = None
    host_key_fingerprint: str | None = None
    host_key_pinned_at: UtcDatetime | None = None
    apt_proxy_mode: str = "direct"
    apt_proxy_url: str | None = None


# --- runners ---------------------------------------------------------------------------------------
class RunnerCreate(Wire):
    name: Name


class RunnerPublic(Public):
    id: str
    name: str
    token_prefix: str
    server_id: str | None
    server_name: str | None
    online: bool
    last_heartbeat_at: UtcDatetime | None
    version: str | None
    hostname: str | None
    capabilities: list[str]
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None = None
    revoked_by: str | None = Field(default=None, description="`admin` or `api_client:<id>`.")
    token_rotated_at: UtcDatetime | None = None


class RunnerCreated(RunnerPublic):
    token: str = Field(description="Shown once; only its SHA-256 is stored.")


class RunnerRevoked(RunnerPublic):
    requeued_order_ids: list[str] = Field(description="Orders it held, back in the queue.")
    ended_order_ids: list[str] = Field(description="Orders it was running, ended (STALE or CANCELLED).")


# --- playbooks -------------------------------------------------------------------------------------
class PlaybookCreate(Wire):
    key: Annotated[str, Field(max_length=200, pattern=r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")]
    name: Name | None = None
    description: Annotated[str, Field(max_length=5000)] = ""
    params_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    min_role: Role = "operator"
    destructive: bool = False
    default_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 3600
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 1
    steps: Annotated[list[StepDefinition], Field(min_length=1, max_length=50)] | None = Field(
        default=None, description="Declarative playbook: argv templates the runner executes in order."
    )


class PlaybookPublic(Public):
    id: str
    key: str
    name: str
    description: str
    params_schema: dict[str, Any]
    min_role: str
    destructive: bool
    default_timeout_seconds: int = Field(validation_alias="default_timeout_s")
    max_attempts: int
    builtin: bool
    steps: list[dict[str, Any]] | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- orders ----------------------------------------------------------------------------------------
OrderStatusName = Literal[
    "QUEUED", "CLAIMED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT", "STALE"
]


class OrderCreate(Wire):
    server_id: uuid.UUID
    playbook_key: Annotated[str, Field(min_length=1, max_length=200)]
    action: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")] = "run"
    params: dict[str, Any] = Field(default_factory=dict)
    runner_id: uuid.UUID | None = None
    timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=20)] | None = None


class OrderPublic(Public):
    id: str
    status: OrderStatusName
    server_id: str
    runner_id: str | None
    playbook_key: str
    action: str
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_seconds: int = Field(validation_alias="timeout_s")
    lease_expires_at: UtcDatetime | None
    cancel_requested: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime
    claimed_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    not_before: UtcDatetime | None
    report_version: str | None
    report_summary: str | None
    status_reason: str | None

    @field_validator("params", mode="before")
    @classmethod
    def _secrets_hidden(cls, params: Any) -> Any:
        # every reader but the lease holder sees a placeholder for a secret param (sealed at rest)
        return redact_params(params) if isinstance(params, dict) else params


class ClaimedOrder(OrderPublic):
    """What the runner holding the lease gets: its secret params opened (by the dispatcher)."""

    lease_token: str = Field(description="Fencing token: present it on start, heartbeat and complete.")
    steps: list[dict[str, Any]] | None = Field(
        default=None, description="For a declarative playbook: its steps as of the order's creation."
    )
    # absent, not null, when there is none: the claim answer of every other order stays as it was
    apt_proxy_url: str | None = Field(
        default=None,
        exclude_if=lambda url: url is None,
        description="For an apt order on a server in aptProxyMode `proxy`: apt's proxy for this run.",
    )

    @field_validator("params", mode="before")
    @classmethod
    def _secrets_hidden(cls, params: Any) -> Any:
        return params  # the lease holder's view: the dispatcher opened exactly what it may see


class AttemptPublic(Public):
    attempt: int
    runner_id: str
    claimed_at: UtcDatetime
    started_at: UtcDatetime | None
    ended_at: UtcDatetime | None
    outcome: str | None
    reason: str | None


WaitingReason = Literal[
    "no_runner_attached",
    "runner_offline",
    "not_before",
    "runner_busy",
    "queued",
    "claimed",
    "lease_expired_requeue",
]


class BusyWith(Public):
    id: str
    status: OrderStatusName
    playbook_key: str


class WaitingEstimate(Public):
    starts_in_seconds: float = Field(description="Seconds until the order should start.")
    orders_ahead: int
    median_seconds: float | None = Field(
        description="Median duration of the runner's last finished orders (the estimate's basis)."
    )


class WaitingFor(Public):
    """Why a QUEUED or CLAIMED order does not run yet (services/waiting.py, docs/fleet-operations.md)."""

    reason: WaitingReason
    message: str
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    runner_id: str | None = None
    orders_ahead: int | None = None
    busy_with: list[BusyWith] | None = None
    estimate: WaitingEstimate | None = None


class OrderView(OrderPublic):
    """An order as the order routes show it: with the order it re-runs and why it waits (read time)."""

    rerun_of: str | None = None
    waiting_for: WaitingFor | None = Field(
        default=None, description="Null for a RUNNING or finished order (issue 15)."
    )


class OrderDetail(OrderView):
    report: dict[str, Any] | None
    attempts: list[AttemptPublic]
    reruns: list[str] = Field(default_factory=list, description="Ids of this order's re-runs, oldest first.")


class ReportContract(Public):
    version: str
    compatible_versions: list[str]
    summary: str
    duration_ms: int
    steps: list[Any]
    errors: list[Any]


class OrderCreated(Public):
    order: OrderPublic
    report_contract: ReportContract


class OrderRerun(Public):
    order: OrderView
    report_contract: ReportContract


class OrderPage(Public):
    items: list[OrderView]
    next_cursor: str | None


class OrderEventPublic(Public):
    id: int
    order_id: str
    at: UtcDatetime
    from_status: str | None
    to_status: str
    reason: str
    attempt: int
    actor: str
    details: dict[str, Any] | None


class CancelRequest(Wire):
    reason: Annotated[str, Field(max_length=500)] | None = None


# --- runner routes ---------------------------------------------------------------------------------
class RunnerHeartbeat(Wire):
    version: Annotated[str, Field(max_length=100)] | None = None
    hostname: Annotated[str, Field(max_length=255)] | None = None
    capabilities: list[Annotated[str, Field(max_length=100)]] | None = Field(default=None, max_length=100)


class LeaseBody(Wire):
    lease_token: uuid.UUID | None = None


class CompleteBody(LeaseBody):
    # CANCELLED/TIMEOUT come from the runner stopping the work itself (a cancel seen in a lease
    # heartbeat answer, or the order's timeout reached on the runner)
    status: Literal["SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"]
    report: dict[str, Any]


class RunnerHeartbeatAnswer(Public):
    ok: bool
    runner_id: str
    server_id: str | None
    server_time: UtcDatetime


class OrderHeartbeatAnswer(Public):
    order_id: str
    status: OrderStatusName
    lease_expires_at: UtcDatetime | None
    cancel_requested: bool


# --- runner registration and logs ------------------------------------------------------------------
class BootstrapTokenCreate(Wire):
    name: Name | None = None
    server_id: uuid.UUID | None = None
    expires_in_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 3600


class BootstrapTokenIssued(Public):
    token: str = Field(description="One-time; shown once, stored as SHA-256.")
    expires_at: UtcDatetime
    server_id: str | None


class RegisterBody(Wire):
    name: Name | None = None
    hostname: Annotated[str, Field(max_length=255)] | None = None


class Registered(Public):
    runner_id: str
    token: str
    server_id: str | None
    name: str


class LogChunkIn(Wire):
    seq: Annotated[int, Field(ge=0, le=1_000_000_000)]
    stream: Literal["stdout", "stderr", "system"]
    data: Annotated[str, Field(max_length=65536)]


class LogsBody(LeaseBody):
    chunks: Annotated[list[LogChunkIn], Field(min_length=1, max_length=500)]


class LogsAccepted(Public):
    accepted: int
    duplicates: int
    truncated: bool
    stored_bytes: int


class LogChunkPublic(Public):
    seq: int
    stream: str
    data: str
    at: UtcDatetime


class LogPage(Public):
    items: list[LogChunkPublic]
    next_seq: int
    done: bool
    truncated: bool


class ErrorBody(BaseModel):
    reason: str
    message: str
    details: dict[str, Any] | None = None
    errors: list[dict[str, Any]] | None = None


# --- API clients -----------------------------------------------------------------------------------
class ApiClientCreate(Wire):
    name: Name
    role: Role
    expires_at: UtcDatetime | None = None
    expires_in_seconds: Annotated[int, Field(ge=60, le=10 * 365 * 86400)] | None = None
    # absent: every server; present: the only servers this client may see or act on
    server_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=1000)] | None = None


class ApiClientPublic(Public):
    id: str
    name: str
    role: Role
    token_prefix: str
    server_ids: list[str] | None
    expires_at: UtcDatetime | None
    created_by: str
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class ApiClientIssued(ApiClientPublic):
    token: str = Field(description="Shown once; only its SHA-256 and prefix are stored.")
