"""A server's derived state: what each playbook's report says, folded into one row.

Pure functions, no framework. `extract` turns a completed order's report into a snapshot payload (the
part of the report the state needs, normalised, versioned); `apply` folds one snapshot into the state.
The state depends only on the snapshots folded in, in order, never on a clock or on the database, so a
rebuild from the snapshots (`ikoma state rebuild`) gives the same row as the completions gave one by one.

Each block (apt, docker, metrics, facts) comes from the newest snapshot of its playbook, or keeps its
previous value when that snapshot failed; `outcomes` keeps the newest outcome per playbook and lastError
is the newest failure still standing among them. So the state depends only on the newest snapshot and
the newest successful one of each playbook: older snapshots can be pruned without changing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1
SUCCEEDED = "SUCCEEDED"

APT_ANALYZE = "apt.analyze"
APT_UPGRADE = "apt.upgrade"
FACTS = "system.facts"
METRICS = "system.metrics"
DOCKER_STATUS = "docker.status"

# Where each built-in playbook leaves its data: the name of its last (data) step.
_DATA_STEPS: dict[str, tuple[str, ...]] = {
    APT_ANALYZE: ("analysis", "apt"),
    APT_UPGRADE: ("result", "apt"),
    FACTS: ("facts",),
    METRICS: ("metrics",),
    DOCKER_STATUS: ("status", "docker"),
}
CRITICAL_DISK = "critical"


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC (the database clock)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    return utc(value).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Snapshot:
    """One completed order's normalised findings (a `snapshots` row)."""

    id: int
    kind: str
    status: str
    order_id: str
    at: datetime
    payload: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True)
class Extract:
    payload: dict[str, Any]
    # important lines as the ingestor found them: {source, category, severity, message, packageName?}
    important: list[dict[str, Any]]


@dataclass(frozen=True)
class MachineState:
    """The `machine_state` row of one server, minus its key. Field names are the column names."""

    health: str = "unknown"
    apt_status: str | None = None
    apt_updates: int = 0
    apt_security: int = 0
    apt_reboot_required: bool = False
    apt_analyzed_at: datetime | None = None
    docker_installed: bool = False
    docker_status: str | None = None
    docker_containers: int | None = None
    docker_running: int | None = None
    docker_unhealthy: int = 0
    docker_stacks: int = 0
    docker_prunable_bytes: int | None = None
    docker_checked_at: datetime | None = None
    load1: float | None = None
    memory_used_percent: float | None = None
    root_used_percent: float | None = None
    metrics: dict[str, Any] | None = None
    metrics_collected_at: datetime | None = None
    disk_warnings: int = 0
    hardware_warnings: int = 0
    facts_collected_at: datetime | None = None
    outcomes: dict[str, Any] = field(default_factory=dict)
    last_error_order_id: str | None = None
    last_error_playbook: str | None = None
    last_error_message: str | None = None
    last_error_at: datetime | None = None
    last_snapshot_id: int | None = None
    updated_at: datetime | None = None

    def to_row(self) -> dict[str, Any]:
        # shallow on purpose: asdict deep-copies the JSON blocks, which cost more than the whole UPDATE
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MachineState:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in row.items() if k in names}
        for key, value in values.items():
            if isinstance(value, datetime):
                values[key] = utc(value)
        return cls(**values)


@dataclass(frozen=True)
class Notice:
    """A state change worth a timeline entry ("reboot now required")."""

    type: str
    severity: str
    message: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- extraction ----------------------------------------------------------------------------------------


def _data(report: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any] | None:
    for step in reversed(report.get("steps") or []):
        if isinstance(step, dict) and step.get("name") in names and isinstance(step.get("data"), dict):
            return dict(step["data"])
    legacy = report.get("data")  # a v1 report carries free-form data at the top
    return dict(legacy) if isinstance(legacy, dict) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _reboot_line(data: dict[str, Any]) -> list[dict[str, Any]]:
    if not data.get("rebootRequired"):
        return []
    packages = [p for p in data.get("rebootPackages") or [] if isinstance(p, str)]
    message = "reboot required" + (f" by {', '.join(packages)}" if packages else "")
    return [{"source": "apt", "category": "reboot_required", "severity": "warning", "message": message}]


