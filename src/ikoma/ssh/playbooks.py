"""The built-in playbooks over SSH: the same steps, parsers and report data as the runner's.

The runner's built-ins read the local machine's files directly; here one fixed script per probe prints
the same files and commands in sections (`@@ikoma <name>`), and the runner's parsers read them, so a
report fills the machine's state exactly as a runner's report would. No user input ever enters a
script: parameters are separate argv words (see remote.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from ikoma.runner.builtins import _common, apt_proxy, docker
from ikoma.runner.builtins.apt import (
    NONINTERACTIVE,
    SIMULATE,
    SIMULATE_TIME_LIMIT,
    _counts_text,
    _validate_upgrade,
    analysis_result,
)
from ikoma.runner.builtins.system import _mem_gib, metrics_result
from ikoma.runner.execution import StepResult
from ikoma.runner.parsers import apt as apt_parse
from ikoma.runner.parsers import system as parse
from ikoma.runner.playbooks import PlaybookResult, invalid_params, step_errors
from ikoma.ssh.remote import RemoteContext

SshPlaybook = Callable[[RemoteContext, dict[str, Any]], Awaitable[PlaybookResult]]
REGISTRY: dict[str, SshPlaybook] = {}
PROBE_TIME_LIMIT = 60.0
SECTION = "@@ikoma "


def ssh_playbook(key: str) -> Callable[[SshPlaybook], SshPlaybook]:
    def register(func: SshPlaybook) -> SshPlaybook:
        REGISTRY[key] = func
        return func

    return register


def capabilities() -> list[str]:
    return sorted(REGISTRY)


def sections(text: str) -> dict[str, str]:
    """`@@ikoma name` headers → the text under each."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(SECTION):
            current = found.setdefault(line[len(SECTION) :].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) + ("\n" if lines else "") for name, lines in found.items()}


def _script(*parts: tuple[str, str]) -> list[str]:
    """`sh -c` over fixed probes only, each behind its section header; always exits 0."""
    body = "; ".join(f"echo '{SECTION}{name}'; {command}" for name, command in parts)
    return ["sh", "-c", body + "; true"]


# The same sources the runner's system playbooks read (runner/builtins/system.py)
_DF = "df -P -B1 -x tmpfs -x devtmpfs -x overlay 2>/dev/null"
_FACTS = _script(
    ("os-release", "cat /etc/os-release 2>/dev/null"),
    ("cpuinfo", "cat /proc/cpuinfo 2>/dev/null"),
    ("meminfo", "cat /proc/meminfo 2>/dev/null"),
    ("uname", "uname -n; uname -r; uname -m"),
    ("nproc", "nproc 2>/dev/null"),
    ("virt", "systemd-detect-virt 2>/dev/null"),
    ("dmi", "cat /sys/class/dmi/id/product_name 2>/dev/null"),
    ("dt-model", "tr -d '\\000' < /proc/device-tree/model 2>/dev/null"),
    ("pve", "test -d /etc/pve && echo yes"),
    ("df", _DF),
    ("ip", "ip -j addr 2>/dev/null"),
)
_METRICS = _script(
    ("loadavg", "cat /proc/loadavg 2>/dev/null"),
    ("meminfo", "cat /proc/meminfo 2>/dev/null"),
    ("nproc", "nproc 2>/dev/null"),
    ("df", _DF),
)
_REBOOT = _script(
    ("reboot", "test -e /var/run/reboot-required && echo yes"),
    ("pkgs", "cat /var/run/reboot-required.pkgs 2>/dev/null"),
    ("apt-get", "command -v apt-get"),
    ("apt-mark", "command -v apt-mark"),
)


async def _captured(ctx: RemoteContext, name: str, argv: list[str], **kwargs: Any) -> tuple[StepResult, str]:
    collect: list[str] = []
    step = await ctx.run_step(name, argv, collect=collect, **kwargs)
    return step, "".join(collect)


# The runner's own docker playbooks: they find programs and capture output through the context
# (`_common.find`, `_common.run_captured`), which an SSH context does on the remote machine.
REGISTRY["docker.status"] = docker.status
REGISTRY["docker.prune"] = docker.prune


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


