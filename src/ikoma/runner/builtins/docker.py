"""`docker.status` (engine, containers, compose stacks, reclaimable space) and `docker.prune`.

A host without docker, or whose engine is down, is not a failure of these playbooks: the order
SUCCEEDS with ``data.applicable == false`` and a ``reason`` ("docker not found" or
"engine not running"), so a fleet-wide status run does not light up every non-docker host red.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ikoma.runner.builtins import _common
from ikoma.runner.execution import ExecutionContext, StepResult
from ikoma.runner.parsers import docker as parse
from ikoma.runner.playbooks import PlaybookResult, invalid_params, playbook, step_errors

JSON_FORMAT = "{{json .}}"
# A hung daemon makes every docker command wait forever; the probe must answer quickly.
INFO_TIME_LIMIT = 30.0
LIST_TIME_LIMIT = 120.0
_RECLAIMED_RE = re.compile(r"^Total reclaimed space:\s*(?P<size>.+)$", re.MULTILINE)


def _summary_bytes(size: int) -> str:
    # docker prints decimal units (go-units HumanSize); say the same so numbers match its CLI.
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


async def _engine(
    ctx: ExecutionContext, started: float
) -> tuple[str, dict[str, Any], list[StepResult]] | PlaybookResult:
    """The docker path and the engine's `info`, or the finished not-applicable result."""
    docker = await _common.find(ctx, "docker")
    if docker is None:
        step = _common.data_step(ctx, "docker", _common.not_applicable("docker not found"), started)
        return PlaybookResult(summary="not applicable: no docker", steps=[step])
    info_step, text = await _common.run_captured(
        ctx, "info", [docker, "info", "--format", JSON_FORMAT], time_limit=INFO_TIME_LIMIT
    )
    info: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                info = parsed
                break
    # The client prints its own half of `info` even when the daemon is unreachable, then exits 1;
    # newer clients may exit 0 and list the failure in ServerErrors instead.
    server_errors = info.get("ServerErrors") or []
    if info_step.status == "FAILED" or server_errors or (info and not info.get("ServerVersion")):
        _common.tolerate(info_step)
        prose = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("{")]
        detail = str(server_errors[0]) if server_errors else (prose[0] if prose else None)
        data = {**_common.not_applicable("engine not running"), "error": detail}
        steps = [info_step, _common.data_step(ctx, "docker", data, started)]
        return PlaybookResult(summary="not applicable: docker engine not running", steps=steps)
    if info_step.status != "SUCCEEDED":  # a timeout: the engine hangs, which is worth a red order
        summary = f"docker info {info_step.status.lower()}"
        return PlaybookResult(summary=summary, steps=[info_step], errors=step_errors([info_step]))
    return docker, info, [info_step]


@playbook("docker.status")
async def status(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    started = time.monotonic()
    engine = await _engine(ctx, started)
    if isinstance(engine, PlaybookResult):
        return engine
    docker, info, steps = engine

    ps_step, ps_text = await _common.run_captured(
        ctx,
        "containers",
        [docker, "ps", "-a", "--no-trunc", "--format", JSON_FORMAT],
        time_limit=LIST_TIME_LIMIT,
    )
    steps.append(ps_step)
    containers = parse.parse_docker_ps_json_lines(ps_text) if ps_step.status == "SUCCEEDED" else []
    df_step, df_text = await _common.run_captured(
        ctx, "disk-usage", [docker, "system", "df", "--format", JSON_FORMAT], time_limit=LIST_TIME_LIMIT
    )
    steps.append(df_step)
    system_df = parse.parse_system_df(df_text) if df_step.status == "SUCCEEDED" else None

    running = sum(1 for c in containers if c["state"] == "running")
    unhealthy = [c["name"] for c in containers if c["health"] == "unhealthy"]
    stacks = parse.compose_stacks(containers)
    data: dict[str, Any] = {
        "applicable": True,
        "engine": {
            "serverVersion": info.get("ServerVersion"),
            "operatingSystem": info.get("OperatingSystem"),
            "storageDriver": info.get("Driver"),
            "rootDir": info.get("DockerRootDir"),
            "images": info.get("Images"),
            "warnings": info.get("Warnings") or [],
        },
        "containers": containers,
        "counts": {"total": len(containers), "running": running, "unhealthy": len(unhealthy)},
        "unhealthy": unhealthy,
        "stacks": stacks,
        "systemDf": system_df,
        "reclaimableBytes": system_df["totalReclaimableBytes"] if system_df else None,
    }
    steps.append(_common.data_step(ctx, "status", data, started))
    summary = f"docker {info.get('ServerVersion')}: {running}/{len(containers)} containers running"
    summary += f", {len(stacks)} stacks"
    if unhealthy:
        summary += f", unhealthy: {', '.join(unhealthy[:5])}"
    if system_df is not None:
        summary += f", {_summary_bytes(system_df['totalReclaimableBytes'])} reclaimable"
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))


@playbook("docker.prune")
async def prune(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    prune_all = params.get("all", False)
    if not isinstance(prune_all, bool):
        return invalid_params("all must be a boolean")
    started = time.monotonic()
    engine = await _engine(ctx, started)
    if isinstance(engine, PlaybookResult):
        return engine
    docker, _, steps = engine
    # -f: no prompt (stdin is /dev/null anyway); -a: also images no container uses, not just dangling.
    argv = [docker, "system", "prune", "-f", *(["-a"] if prune_all else [])]
    step, text = await _common.run_captured(ctx, "prune", argv)
    steps.append(step)
    match = _RECLAIMED_RE.search(text)
    reclaimed = parse.parse_size(match["size"].strip())[0] if match else None
    data = {"applicable": True, "all": prune_all, "reclaimedBytes": reclaimed}
    steps.append(_common.data_step(ctx, "result", data, started))
    if step.status != "SUCCEEDED":
        summary = f"docker prune {step.status.lower()}"
    else:
        summary = f"reclaimed {_summary_bytes(reclaimed or 0)}" + (
            " (all unused images)" if prune_all else ""
        )
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))
