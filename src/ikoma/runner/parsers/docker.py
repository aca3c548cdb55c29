"""Parsers for ``docker ps`` / ``docker system df`` JSON-lines output and compose grouping."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, TypedDict

COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_WORKDIR_LABEL = "com.docker.compose.project.working_dir"
COMPOSE_CONFIG_LABEL = "com.docker.compose.project.config_files"


class Container(TypedDict):
    id: str
    name: str
    image: str
    state: str
    status: str
    health: str | None
    exitCode: int | None
    createdAt: str | None
    ports: str
    labels: dict[str, str]
    composeProject: str | None
    composeService: str | None


class DfType(TypedDict):
    type: str
    totalCount: int | None
    active: int | None
    sizeBytes: int | None
    reclaimableBytes: int | None
    reclaimablePercent: int | None


class SystemDf(TypedDict):
    types: list[DfType]
    reclaimableBytesByType: dict[str, int]
    totalReclaimableBytes: int


class ComposeStack(TypedDict):
    project: str
    workingDir: str | None
    configFiles: list[str]
    services: list[str]
    containers: list[str]
    running: int
    total: int


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        # A daemon error ("Cannot connect to the Docker daemon ...") is prose, not JSON;
        # the caller already has the exit code, so such lines are skipped, not fatal.
        if not line.startswith("{"):
            continue
        value = json.loads(line)
        if isinstance(value, dict):
            rows.append(value)
    return rows


def _parse_labels(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    labels: dict[str, str] = {}
    if not isinstance(raw, str) or not raw:
        return labels
    # docker renders labels as "k=v,k2=v2" without escaping, and compose's config_files
    # label itself contains commas; a segment without '=' therefore continues the previous value.
    last: str | None = None
    for segment in raw.split(","):
        key, sep, value = segment.partition("=")
        if sep and key and " " not in key:
            labels[key] = value
            last = key
        elif last is not None:
            labels[last] += "," + segment
    return labels


_EXIT_RE = re.compile(r"^Exited \((?P<code>-?\d+)\)")
_HEALTH_RE = re.compile(r"\((?P<health>healthy|unhealthy|health: starting)\)")


def parse_docker_ps_json_lines(text: str) -> list[Container]:
    """Parse ``docker ps -a --format '{{json .}}'`` into containers with labels, health and exit code."""
    containers: list[Container] = []
    for row in _json_lines(text):
        labels = _parse_labels(row.get("Labels"))
        status = str(row.get("Status", ""))
        exit_match = _EXIT_RE.match(status)
        health_match = _HEALTH_RE.search(status)
        health = health_match["health"] if health_match else None
        containers.append(
            Container(
                id=str(row.get("ID", "")),
                name=str(row.get("Names", "")),
                image=str(row.get("Image", "")),
                # Docker < 20.10 has no State field; the Status prose starts with it instead.
                state=str(row.get("State") or status.split(" ", 1)[0].lower()),
                status=status,
                health="starting" if health == "health: starting" else health,
                exitCode=int(exit_match["code"]) if exit_match else None,
                createdAt=str(row["CreatedAt"]) if row.get("CreatedAt") else None,
                ports=str(row.get("Ports", "")),
                labels=labels,
                composeProject=labels.get(COMPOSE_PROJECT_LABEL),
                composeService=labels.get(COMPOSE_SERVICE_LABEL),
            )
        )
    return containers


# go-units HumanSize: decimal multiples (kB = 1000 B), which is what `docker system df` prints.
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15}
_SIZE_RE = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[kKMGTP]?B)\s*(?:\((?P<pct>\d+)%\))?")


def parse_size(text: str) -> tuple[int | None, int | None]:
    """Convert docker's human size ("1.2GB (50%)") to (bytes, percent)."""
    match = _SIZE_RE.match(text or "")
    if not match:
        return None, None
    size = round(float(match["num"]) * _UNITS[match["unit"].lower()])
    return size, int(match["pct"]) if match["pct"] else None


def _camel(type_name: str) -> str:
    words = type_name.split()
    return words[0].lower() + "".join(w.capitalize() for w in words[1:]) if words else ""


def _int_or_none(value: Any) -> int | None:
    text = str(value).strip() if value is not None else ""
    return int(text) if text.isdigit() else None


def parse_system_df(text: str) -> SystemDf:
    """Parse ``docker system df --format '{{json .}}'`` into sizes and reclaimable bytes per type."""
    types: list[DfType] = []
    by_type: dict[str, int] = {}
    for row in _json_lines(text):
        key = _camel(str(row.get("Type", "")))
        size, _ = parse_size(str(row.get("Size", "")))
        reclaimable, percent = parse_size(str(row.get("Reclaimable", "")))
        types.append(
            DfType(
                type=key,
                totalCount=_int_or_none(row.get("TotalCount")),
                active=_int_or_none(row.get("Active")),
                sizeBytes=size,
                reclaimableBytes=reclaimable,
                reclaimablePercent=percent,
            )
        )
        if reclaimable is not None:
            by_type[key] = reclaimable
    return SystemDf(types=types, reclaimableBytesByType=by_type, totalReclaimableBytes=sum(by_type.values()))


def compose_stacks(containers: Iterable[Container]) -> list[ComposeStack]:
    """Group containers into compose stacks by the ``com.docker.compose.project`` label."""
    stacks: dict[str, ComposeStack] = {}
    for container in containers:
        project = container["composeProject"]
        if not project:
            continue
        stack = stacks.get(project)
        if stack is None:
            config = container["labels"].get(COMPOSE_CONFIG_LABEL, "")
            stack = ComposeStack(
                project=project,
                workingDir=container["labels"].get(COMPOSE_WORKDIR_LABEL),
                configFiles=[c for c in config.split(",") if c],
                services=[],
                containers=[],
                running=0,
                total=0,
            )
            stacks[project] = stack
        service = container["composeService"]
        if service and service not in stack["services"]:
            stack["services"].append(service)
        stack["containers"].append(container["name"])
        stack["total"] += 1
        stack["running"] += container["state"] == "running"
    for stack in stacks.values():
        stack["services"].sort()
        stack["containers"].sort()
    return sorted(stacks.values(), key=lambda s: s["project"])
