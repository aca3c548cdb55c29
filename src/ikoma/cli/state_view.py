"""`ikoma servers show`: one server at a glance, as a Rich panel built from the API's answers."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

HEALTH_STYLE = {"ok": "green", "warning": "yellow", "error": "red", "unknown": "dim"}
SEVERITY_STYLE = {"info": "dim", "warning": "yellow", "error": "red"}
GIB = 1024**3


def _when(value: Any) -> str:
    if not value:
        return "never"
    text = str(value).replace("T", " ")
    return text[:19]


def _percent(value: Any) -> str:
    return "?" if value is None else f"{float(value):.0f}%"


def _up(state: dict[str, Any]) -> Text:
    if not state.get("runnerId"):
        return Text("no runner attached", style="red")
    if state.get("up"):
        return Text(
            f"yes (runner {state.get('runnerName')}, heartbeat {_when(state.get('lastHeartbeatAt'))})"
        )
    return Text(
        f"NO: runner {state.get('runnerName')} silent since {_when(state.get('lastHeartbeatAt'))}", "red"
    )


def _apt(apt: dict[str, Any]) -> Text:
    status = apt.get("status")
    if status is None:
        return Text("not analyzed yet (apt.analyze)", style="dim")
    if status == "not_applicable":
        return Text("no apt on this server", style="dim")
    # counts are null until an apt.analyze report was ingested (e.g. apt failed before any analysis)
    updates, security = apt.get("updates"), apt.get("security")
    text = Text(f"{'unknown' if updates is None else updates} pending, ")
    text.append(f"{'unknown' if security is None else security} security", style="yellow" if security else "")
    text.append(f"  ({status}, analyzed {_when(apt.get('analyzedAt'))})", style="dim")
    return text


def _docker(docker: dict[str, Any]) -> Text:
    status = docker.get("status")
    if status is None:
        return Text("not checked yet (docker.status)", style="dim")
    if status == "not_installed":
        return Text("not installed", style="dim")
    if status in ("down", "error"):
        return Text(f"engine {status}", style="red")
    containers = f"{docker.get('running')}/{docker.get('containers')} containers"
    text = Text(f"running, {containers}, {docker.get('stacks')} stacks")
    if docker.get("unhealthy"):
        text.append(f", {docker['unhealthy']} unhealthy", style="yellow")
    if docker.get("prunableBytes"):
        text.append(f", {docker['prunableBytes'] / GIB:.1f} GiB reclaimable", style="dim")
    return text


def _now(metrics: dict[str, Any]) -> Text:
    if not metrics.get("collectedAt"):
        return Text("no metrics yet (system.metrics)", style="dim")
    load = metrics.get("load1")
    text = Text(
        f"load {'?' if load is None else f'{load:.2f}'} · memory {_percent(metrics.get('memoryUsedPercent'))}"
        f" · / {_percent(metrics.get('rootUsedPercent'))}"
    )
    if metrics.get("diskWarnings"):
        text.append(f" · {metrics['diskWarnings']} disk warning(s)", style="yellow")
    text.append(f"  ({_when(metrics.get('collectedAt'))})", style="dim")
    return text


def _hardware(hardware: dict[str, Any] | None) -> Text:
    if hardware is None:
        return Text("unknown yet (system.facts)", style="dim")
    os_name = (hardware.get("os") or {}).get("prettyName") or "?"
    memory = hardware.get("memoryBytes")
    parts = [
        str(hardware.get("cpuModel") or "?"),
        f"{hardware.get('cpuCores') or '?'} cores",
        f"{memory / GIB:.1f} GiB" if memory else "? GiB",
        f"{hardware.get('machineKind') or '?'} ({hardware.get('virtualization') or '?'})",
        os_name,
    ]
    if hardware.get("gpus"):
        parts.append(f"{len(hardware['gpus'])} GPU(s)")
    text = Text(", ".join(parts))
    if hardware.get("warnings"):
        text.append(f"  {len(hardware['warnings'])} warning(s)", style="yellow")
    return text


def render(
    server: dict[str, Any],
    state: dict[str, Any],
    hardware: dict[str, Any] | None,
    messages: list[dict[str, Any]],
    timeline: list[dict[str, Any]],
) -> RenderableType:
    health = str(state.get("health", "unknown"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("Up", _up(state))
    running = state.get("runningOrderIds") or []
    if running:
        grid.add_row("Running", Text(", ".join(running)))
    grid.add_row("Updates", _apt(state.get("apt") or {}))
    reboot = (state.get("apt") or {}).get("rebootRequired")
    if reboot is None:
        grid.add_row("Reboot", Text("unknown", style="dim"))
    else:
        grid.add_row("Reboot", Text("required", style="yellow") if reboot else Text("not required"))
    grid.add_row("Docker", _docker(state.get("docker") or {}))
    grid.add_row("Now", _now(state.get("metrics") or {}))
    grid.add_row("Hardware", _hardware(hardware))
    error = state.get("lastError")
    if error:
        grid.add_row("Last error", Text(f"{error['playbookKey']}: {error['message']}", style="red"))

    parts: list[RenderableType] = [grid]
    parts.append(Text(f"\nNew important messages ({len(messages)})", style="bold"))
    for message in messages[:10]:
        line = Text("  ● ", style=SEVERITY_STYLE.get(message.get("severity", ""), ""))
        line.append(f"{message.get('category')}  {message.get('source')}  ", style="dim")
        line.append(str(message.get("message")))
        if message.get("count", 1) > 1:
            line.append(f"  (seen {message['count']} times)", style="dim")
        parts.append(line)
    if not messages:
        parts.append(Text("  none", style="dim"))
    parts.append(Text("\nTimeline", style="bold"))
    for entry in timeline:
        line = Text(f"  {_when(entry.get('at'))}  ", style="dim")
        line.append(f"{entry.get('type')}  ", style=SEVERITY_STYLE.get(entry.get("severity", ""), ""))
        line.append(str(entry.get("message")))
        parts.append(line)
    if not timeline:
        parts.append(Text("  nothing yet", style="dim"))
    title = Text(f"{server.get('name')} ({server.get('hostname')})  ")
    title.append(health.upper(), style=f"bold {HEALTH_STYLE.get(health, '')}")
    return Panel(Group(*parts), title=title, title_align="left", expand=False)