def _apt_lines(data: dict[str, Any]) -> list[dict[str, Any]]:
    lines = []
    for line in data.get("importantLines") or []:
        if isinstance(line, dict) and isinstance(line.get("message"), str):
            lines.append(
                {
                    "source": "apt",
                    "category": str(line.get("category") or "warning"),
                    "severity": str(line.get("severity") or "warning"),
                    "message": line["message"],
                    "packageName": line.get("packageName"),
                }
            )
    return lines


def _extract_apt(data: dict[str, Any]) -> Extract:
    if not data.get("applicable", True):
        return Extract({"applicable": False, "reason": data.get("reason")}, [])
    counts = _dict(data.get("counts"))
    upgrades = [u for u in data.get("upgrades") or [] if isinstance(u, dict)]
    payload = {
        "applicable": True,
        "counts": {
            key: _int(counts.get(key))
            for key in ("upgradable", "security", "newInstalls", "removals", "keptBack", "phased", "held")
        },
        "securityPackages": sorted({str(u.get("package")) for u in upgrades if u.get("security")}),
        "rebootRequired": bool(data.get("rebootRequired")),
        "rebootPackages": [p for p in data.get("rebootPackages") or [] if isinstance(p, str)],
    }
    for key in ("dryRun", "applied", "refreshed"):
        if key in data:
            payload[key] = bool(data[key])
    return Extract(payload, _apt_lines(data) + _reboot_line(data))


def _extract_facts(data: dict[str, Any]) -> Extract:
    important = [
        {"source": "system", "category": "hardware_warning", "severity": "warning", "message": str(problem)}
        for problem in data.get("problems") or []
    ]
    for disk in data.get("disks") or []:
        if isinstance(disk, dict) and disk.get("warning"):
            important.append(
                {
                    "source": "system",
                    "category": "disk_full",
                    "severity": "error" if disk["warning"] == CRITICAL_DISK else "warning",
                    "message": f"{disk.get('mountpoint')} is {disk.get('usedPercent')}% full",
                }
            )
    return Extract(data, important)


def _extract_metrics(data: dict[str, Any]) -> Extract:
    # Disk warnings from metrics (every few minutes) are state and timeline entries, not messages:
    # a message that reappears after its acknowledgement is new again, which would undo every ack.
    return Extract(data, [])


def _extract_docker(data: dict[str, Any]) -> Extract:
    if not data.get("applicable", True):
        payload = {"applicable": False, "reason": data.get("reason"), "error": data.get("error")}
        important = []
        if data.get("reason") == "engine not running":
            message = "docker engine not running" + (f": {data['error']}" if data.get("error") else "")
            important.append(
                {"source": "docker", "category": "error", "severity": "error", "message": message}
            )
        return Extract(payload, important)
    engine = _dict(data.get("engine"))
    counts = _dict(data.get("counts"))
    stacks = [s for s in data.get("stacks") or [] if isinstance(s, dict)]
    unhealthy = [str(name) for name in data.get("unhealthy") or []]
    warnings = [str(w) for w in engine.get("warnings") or []]
    payload = {
        "applicable": True,
        "serverVersion": engine.get("serverVersion"),
        "counts": {key: _int(counts.get(key)) for key in ("total", "running", "unhealthy")},
        "unhealthy": unhealthy,
        "stacks": [
            {"project": s.get("project"), "running": _int(s.get("running")), "total": _int(s.get("total"))}
            for s in stacks
        ],
        "reclaimableBytes": data.get("reclaimableBytes"),
        "warnings": warnings,
    }
    important = [
        {
            "source": "docker",
            "category": "warning",
            "severity": "warning",
            "message": f"container {n} is unhealthy",
        }
        for n in unhealthy
    ]
    important += [
        {"source": "docker", "category": "warning", "severity": "warning", "message": w} for w in warnings
    ]
    return Extract(payload, important)


_EXTRACTORS = {
    APT_ANALYZE: _extract_apt,
    APT_UPGRADE: _extract_apt,
    FACTS: _extract_facts,
    METRICS: _extract_metrics,
    DOCKER_STATUS: _extract_docker,
}


