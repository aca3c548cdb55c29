"""`system.facts` (what the machine is) and `system.metrics` (how it is doing right now)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ikoma.runner.builtins import _common
from ikoma.runner.execution import ExecutionContext, StepResult
from ikoma.runner.parsers import system as parse
from ikoma.runner.playbooks import PlaybookResult, playbook, step_errors

# tmpfs/devtmpfs/overlay are RAM or container layers: their "fullness" is noise for a disk report.
DF_ARGV = ["df", "-P", "-B1", "-x", "tmpfs", "-x", "devtmpfs", "-x", "overlay"]
GPU_QUERY = "--query-gpu=name,memory.total,driver_version"
PROBE_TIME_LIMIT = 30.0
GIB = 1024**3


async def _df(ctx: ExecutionContext) -> tuple[StepResult | None, parse.DfResult | None]:
    df = _common.which("df")
    if df is None:
        return None, None
    # captured in full: a host with many mounts prints more than the 4 KiB step tail
    step, text = await _common.run_captured(ctx, "df", [df, *DF_ARGV[1:]], time_limit=PROBE_TIME_LIMIT)
    # df exits 1 when one mount is unreadable (a stale NFS share) yet prints all the others.
    if step.status == "FAILED" and step.exit_code == 1 and "%" in text:
        _common.tolerate(step)
    return step, parse.parse_df(text) if step.status == "SUCCEEDED" else None


def _proxmox_host() -> bool:
    # /etc/pve is the pmxcfs cluster filesystem: it exists on Proxmox VE nodes and nowhere else.
    return Path("/etc/pve").is_dir()


def _mem_gib(memory: parse.MemInfo) -> str:
    total = memory["totalBytes"]
    return f"{total / GIB:.1f} GiB" if total else "? GiB"


@playbook("system.facts")
async def facts(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    started = time.monotonic()
    steps: list[StepResult] = []
    problems: list[str] = []

    os_release = parse.parse_os_release(_common.read_text("/etc/os-release") or "")
    cpu = parse.parse_cpuinfo(_common.read_text("/proc/cpuinfo") or "")
    if cpu["cores"] == 0:  # some ARM kernels and containers hide "processor" lines
        cpu["cores"] = os.cpu_count() or 0
    memory = parse.parse_meminfo(_common.read_text("/proc/meminfo") or "")
    uname = os.uname()

    virt_output: str | None = None
    detect_virt = _common.which("systemd-detect-virt")
    if detect_virt is not None:
        # It prints "none" and exits 1 on bare metal: that exit is an answer, not a failure.
        step = _common.tolerate(
            await ctx.run_step("virtualization", [detect_virt], time_limit=PROBE_TIME_LIMIT)
        )
        steps.append(step)
        virt_output = step.output if step.status == "SUCCEEDED" else None
    dmi_product = _common.read_text("/sys/class/dmi/id/product_name")
    virtualization = parse.detect_virtualization(virt_output, dmi_product)
    board = parse.read_device_tree_model("/") or cpu["boardModel"]
    kind = parse.machine_kind(virtualization, board_model=board, proxmox_host=_proxmox_host())

    df_step, df = await _df(ctx)
    if df_step is not None:
        steps.append(df_step)
    if df is None:
        problems.append("df unavailable")

    interfaces: list[parse.NetInterface] | None = None
    ip = _common.which("ip")
    if ip is not None:
        # captured in full: a docker host's veth interfaces easily exceed the 4 KiB step tail
        step, text = await _common.run_captured(
            ctx, "network", [ip, "-j", "addr"], time_limit=PROBE_TIME_LIMIT
        )
        steps.append(step)
        if step.status == "SUCCEEDED":
            try:
                interfaces = parse.parse_ip_addr_json(text)
            except ValueError:  # busybox ip has no -j: it prints prose
                problems.append("ip -j addr output not parsed")
    else:
        problems.append("ip not found")

    gpus: list[parse.Gpu] = []
    nvidia_smi = _common.which("nvidia-smi")
    if nvidia_smi is not None:
        gpu_argv = [nvidia_smi, GPU_QUERY, "--format=csv,noheader,nounits"]
        step = await ctx.run_step("gpu", gpu_argv, time_limit=PROBE_TIME_LIMIT)
        # nvidia-smi installed without a loaded driver is common (a VM image, a removed card):
        # it is a fact about the machine, reported as a problem, not a failed inventory.
        probe = parse.parse_nvidia_smi_csv(step.output)
        _common.tolerate(step)
        steps.append(step)
        gpus = probe["gpus"]
        if probe["error"]:
            problems.append(f"nvidia-smi: {probe['error']}")

    data: dict[str, Any] = {
        "hostname": uname.nodename,
        "os": {
            "family": os_release["family"],
            "id": os_release["id"],
            "version": os_release["versionId"] or os_release["version"],
            "codename": os_release["codename"],
            "prettyName": os_release["prettyName"],
        },
        "kernel": uname.release,
        "arch": uname.machine,
        "virtualization": virtualization,
        "machineKind": kind,
        "cpu": cpu,
        "memory": memory,
        "disks": df["filesystems"] if df else [],
        "network": {"interfaces": interfaces or []},
        "gpus": gpus,
        "problems": problems,
    }
    steps.append(_common.data_step(ctx, "facts", data, started))
    os_text = " ".join(p for p in (os_release["id"] or os_release["family"], os_release["versionId"]) if p)
    if os_release["codename"]:
        os_text += f" ({os_release['codename']})"
    summary = f"{os_text}, {cpu['cores']} cores, {_mem_gib(memory)}"
    if gpus:
        summary += f", {len(gpus)} GPU" + ("s" if len(gpus) > 1 else "")
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))


@playbook("system.metrics")
async def metrics(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    started = time.monotonic()
    loadavg_text = _common.read_text("/proc/loadavg")
    load = parse.parse_loadavg(loadavg_text) if loadavg_text else None
    memory = parse.parse_meminfo(_common.read_text("/proc/meminfo") or "")
    df_step, df = await _df(ctx)
    steps = [df_step] if df_step is not None else []
    return metrics_result(
        ctx, load=load, cpu_cores=os.cpu_count(), memory=memory, df=df, steps=steps, started=started
    )


def metrics_result(
    ctx: ExecutionContext,
    *,
    load: parse.LoadAvg | None,
    cpu_cores: int | None,
    memory: parse.MemInfo,
    df: parse.DfResult | None,
    steps: list[StepResult],
    started: float,
) -> PlaybookResult:
    """system.metrics' report from what was read, here or on an SSH machine (ssh/playbooks.py)."""
    warnings = df["warnings"] if df else []
    data: dict[str, Any] = {
        "load": load,
        "cpuCores": cpu_cores,
        "memory": memory,
        "filesystems": df["filesystems"] if df else [],
        "rootUsedPercent": df["rootUsedPercent"] if df else None,
        "warnings": warnings,
    }
    steps.append(_common.data_step(ctx, "metrics", data, started))
    parts = []
    if load is not None:
        parts.append(f"load {load['load1']:.2f}/{load['load5']:.2f}/{load['load15']:.2f}")
    if memory["usedPercent"] is not None:
        parts.append(f"memory {memory['usedPercent']:.0f}% used")
    if df is not None and df["rootUsedPercent"] is not None:
        parts.append(f"/ {df['rootUsedPercent']}% used")
    summary = ", ".join(parts) or "no metrics"
    if warnings:
        summary += "; warning: " + "; ".join(w["message"] for w in warnings)
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))
