"""An order's report rendered as Markdown: title, outcome, summary, steps, errors, important lines.

Pure: the order row, its report and its snapshot's important lines in, text out. The rendered text is
stored with the report, so what an operator read then is what they read later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ikoma.domain.secret_params import redact_params

OUTPUT_LINES = 20  # the tail of a step's output kept in the report; the whole log is the artifact
MAX_DATA_KEYS = 12


@dataclass(frozen=True)
class Rendered:
    title: str
    summary: str
    markdown: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _duration(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:  # an output containing ``` must not close the block early
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def _tail(output: str) -> str:
    lines = output.rstrip("\n").splitlines()
    if len(lines) <= OUTPUT_LINES:
        return "\n".join(lines)
    return "\n".join(
        [f"… ({len(lines) - OUTPUT_LINES} lines above, see the raw log)", *lines[-OUTPUT_LINES:]]
    )


def _data_summary(data: dict[str, Any]) -> list[str]:
    """The scalar facts of a data step (counts, flags), not its long lists: those are in the snapshot."""
    lines = []
    for key, value in list(data.items())[:MAX_DATA_KEYS]:
        if isinstance(value, dict):
            scalars = {k: v for k, v in value.items() if isinstance(v, str | int | float | bool) or v is None}
            if scalars:
                lines.append(f"- **{key}**: " + ", ".join(f"{k}={v}" for k, v in scalars.items()))
        elif isinstance(value, list):
            lines.append(f"- **{key}**: {len(value)} item(s)")
        else:
            lines.append(f"- **{key}**: {value}")
    return lines


def render(
    order: dict[str, Any],
    *,
    server_name: str,
    important: list[dict[str, Any]],
    artifact: dict[str, Any] | None,
) -> Rendered:
    report = _dict(order.get("report"))
    status = str(order.get("status"))
    playbook = str(order.get("playbook_key"))
    summary = str(report.get("summary") or order.get("report_summary") or "")
    title = f"{playbook} on {server_name}: {status}"
    out = [f"# {title}", ""]
    out.append(f"- **Order**: `{order.get('id')}` (attempt {order.get('attempt')})")
    out.append(f"- **Outcome**: {status}")
    for label, key in (("Started", "started_at"), ("Finished", "finished_at")):
        if order.get(key) is not None:
            out.append(f"- **{label}**: {order[key]}")
    out.append(f"- **Duration**: {_duration(report.get('durationMs'))}")
    if order.get("params"):
        shown = redact_params(order["params"]) or {}
        params = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        out.append(f"- **Params**: {_cell(params)}")
    out += ["", "## Summary", "", summary or "_no summary_", ""]

    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    if steps:
        out += ["## Steps", "", "| # | step | status | exit | duration |", "|---|---|---|---|---|"]
        for number, step in enumerate(steps, start=1):
            out.append(
                f"| {number} | {_cell(step.get('name'))} | {_cell(step.get('status'))} "
                f"| {_cell(step.get('exitCode', '-'))} | {_duration(step.get('durationMs'))} |"
            )
        out.append("")
        for step in steps:
            data = step.get("data")
            output = step.get("output")
            if not isinstance(data, dict) and not (isinstance(output, str) and output.strip()):
                continue
            out += [f"### {step.get('name')}", ""]
            if isinstance(data, dict):
                out += [*_data_summary(data), ""]
            if isinstance(output, str) and output.strip():
                out += [_fence(_tail(output)), ""]

    errors = [e for e in report.get("errors") or [] if isinstance(e, dict)]
    if errors:
        out += ["## Errors", ""]
        for error in errors:
            where = f" (step {error['step']})" if error.get("step") else ""
            code = f" `{error['code']}`" if error.get("code") else ""
            out.append(f"- {error.get('message')}{code}{where}")
        out.append("")

    if important:
        out += ["## Important messages", ""]
        for line in important:
            out.append(f"- **{line.get('category')}** ({line.get('severity')}): {line.get('message')}")
        out.append("")

    out += ["## Raw log", ""]
    if artifact is None:
        out.append("_no log was recorded for this order_")
    else:
        out.append(
            f"artifact `{artifact['id']}`: {artifact['bytes']} bytes, sha256 `{artifact['sha256']}`, "
            f"retention `{artifact['retention_policy']}`"
        )
    return Rendered(title=title[:300], summary=summary, markdown="\n".join(out) + "\n")