def extract(kind: str, status: str, report: dict[str, Any] | None) -> Extract:
    """The snapshot payload and important lines of one completed order (any playbook, any outcome)."""
    report = report if isinstance(report, dict) else {}
    summary = str(report.get("summary") or "")
    errors = [
        str(e.get("message"))
        for e in report.get("errors") or []
        if isinstance(e, dict) and e.get("message") is not None
    ]
    payload: dict[str, Any] = {}
    important: list[dict[str, Any]] = []
    names = _DATA_STEPS.get(kind)
    data = _data(report, names) if names else None
    if data is not None and (status == SUCCEEDED or kind in (APT_ANALYZE, APT_UPGRADE)):
        found = _EXTRACTORS[kind](data)
        payload, important = dict(found.payload), list(found.important)
        payload["found"] = True
    if status != SUCCEEDED:
        message = f"{kind} {status.lower()}" + (f": {summary}" if summary else "")
        important.append({"source": "order", "category": "error", "severity": "error", "message": message})
    payload["summary"] = summary
    payload["errors"] = errors
    return Extract(payload, important)


# --- folding -------------------------------------------------------------------------------------------


def _apply_apt(state: MachineState, snap: Snapshot) -> MachineState:
    data = snap.payload
    if not snap.succeeded or not data.get("found"):
        if snap.kind == APT_ANALYZE:
            return replace(state, apt_status="error")
        return state
    if not data.get("applicable", True):
        return replace(
            state,
            apt_status="not_applicable",
            apt_updates=0,
            apt_security=0,
            apt_reboot_required=False,
            apt_analyzed_at=snap.at,
        )
    reboot = bool(data.get("rebootRequired"))
    if snap.kind == APT_UPGRADE:
        # An upgrade changes what is pending; the counts stay those of the last analysis (marked
        # stale) until the next one, but the reboot flag it read after upgrading is current.
        applied = bool(data.get("applied"))
        return replace(state, apt_reboot_required=reboot, apt_status="stale" if applied else state.apt_status)
    counts = data.get("counts") or {}
    updates = _int(counts.get("upgradable"))
    return replace(
        state,
        apt_status="updates_available" if updates else "up_to_date",
        apt_updates=updates,
        apt_security=_int(counts.get("security")),
        apt_reboot_required=reboot,
        apt_analyzed_at=snap.at,
    )


def _apply_docker(state: MachineState, snap: Snapshot) -> MachineState:
    data = snap.payload
    if not snap.succeeded or not data.get("found"):
        # as apt: the block keeps what the last check that worked found, and when (see `unmeasured`)
        return replace(state, docker_status="error")
    if not data.get("applicable", True):
        installed = data.get("reason") != "docker not found"
        return replace(
            state,
            docker_installed=installed,
            docker_status="down" if installed else "not_installed",
            docker_containers=None,
            docker_running=None,
            docker_unhealthy=0,
            docker_stacks=0,
            docker_prunable_bytes=None,
            docker_checked_at=snap.at,
        )
    counts = data.get("counts") or {}
    reclaimable = data.get("reclaimableBytes")
    return replace(
        state,
        docker_installed=True,
        docker_status="running",
        docker_containers=_int(counts.get("total")),
        docker_running=_int(counts.get("running")),
        docker_unhealthy=_int(counts.get("unhealthy")),
        docker_stacks=len(data.get("stacks") or []),
        docker_prunable_bytes=reclaimable if isinstance(reclaimable, int) else None,
        docker_checked_at=snap.at,
    )


def _apply_metrics(state: MachineState, snap: Snapshot) -> MachineState:
    data = snap.payload
    if not snap.succeeded or not data.get("found"):
        return state
    load = _dict(data.get("load"))
    memory = _dict(data.get("memory"))
    metrics = {k: v for k, v in data.items() if k not in ("found", "summary", "errors")}
    return replace(
        state,
        load1=_number(load.get("load1")),
        memory_used_percent=_number(memory.get("usedPercent")),
        root_used_percent=_number(data.get("rootUsedPercent")),
        metrics=metrics,
        metrics_collected_at=snap.at,
        disk_warnings=len(data.get("warnings") or []),
    )


