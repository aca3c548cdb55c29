"""`apt.analyze` (what an upgrade would do) and `apt.upgrade` (do it, non-interactively)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ikoma.runner.builtins import _common, apt_proxy
from ikoma.runner.execution import ExecutionContext, StepResult
from ikoma.runner.parsers import apt as parse
from ikoma.runner.playbooks import PlaybookResult, invalid_params, playbook, step_errors

# Same pattern as the catalog's params schema: the server checks it too, but the runner must not
# trust that a name starting with "-" never reaches apt-get as an option.
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.:-]*$")
# The simulation needs no lock, so it runs unprivileged and next to a running unattended-upgrades.
SIMULATE = ["-s", "-o", "Debug::NoLocking=1"]
# Keep the admin's edited config files and take the package default for untouched ones:
# a prompt would hang a non-interactive run until its timeout.
NONINTERACTIVE = ["-y", "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
SIMULATE_TIME_LIMIT = 300.0
# Where reboot-required is looked for; a module attribute so tests can point it at a fixture tree.
REBOOT_ROOT = Path("/")

NOT_APPLICABLE_SUMMARY = "not applicable: no apt"


def _not_applicable(ctx: ExecutionContext) -> PlaybookResult:
    step = _common.data_step(ctx, "apt", _common.not_applicable("apt not found"), time.monotonic())
    return PlaybookResult(summary=NOT_APPLICABLE_SUMMARY, steps=[step])


def _proxy(ctx: ExecutionContext) -> list[str] | PlaybookResult:
    """apt-get's proxy options for this run (the server's aptProxyMode `proxy`, from the claim), or the
    refusal of a URL apt must not be given: never a silent fall back to going direct."""
    try:
        return apt_proxy.options(ctx.apt_proxy_url)
    except apt_proxy.ProxyRefused as exc:
        return PlaybookResult(summary=str(exc), errors=[{"message": str(exc), "code": "apt_proxy_invalid"}])


def _counts_text(simulation: parse.AptSimulation) -> str:
    counts = simulation["counts"]
    if not counts["upgradable"] and not counts["newInstalls"] and not counts["removals"]:
        text = "up to date"
    else:
        text = f"{counts['upgradable']} upgrades ({counts['security']} security)"
        if counts["newInstalls"]:
            text += f", {counts['newInstalls']} new"
        if counts["removals"]:
            text += f", {counts['removals']} removals"
    if counts["keptBack"]:
        text += f", {counts['keptBack']} kept back"
    if counts["phased"]:
        text += f", {counts['phased']} phased"
    return text


def _failure_summary(what: str, step: StepResult, text: str) -> str:
    errors = [line["message"] for line in parse.important_lines(text) if line["severity"] == "error"]
    return f"{what} {step.status.lower()}" + (f": {errors[0]}" if errors else "")


@playbook("apt.analyze")
async def analyze(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    refresh = params.get("refresh", False)
    if not isinstance(refresh, bool):
        return invalid_params("refresh must be a boolean")
    apt_get = _common.which("apt-get")
    if apt_get is None:
        return _not_applicable(ctx)
    proxy = _proxy(ctx)
    if isinstance(proxy, PlaybookResult):
        return proxy
    started = time.monotonic()
    steps: list[StepResult] = []
    notices = ""
    if refresh:
        # Off by default: an analysis should not depend on (or hammer) the mirrors, and the
        # machine's own apt timer normally keeps the lists fresh. Needs root.
        update, notices = await _common.run_captured(ctx, "update", [apt_get, *proxy, "update"])
        steps.append(update)
    simulate, text = await _common.run_captured(
        ctx, "simulate", [apt_get, *SIMULATE, *proxy, "dist-upgrade"], time_limit=SIMULATE_TIME_LIMIT
    )
    steps.append(simulate)
    if simulate.status != "SUCCEEDED":
        return PlaybookResult(
            summary=_failure_summary("apt simulation", simulate, text), steps=steps, errors=step_errors(steps)
        )
    held: list[str] = []
    apt_mark = _common.which("apt-mark")
    if apt_mark is not None:
        hold, hold_text = await _common.run_captured(
            ctx, "held", [apt_mark, "showhold"], time_limit=SIMULATE_TIME_LIMIT
        )
        steps.append(hold)
        held = parse.parse_held(hold_text) if hold.status == "SUCCEEDED" else []

    reboot = parse.reboot_required(REBOOT_ROOT)
    return analysis_result(
        ctx,
        refresh=refresh,
        text=text,
        notices=notices,
        held=held,
        reboot=reboot,
        steps=steps,
        started=started,
    )


def analysis_result(
    ctx: ExecutionContext,
    *,
    refresh: bool,
    text: str,
    notices: str,
    held: list[str],
    reboot: parse.RebootStatus,
    steps: list[StepResult],
    started: float,
) -> PlaybookResult:
    """apt.analyze's report from the simulation's output, here or on an SSH machine (ssh/playbooks.py)."""
    simulation = parse.parse_simulated_upgrade(text)
    data: dict[str, Any] = {
        "applicable": True,
        "refreshed": refresh,
        "upgrades": simulation["upgrades"],
        "newInstalls": simulation["newInstalls"],
        "removals": simulation["removals"],
        "counts": {**simulation["counts"], "held": len(held)},
        "keptBack": simulation["keptBack"],
        "phased": simulation["phased"],
        "held": held,
        "heldChanged": simulation["heldChanged"],
        "rebootRequired": reboot["required"],
        "rebootPackages": reboot["packages"],
        # update's notices (a repository changing its Suite, an expired key) matter most
        "importantLines": parse.important_lines(notices + "\n" + text if notices else text),
        "unrecognizedSections": simulation["unrecognizedSections"],
    }
    steps.append(_common.data_step(ctx, "analysis", data, started))
    summary = _counts_text(simulation)
    if held:
        summary += f", {len(held)} held"
    if reboot["required"]:
        summary += ", reboot required"
    return PlaybookResult(summary=summary, steps=steps, errors=step_errors(steps))


def _validate_upgrade(params: dict[str, Any]) -> tuple[bool, list[str]] | str:
    dry_run = params.get("dryRun", False)
    if not isinstance(dry_run, bool):
        return "dryRun must be a boolean"
    packages = params.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        return "packages must be a list of strings"
    bad = [p for p in packages if not PACKAGE_RE.fullmatch(p)]
    if bad:
        return f"invalid package names: {', '.join(repr(p) for p in bad[:5])}"
    return dry_run, list(dict.fromkeys(packages))


@playbook("apt.upgrade")
async def upgrade(ctx: ExecutionContext, params: dict[str, Any]) -> PlaybookResult:
    checked = _validate_upgrade(params)
    if isinstance(checked, str):
        return invalid_params(checked)
    dry_run, packages = checked
    apt_get = _common.which("apt-get")
    if apt_get is None:
        return _not_applicable(ctx)
    proxy = _proxy(ctx)
    if isinstance(proxy, PlaybookResult):
        return proxy
    started = time.monotonic()
    # `install --only-upgrade` upgrades the named packages if installed and never installs new ones.
    action = ["install", "--only-upgrade", *packages] if packages else ["upgrade"]
    steps: list[StepResult] = []

    # The plan is simulated first in both modes: it tells what the real run is about to change,
    # which apt's own progress output does not say in a parseable way.
    plan, plan_text = await _common.run_captured(
        ctx, "plan", [apt_get, *SIMULATE, *proxy, *action], time_limit=SIMULATE_TIME_LIMIT
    )
    steps.append(plan)
    if plan.status != "SUCCEEDED":
        return PlaybookResult(
            summary=_failure_summary("apt plan", plan, plan_text), steps=steps, errors=step_errors(steps)
        )
    simulation = parse.parse_simulated_upgrade(plan_text)
    output = plan_text
    if not dry_run and (simulation["upgrades"] or simulation["newInstalls"] or simulation["removals"]):
        env = _common.which("env")
        if env is None:
            message = "env not found: cannot run apt-get with DEBIAN_FRONTEND=noninteractive"
            return PlaybookResult(
                summary=message, steps=steps, errors=[{"message": message, "code": "missing_program"}]
            )
        # The step environment is an allow-list; `env` adds the one variable apt needs, no shell.
        argv = [env, "DEBIAN_FRONTEND=noninteractive", apt_get, *NONINTERACTIVE, *proxy, *action]
        run, output = await _common.run_captured(ctx, "upgrade", argv)
        steps.append(run)
    reboot = parse.reboot_required(REBOOT_ROOT)
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
        "importantLines": parse.important_lines(output),
    }
    steps.append(_common.data_step(ctx, "result", data, started))
    errors = step_errors(steps)
    counts = _counts_text(simulation)
    if dry_run:
        summary = f"dry run: {counts}"
    elif errors:
        summary = _failure_summary("apt upgrade", steps[-2], output)
    elif applied:
        summary = f"upgraded: {counts}"
    else:
        summary = "nothing to upgrade"
    if reboot["required"]:
        summary += ", reboot required"
    return PlaybookResult(summary=summary, steps=steps, errors=errors)