@ssh_playbook("system.test_ping")
async def test_ping(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    message = params.get("message", "pong")
    if not isinstance(message, str):
        return invalid_params("message must be a string")
    # the message is an argument ($1) of a fixed script, printed last so a newline in it stays in it
    script = 'uname -n; date -u +%Y-%m-%dT%H:%M:%S+00:00; echo "$$"; printf %s "$1"'
    step, text = await _captured(ctx, "ping", ["sh", "-c", script, "ping", message], time_limit=30)
    if step.status == "SUCCEEDED":
        hostname, started_at, pid, echoed = [*text.split("\n", 3), "", "", "", ""][:4]
        data = {"message": echoed, "hostname": hostname, "pid": _int(pid), "startedAt": started_at}
        masked = ctx.masker.mask_data(data)
        step.data = masked if isinstance(masked, dict) else None
    summary = f"ping: {ctx.masker(message)}" if step.status == "SUCCEEDED" else f"ping {step.status.lower()}"
    return PlaybookResult(summary=summary, steps=[step], errors=step_errors([step]))


@ssh_playbook("system.facts")
async def facts(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    started = time.monotonic()
    step, text = await _captured(ctx, "probe", _FACTS, time_limit=PROBE_TIME_LIMIT)
    steps = [step]
    if step.status != "SUCCEEDED":
        return PlaybookResult(summary=f"facts {step.status.lower()}", steps=steps, errors=step_errors(steps))
    found = sections(text)
    problems: list[str] = []
    os_release = parse.parse_os_release(found.get("os-release", ""))
    cpu = parse.parse_cpuinfo(found.get("cpuinfo", ""))
    if cpu["cores"] == 0:
        cpu["cores"] = _int(found.get("nproc", "")) or 0
    memory = parse.parse_meminfo(found.get("meminfo", ""))
    nodename, release, machine = [*found.get("uname", "").splitlines(), "", "", ""][:3]
    virt = found.get("virt", "").strip() or None
    virtualization = parse.detect_virtualization(virt, found.get("dmi") or None)
    board = found.get("dt-model", "").strip() or cpu["boardModel"]
    kind = parse.machine_kind(virtualization, board_model=board, proxmox_host="yes" in found.get("pve", ""))
    df = parse.parse_df(found["df"]) if found.get("df", "").strip() else None
    if df is None:
        problems.append("df unavailable")
    interfaces: list[parse.NetInterface] = []
    if found.get("ip", "").strip():
        try:
            interfaces = parse.parse_ip_addr_json(found["ip"])
        except ValueError:
            problems.append("ip -j addr output not parsed")
    else:
        problems.append("ip not found")
    data: dict[str, Any] = {
        "hostname": nodename,
        "os": {
            "family": os_release["family"],
            "id": os_release["id"],
            "version": os_release["versionId"] or os_release["version"],
            "codename": os_release["codename"],
            "prettyName": os_release["prettyName"],
        },
        "kernel": release,
        "arch": machine,
        "virtualization": virtualization,
        "machineKind": kind,
        "cpu": cpu,
        "memory": memory,
        "disks": df["filesystems"] if df else [],
        "network": {"interfaces": interfaces},
        "gpus": [],
        "problems": problems,
    }
    steps.append(_common.data_step(ctx, "facts", data, started))
    os_text = " ".join(p for p in (os_release["id"] or os_release["family"], os_release["versionId"]) if p)
    if os_release["codename"]:
        os_text += f" ({os_release['codename']})"
    summary = f"{os_text}, {cpu['cores']} cores, {_mem_gib(memory)}"
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))


@ssh_playbook("system.metrics")
async def metrics(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    started = time.monotonic()
    step, text = await _captured(ctx, "probe", _METRICS, time_limit=PROBE_TIME_LIMIT)
    steps = [step]
    if step.status != "SUCCEEDED":
        return PlaybookResult(
            summary=f"metrics {step.status.lower()}", steps=steps, errors=step_errors(steps)
        )
    found = sections(text)
    load = parse.parse_loadavg(found["loadavg"]) if found.get("loadavg", "").strip() else None
    memory = parse.parse_meminfo(found.get("meminfo", ""))
    df = parse.parse_df(found["df"]) if found.get("df", "").strip() else None
    return metrics_result(
        ctx,
        load=load,
        cpu_cores=_int(found.get("nproc", "")),
        memory=memory,
        df=df,
        steps=steps,
        started=started,
    )


def _proxy_options(ctx: RemoteContext) -> list[str]:
    """apt's proxy for this run only (aptProxyMode `proxy`), the same options a runner passes."""
    return apt_proxy.options(ctx.apt_proxy_url)


async def _apt_tools(ctx: RemoteContext) -> tuple[StepResult, dict[str, str]]:
    step, text = await _captured(ctx, "probe", _REBOOT, time_limit=PROBE_TIME_LIMIT)
    return step, sections(text)


def _reboot(found: dict[str, str]) -> apt_parse.RebootStatus:
    if "yes" not in found.get("reboot", ""):
        return apt_parse.RebootStatus(required=False, packages=[])
    packages = list(dict.fromkeys(p.strip() for p in found.get("pkgs", "").splitlines() if p.strip()))
    return apt_parse.RebootStatus(required=True, packages=packages)


def _not_applicable(ctx: RemoteContext, steps: list[StepResult]) -> PlaybookResult:
    steps.append(_common.data_step(ctx, "apt", _common.not_applicable("apt not found"), time.monotonic()))
    return PlaybookResult(summary="not applicable: no apt", steps=steps)


def _failure(what: str, step: StepResult, text: str, steps: list[StepResult]) -> PlaybookResult:
    errors = [line["message"] for line in apt_parse.important_lines(text) if line["severity"] == "error"]
    summary = f"{what} {step.status.lower()}" + (f": {errors[0]}" if errors else "")
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))