def _apply_facts(state: MachineState, snap: Snapshot) -> MachineState:
    data = snap.payload
    if not snap.succeeded or not data.get("found"):
        return state
    warnings = hardware_warnings(data)
    return replace(state, hardware_warnings=len(warnings), facts_collected_at=snap.at)


_APPLIERS = {
    APT_ANALYZE: _apply_apt,
    APT_UPGRADE: _apply_apt,
    DOCKER_STATUS: _apply_docker,
    METRICS: _apply_metrics,
    FACTS: _apply_facts,
}


def _error_text(payload: dict[str, Any]) -> str:
    summary = str(payload.get("summary") or "")
    errors = payload.get("errors") or []
    return summary or (str(errors[0]) if errors else "failed")


def _last_error(outcomes: dict[str, Any]) -> dict[str, Any] | None:
    failures = [o for o in outcomes.values() if o.get("status") != SUCCEEDED]
    return max(failures, key=lambda o: int(o["snapshotId"])) if failures else None


def apply(state: MachineState, snap: Snapshot) -> MachineState:
    """The state after one more snapshot (snapshots must come in id order)."""
    applier = _APPLIERS.get(snap.kind)
    if applier is not None:
        state = applier(state, snap)
    outcome: dict[str, Any] = {
        "snapshotId": snap.id,
        "orderId": snap.order_id,
        "status": snap.status,
        "at": iso(snap.at),
    }
    if not snap.succeeded:
        outcome["error"] = _error_text(snap.payload)
    outcomes = {**state.outcomes, snap.kind: outcome}
    failure = _last_error(outcomes)
    state = replace(
        state,
        outcomes=outcomes,
        last_error_order_id=failure["orderId"] if failure else None,
        last_error_playbook=next((k for k, o in outcomes.items() if o is failure), None),
        last_error_message=failure["error"] if failure else None,
        last_error_at=datetime.fromisoformat(failure["at"]) if failure else None,
        last_snapshot_id=snap.id,
        updated_at=snap.at,
    )
    return replace(state, health=health(state))


def rebuild(snapshots: list[Snapshot]) -> MachineState:
    state = MachineState()
    for snap in sorted(snapshots, key=lambda s: s.id):
        state = apply(state, snap)
    return state


def _critical_disks(state: MachineState) -> int:
    warnings = (state.metrics or {}).get("warnings") or []
    return sum(1 for w in warnings if isinstance(w, dict) and w.get("severity") == CRITICAL_DISK)


def health(state: MachineState) -> str:
    """error > warning > ok: what an operator looks at first. `unknown` before any snapshot."""
    if not state.outcomes:
        return "unknown"
    if state.last_error_order_id or state.docker_status in ("down", "error") or _critical_disks(state):
        return "error"
    if (
        state.apt_reboot_required
        or state.apt_security
        or state.docker_unhealthy
        or state.disk_warnings
        or state.hardware_warnings
    ):
        return "warning"
    return "ok"


def unmeasured(state: MachineState) -> frozenset[str]:
    """The fields whose stored value is a placeholder, not a measurement: shown as unknown (null).

    The row keeps 0/false in its NOT NULL columns until a playbook measured them; "0 updates" on a
    server nobody analysed would be a lie. A count is known once its playbook succeeded (its time is
    set). `apt_reboot_required` true is always a measurement (apt.upgrade reads it too); false is one
    only after an analysis.
    """
    missing: set[str] = set()
    if state.apt_analyzed_at is None:
        missing.update(("apt_updates", "apt_security"))
        if not state.apt_reboot_required:
            missing.add("apt_reboot_required")
    if state.docker_checked_at is None:
        missing.update(("docker_installed", "docker_unhealthy", "docker_stacks"))
    if state.metrics_collected_at is None:
        missing.add("disk_warnings")
    if state.facts_collected_at is None:
        missing.add("hardware_warnings")
    return frozenset(missing)


