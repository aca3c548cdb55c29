"""Response (and the few request) shapes of the machine-state routes, camelCase on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ikoma.api.schemas import Id, Public, UtcDatetime, Wire
from ikoma.services.schedules import COLLECTION_PLAYBOOKS, MAX_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS

Health = Literal["ok", "warning", "error", "unknown"]
Severity = Literal["info", "warning", "error"]


# A count or flag nobody measured yet is null (unknown), never a made-up 0 or false.
class AptState(Public):
    status: str | None
    updates: int | None = Field(description="null until an apt.analyze report has been ingested")
    security: int | None = Field(description="null until an apt.analyze report has been ingested")
    reboot_required: bool | None = Field(description="null until apt.analyze (or apt.upgrade) said so")
    analyzed_at: UtcDatetime | None


class DockerState(Public):
    installed: bool | None = Field(description="null until a docker.status check worked")
    status: str | None
    containers: int | None
    running: int | None
    unhealthy: int | None
    stacks: int | None
    prunable_bytes: int | None
    checked_at: UtcDatetime | None


class MetricsNow(Public):
    load1: float | None
    memory_used_percent: float | None
    root_used_percent: float | None
    collected_at: UtcDatetime | None
    disk_warnings: int | None = Field(description="null until system.metrics ran")
    # the latest system.metrics data (load, memory, filesystems, warnings)
    latest: dict[str, Any] | None


class LastError(Public):
    order_id: Id
    playbook_key: str
    message: str
    at: UtcDatetime


class MachineStatePublic(Public):
    server_id: Id
    server_name: str
    up: bool = Field(description="its runner is attached and heartbeating")
    runner_id: Id | None
    runner_name: str | None
    last_heartbeat_at: UtcDatetime | None
    running_order_ids: list[str]
    health: Health
    apt: AptState
    docker: DockerState
    metrics: MetricsNow
    hardware_warnings: int | None = Field(description="null until system.facts ran")
    facts_collected_at: UtcDatetime | None
    last_error: LastError | None
    outcomes: dict[str, Any] = Field(description="the newest outcome per playbook")
    updated_at: UtcDatetime | None = Field(description="time of the newest snapshot folded in")


class HardwarePublic(Public):
    server_id: Id
    snapshot_id: int
    hostname: str | None
    os: dict[str, Any]
    kernel: str | None
    arch: str | None
    virtualization: str | None
    machine_kind: str | None
    cpu_model: str | None
    cpu_cores: int | None
    memory_bytes: int | None
    disks: list[dict[str, Any]]
    network: list[dict[str, Any]]
    gpus: list[dict[str, Any]]
    warnings: list[str]
    collected_at: UtcDatetime


class MetricsPointPublic(Public):
    at: UtcDatetime
    samples: int
    load1: float | None
    load5: float | None
    memory_used_percent: float | None
    root_used_percent: float | None


class MetricsSeries(Public):
    server_id: Id
    from_: UtcDatetime = Field(serialization_alias="from")
    to: UtcDatetime
    step: int | None
    points: list[MetricsPointPublic]


class TimelineEntry(Public):
    id: str = Field(description="`event:<n>` or `order:<n>` (an order transition)")
    at: UtcDatetime
    type: str
    severity: Severity
    message: str
    actor: str
    order_id: Id | None
    details: dict[str, Any] | None


class TimelinePage(Public):
    items: list[TimelineEntry]
    next_cursor: str | None


class Acknowledgement(Public):
    by: str
    at: UtcDatetime


class ImportantMessagePublic(Public):
    id: Id
    server_id: Id
    source: str
    category: str
    severity: str
    message: str
    package_name: str | None
    count: int
    first_seen_at: UtcDatetime
    last_seen_at: UtcDatetime
    last_order_id: Id | None
    acknowledged: bool
    new: bool
    acknowledged_at: UtcDatetime | None
    acknowledged_by: str | None
    acks: list[Acknowledgement]


class ReportSummary(Public):
    id: Id
    server_id: Id
    order_id: Id
    attempt: int
    playbook_key: str
    status: str
    title: str
    summary: str
    artifact_id: Id | None
    created_at: UtcDatetime


class ReportPublic(ReportSummary):
    markdown: str


class ReportPage(Public):
    items: list[ReportSummary]
    next_cursor: str | None


class ArtifactPublic(Public):
    id: Id
    server_id: Id
    order_id: Id
    kind: str
    bytes: int
    sha256: str
    retention_policy: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    deleted_at: UtcDatetime | None
    delete_reason: str | None


class FleetServer(Public):
    server_id: Id
    server_name: str
    up: bool
    health: Health
    attention: list[str] = Field(description="why it needs attention, most pressing first")
    apt_updates: int | None
    apt_security: int | None
    reboot_required: bool | None
    docker_status: str | None
    root_used_percent: float | None
    new_messages: int
    last_error: LastError | None


class FleetSummary(Public):
    servers: int
    needing_attention: int
    by_health: dict[str, int]
    down: int
    reboot_required: int
    with_security_updates: int
    docker_down: int
    new_messages: int
    items: list[FleetServer]


CollectionPlaybook = Literal[COLLECTION_PLAYBOOKS]  # type: ignore[valid-type]


class ScheduleIn(Wire):
    playbook_key: CollectionPlaybook
    interval_seconds: Annotated[int, Field(ge=MIN_INTERVAL_SECONDS, le=MAX_INTERVAL_SECONDS)]
    enabled: bool = True


class SchedulesPut(Wire):
    schedules: list[ScheduleIn] = Field(max_length=len(COLLECTION_PLAYBOOKS))


class SchedulePublic(Public):
    id: Id
    server_id: Id
    playbook_key: str
    interval_seconds: int = Field(validation_alias="interval_s")
    enabled: bool
    next_run_at: UtcDatetime | None
    last_order_id: Id | None
    updated_at: UtcDatetime


class RebuildRequest(Wire):
    server_id: Id | None = None


class RebuildDone(Public):
    rebuilt: int