@ssh_playbook("apt.analyze")
async def apt_analyze(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    refresh = params.get("refresh", False)
    if not isinstance(refresh, bool):
        return invalid_params("refresh must be a boolean")
    started = time.monotonic()
    probe, found = await _apt_tools(ctx)
    steps = [probe]
    if not found.get("apt-get", "").strip():
        return _not_applicable(ctx, steps)
    notices = ""
    if refresh:
        update, notices = await _captured(
            ctx, "update", ["apt-get", *_proxy_options(ctx), "update"], sudo=True
        )
        steps.append(update)
    simulate, text = await _captured(
        ctx,
        "simulate",
        ["apt-get", *SIMULATE, *_proxy_options(ctx), "dist-upgrade"],
        time_limit=SIMULATE_TIME_LIMIT,
    )
    steps.append(simulate)
    if simulate.status != "SUCCEEDED":
        return _failure("apt simulation", simulate, text, steps)
    held: list[str] = []
    if found.get("apt-mark", "").strip():
        hold, hold_text = await _captured(
            ctx, "held", ["apt-mark", "showhold"], time_limit=SIMULATE_TIME_LIMIT
        )
        steps.append(hold)
        held = apt_parse.parse_held(hold_text) if hold.status == "SUCCEEDED" else []
    return analysis_result(
        ctx,
        refresh=refresh,
        text=text,
        notices=notices,
        held=held,
        reboot=_reboot(found),
        steps=steps,
        started=started,
    )


@ssh_playbook("apt.upgrade")
async def apt_upgrade(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    checked = _validate_upgrade(params)
    if isinstance(checked, str):
        return invalid_params(checked)
    dry_run, packages = checked
    started = time.monotonic()
    probe, found = await _apt_tools(ctx)
    steps = [probe]
    if not found.get("apt-get", "").strip():
        return _not_applicable(ctx, steps)
    action = ["install", "--only-upgrade", *packages] if packages else ["upgrade"]
    plan, plan_text = await _captured(
        ctx, "plan", ["apt-get", *SIMULATE, *_proxy_options(ctx), *action], time_limit=SIMULATE_TIME_LIMIT
    )
    steps.append(plan)
    if plan.status != "SUCCEEDED":
        return _failure("apt plan", plan, plan_text, steps)
    simulation = apt_parse.parse_simulated_upgrade(plan_text)
    output = plan_text
    if not dry_run and (simulation["upgrades"] or simulation["newInstalls"] or simulation["removals"]):
        argv = [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            *NONINTERACTIVE,
            *_proxy_options(ctx),
            *action,
        ]
        run, output = await _captured(ctx, "upgrade", argv, sudo=True)
        steps.append(run)
    _, after = await _apt_tools(ctx)
    reboot = _reboot(after)
    applied = not dry_run and steps[-1].name == "upgrade" and steps[-1].status == "SUCCEEDED"
    data: dict[str, Any] = {
        "applicable": True,
        "dryRun": dry_run,
        "packages": packages,
        "applied": applied,
        "upgrades": simulation["upgrades"],
        "newInstalls": simulation["newInstalls"],
        "removals": simulation["removals"],
        "counts": simulation["counts"],
        "keptBack": simulation["keptBack"],
        "rebootRequired": reboot["required"],
        "rebootPackages": reboot["packages"],
        "importantLines": apt_parse.important_lines(output),
    }
    steps.append(_common.data_step(ctx, "result", data, started))
    errors = step_errors(steps)
    counts = _counts_text(simulation)
    if dry_run:
        summary = f"dry run: {counts}"
    elif errors:
        summary = _failure("apt upgrade", steps[-2], output, steps).summary
    elif applied:
        summary = f"upgraded: {counts}"
    else:
        summary = "nothing to upgrade"
    if reboot["required"]:
        summary += ", reboot required"
    return PlaybookResult(summary=summary, steps=steps, errors=errors)


@ssh_playbook("shell.exec")
async def shell_exec(ctx: RemoteContext, params: dict[str, Any]) -> PlaybookResult:
    argv = params.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return invalid_params("argv must be a non-empty list of strings")
    step = await ctx.run_step("exec", list(argv))
    summary = f"{ctx.masker(argv[0])} ended {step.status}" + (
        f" (exit {step.exit_code})" if step.exit_code is not None else ""
    )
    return PlaybookResult(summary=summary, steps=[step], errors=step_errors([step]))