def notices(before: MachineState, after: MachineState) -> list[Notice]:
    """State changes worth a line on the timeline; nothing when the state only got fresher."""
    found: list[Notice] = []
    if after.apt_reboot_required and not before.apt_reboot_required:
        found.append(Notice("state.reboot_required", "warning", "reboot now required"))
    if before.apt_reboot_required and not after.apt_reboot_required:
        found.append(Notice("state.reboot_cleared", "info", "reboot no longer required"))
    if after.apt_security and not before.apt_security:
        found.append(
            Notice("state.security_updates", "warning", f"{after.apt_security} security updates pending")
        )
    if after.docker_status == "down" and before.docker_status != "down":
        found.append(Notice("state.docker_down", "error", "docker engine down"))
    if before.docker_status == "down" and after.docker_status == "running":
        found.append(Notice("state.docker_up", "info", "docker engine running again"))
    if after.docker_unhealthy and not before.docker_unhealthy:
        found.append(
            Notice("state.docker_unhealthy", "warning", f"{after.docker_unhealthy} unhealthy containers")
        )
    if after.disk_warnings and not before.disk_warnings:
        names = [
            str(w.get("message")) for w in (after.metrics or {}).get("warnings") or [] if isinstance(w, dict)
        ]
        found.append(Notice("state.disk_warning", "warning", "; ".join(names) or "a disk is nearly full"))
    if after.last_error_order_id and after.last_error_order_id != before.last_error_order_id:
        found.append(
            Notice(
                "state.error",
                "error",
                f"{after.last_error_playbook} failed: {after.last_error_message}",
            )
        )
    if before.last_error_order_id and not after.last_error_order_id:
        found.append(Notice("state.error_cleared", "info", "no failure standing any more"))
    return found


# --- hardware and metrics ----------------------------------------------------------------------------


def hardware_warnings(facts: dict[str, Any]) -> list[str]:
    """Problems the facts probe met, and disks past their warning level."""
    warnings = [str(p) for p in facts.get("problems") or []]
    for disk in facts.get("disks") or []:
        if isinstance(disk, dict) and disk.get("warning"):
            warnings.append(f"{disk.get('mountpoint')} is {disk.get('usedPercent')}% full")
    return warnings


def hardware(snap: Snapshot) -> dict[str, Any] | None:
    """The `machine_hardware` row of a successful facts snapshot (None for anything else)."""
    if snap.kind != FACTS or not snap.succeeded or not snap.payload.get("found"):
        return None
    data = snap.payload
    cpu = _dict(data.get("cpu"))
    memory = _dict(data.get("memory"))
    virt = _dict(data.get("virtualization"))
    network = _dict(data.get("network"))
    return {
        "snapshot_id": snap.id,
        "hostname": data.get("hostname"),
        "os": _dict(data.get("os")),
        "kernel": data.get("kernel"),
        "arch": data.get("arch"),
        "virtualization": virt.get("virtualization"),
        "machine_kind": data.get("machineKind"),
        "cpu_model": cpu.get("model"),
        "cpu_cores": cpu.get("cores") if isinstance(cpu.get("cores"), int) else None,
        "memory_bytes": memory.get("totalBytes") if isinstance(memory.get("totalBytes"), int) else None,
        "disks": [d for d in data.get("disks") or [] if isinstance(d, dict)],
        "network": [i for i in network.get("interfaces") or [] if isinstance(i, dict)],
        "gpus": [g for g in data.get("gpus") or [] if isinstance(g, dict)],
        "warnings": hardware_warnings(data),
        "collected_at": snap.at,
    }


def metrics_point(snap: Snapshot) -> dict[str, Any] | None:
    """One history point of a successful metrics snapshot (None for anything else)."""
    if snap.kind != METRICS or not snap.succeeded or not snap.payload.get("found"):
        return None
    data = snap.payload
    load = _dict(data.get("load"))
    memory = _dict(data.get("memory"))
    return {
        "at": snap.at,
        "period_s": 0,
        "samples": 1,
        "load1": _number(load.get("load1")),
        "load5": _number(load.get("load5")),
        "memory_used_percent": _number(memory.get("usedPercent")),
        "root_used_percent": _number(data.get("rootUsedPercent")),
    }
