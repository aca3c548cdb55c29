"""Declarative playbooks: steps of argv templates where a parameter fills a whole argv item.

`["journalctl", "-u", "{{ service }}"]` runs journalctl with the param's value as one argument, whatever
it contains (`;`, `$()`, spaces): there is no shell and no string splicing. A template inside a larger
string (`--unit={{ service }}`) or as the program itself (argv[0]) is refused when the playbook is
registered, with the path of the offending item.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

TEMPLATE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
ANY_BRACES = re.compile(r"\{\{|\}\}")
SCALAR_TYPES = {"string", "integer", "number", "boolean"}


class StepDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    argv: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=200)]
    timeout_seconds: Annotated[int, Field(ge=1, le=86400)] | None = Field(
        default=None, alias="timeoutSeconds"
    )
    continue_on_error: bool = Field(default=False, alias="continueOnError")


def template_errors(steps: list[StepDefinition], params_schema: dict[str, Any]) -> list[dict[str, str]]:
    """Every misuse of a template, as {path, message}; empty when the steps are sound."""
    properties = params_schema.get("properties", {}) if isinstance(params_schema, dict) else {}
    errors: list[dict[str, str]] = []
    names = [step.name for step in steps]
    for index, step in enumerate(steps):
        if names.index(step.name) != index:
            errors.append(
                {"path": f"steps.{index}.name", "message": f"step name {step.name!r} is used twice"}
            )
        for position, item in enumerate(step.argv):
            path = f"steps.{index}.argv.{position}"
            whole = TEMPLATE.match(item)
            if whole is None:
                if ANY_BRACES.search(item):
                    errors.append({"path": path, "message": "a parameter must fill a whole argv item"})
                continue
            if position == 0:
                errors.append({"path": path, "message": "the program (argv[0]) cannot come from a parameter"})
                continue
            param = whole.group(1)
            spec = properties.get(param)
            if not isinstance(spec, dict):
                errors.append({"path": path, "message": f"unknown parameter {param!r} (not in paramsSchema)"})
                continue
            kind = spec.get("type")
            if kind == "array":
                items = spec.get("items", {})
                if not isinstance(items, dict) or items.get("type") not in SCALAR_TYPES:
                    errors.append({"path": path, "message": f"array parameter {param!r} needs scalar items"})
            elif kind not in SCALAR_TYPES:
                errors.append({"path": path, "message": f"parameter {param!r} needs a scalar or array type"})
    return errors


def render_argv(argv: list[str], params: dict[str, Any]) -> list[str]:
    """The argv with each `{{ name }}` item replaced by the param (an array becomes several items).

    A missing optional parameter drops its item, so `["ls", "{{ path }}"]` without `path` runs `ls`.
    """
    rendered: list[str] = []
    for item in argv:
        whole = TEMPLATE.match(item)
        if whole is None:
            rendered.append(item)
            continue
        value = params.get(whole.group(1))
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        rendered.extend(_text(v) for v in values)
    return rendered


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
