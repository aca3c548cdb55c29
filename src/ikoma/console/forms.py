"""A playbook's JSON parameter schema as form fields (the run page): pure, no framework.

One field per property, in the schema's order: strings are text inputs (a textarea when they may be
long, a password input when the schema marks them secret), integers and numbers are number inputs with
their bounds, booleans are checkboxes, enums are selects, arrays of strings are one-per-line textareas
(a multiple select when the items are an enum), and anything else is a JSON textarea. Field names are
`params.<property>`: static/ikoma.js builds `{"params": {...}}` from them, with the JSON type each
field's `data_type` says. The server validates the params against the schema anyway; these only help
the user get them right first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ikoma.domain.secret_params import is_secret_name

Widget = Literal[
    "text", "password", "textarea", "number", "checkbox", "select", "multiselect", "lines", "json"
]
# the JSON type static/ikoma.js gives a field's value (`data-type`); "" = the string as typed
DataType = Literal["", "integer", "number", "boolean", "json", "string"]
LONG_STRING = 256  # a string that may be longer than this gets a textarea
# schema markers of a secret param (domain/secret_params.py; its name may say so too): a password input
SECRET_KEYS = ("x-secret", "writeOnly")
CONFIRM_PARAM = "confirm"  # destructive app tools: must repeat `appName` (services/tools.check_confirmation)
CONFIRMED_PARAM = "appName"


@dataclass(frozen=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True)
class FormField:
    """One labelled input of the run form (templates/run.html renders it)."""

    name: str  # the form field's name: `params.<property>`
    property: str
    label: str
    widget: Widget
    data_type: DataType = ""
    required: bool = False
    description: str = ""
    default: str | None = None  # the initial value as the input shows it
    checked: bool = False
    options: tuple[Option, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: str | None = None
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    # a destructive app tool's confirmation: must equal this other param (ikoma/console/static/orders.js)
    must_equal: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


def label_of(name: str, schema: dict[str, Any]) -> str:
    """The schema's `title`, else the property name in words (`dryRun` → `Dry run`, `app_name` → `App
    name`)."""
    title = schema.get("title")
    if isinstance(title, str) and title.strip():
        return title.strip()
    words: list[str] = []
    current = ""
    for char in name.replace("_", " ").replace("-", " "):
        if char == " ":
            if current:
                words.append(current)
            current = ""
        elif char.isupper() and current and not current[-1].isupper():
            words.append(current)
            current = char
        else:
            current += char
    if current:
        words.append(current)
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)
    return text[:1].upper() + text[1:] if text else name


# characters a browser's `pattern` (compiled with the `v` flag) refuses unescaped inside a class
_CLASS_SYNTAX = "(){}/|"
_DOUBLE_PUNCTUATORS = frozenset(c * 2 for c in "&!#$%*+,.:;<=>?@^`~")


def browser_pattern(pattern: str) -> str | None:
    """A JSON schema `pattern` as an HTML `pattern` attribute, or None when it cannot be said safely.

    Browsers compile the attribute with the `v` flag, which refuses some class contents JSON schema
    (and Python) accept: `[a-z0-9-]` must be `[a-z0-9\\-]` there. A `-` at either end of a class and the
    class syntax characters are escaped; a nested class or a doubled punctuator gives None (the field is
    then checked by the API only, never refused by a pattern the browser cannot compile).
    """
    out: list[str] = []
    i = 0
    in_class = False
    class_start = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if not in_class:
            if char == "[":
                in_class = True
                out.append(char)
                i += 1
                if pattern[i : i + 1] == "^":
                    out.append("^")
                    i += 1
                class_start = i
                continue
            out.append(char)
            i += 1
            continue
        if char == "]" and i > class_start:
            in_class = False
            out.append(char)
        elif char == "]":  # first in its class: a literal `]` (JavaScript would end an empty class)
            out.append("\\]")
        elif char == "[" or pattern[i : i + 2] in _DOUBLE_PUNCTUATORS:
            return None
        elif char == "-" and (i == class_start or pattern[i + 1 : i + 2] == "]"):
            out.append("\\-")
        elif char in _CLASS_SYNTAX:
            out.append("\\" + char)
        else:
            out.append(char)
        i += 1
    return None if in_class else "".join(out)


def _shown(value: Any) -> str:
    """A default as an input shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _enum_options(values: list[Any]) -> tuple[Option, ...]:
    return tuple(Option(_shown(v), _shown(v)) for v in values)


def _enum_type(values: list[Any]) -> DataType:
    if all(isinstance(v, bool) for v in values):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "integer"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    return "" if all(isinstance(v, str) for v in values) else "json"


def _type_of(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the non-null one
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    return kind if isinstance(kind, str) else None


def field_for(name: str, schema: dict[str, Any], *, required: bool) -> FormField:
    """The form field of one property."""
    base: dict[str, Any] = {
        "name": f"params.{name}",
        "property": name,
        "label": label_of(name, schema),
        "required": required,
        "description": str(schema.get("description") or ""),
    }
    default = schema.get("default")
    enum = schema.get("enum")
    kind = _type_of(schema)
    if isinstance(enum, list) and enum:
        return FormField(
            **base,
            widget="select",
            data_type=_enum_type(enum),
            options=_enum_options(enum),
            default=None if default is None else _shown(default),
        )
    if kind == "boolean":
        return FormField(**base, widget="checkbox", data_type="boolean", checked=default is True)
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        maximum = schema.get("maximum", schema.get("exclusiveMaximum"))
        return FormField(
            **base,
            widget="number",
            data_type="integer" if kind == "integer" else "number",
            minimum=minimum if isinstance(minimum, int | float) else None,
            maximum=maximum if isinstance(maximum, int | float) else None,
            step="1" if kind == "integer" else "any",
            default=None if default is None else _shown(default),
        )
    if kind == "string":
        max_length = schema.get("maxLength")
        max_length = max_length if isinstance(max_length, int) else None
        secret = (
            any(schema.get(key) is True for key in SECRET_KEYS)
            or schema.get("format") == "password"
            or is_secret_name(name)
        )
        widget: Widget = "password" if secret else "text"
        if not secret and max_length is not None and max_length > LONG_STRING:
            widget = "textarea"
        pattern = schema.get("pattern")
        min_length = schema.get("minLength")
        return FormField(
            **base,
            widget=widget,
            data_type="string" if widget == "textarea" else "",
            pattern=browser_pattern(pattern) if isinstance(pattern, str) and widget != "textarea" else None,
            max_length=max_length,
            min_length=min_length if isinstance(min_length, int) else None,
            default=None if default is None or secret else _shown(default),
        )
    if kind == "array":
        found_items = schema.get("items")
        items: dict[str, Any] = found_items if isinstance(found_items, dict) else {}
        item_enum = items.get("enum")
        if isinstance(item_enum, list) and item_enum and all(isinstance(v, str) for v in item_enum):
            chosen = default if isinstance(default, list) else []
            return FormField(
                **base,
                widget="multiselect",
                options=_enum_options(item_enum),
                default="\n".join(str(v) for v in chosen) or None,
            )
        if _type_of(items) == "string":
            lines = default if isinstance(default, list) else None
            return FormField(
                **base,
                widget="lines",
                data_type="json",
                default=None if lines is None else "\n".join(str(v) for v in lines),
            )
    # objects, arrays of other things, untyped: typed as JSON, parsed by the browser, checked by the API
    return FormField(
        **base, widget="json", data_type="json", default=None if default is None else json.dumps(default)
    )


def form_fields(schema: dict[str, Any] | None, *, destructive: bool = False) -> list[FormField]:
    """The run form's fields for a playbook's params schema, in the schema's property order. For a
    destructive playbook whose schema has `confirm` next to `appName`, `confirm` must repeat the app
    name (the check /execute makes, and the runner's tools make again)."""
    schema = schema or {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return []
    required = set(schema.get("required") or [])
    found: list[FormField] = []
    for name, sub in properties.items():
        one = field_for(str(name), sub if isinstance(sub, dict) else {}, required=name in required)
        if destructive and name == CONFIRM_PARAM and CONFIRMED_PARAM in properties:
            one = FormField(
                **{
                    **one.__dict__,
                    "label": "Type the app name again to confirm",
                    "required": True,
                    "must_equal": f"params.{CONFIRMED_PARAM}",
                    "pattern": None,
                }
            )
        found.append(one)
    return found


def needs_acknowledgement(destructive: bool, fields: list[FormField]) -> bool:
    """A destructive playbook without a typed confirmation asks for a ticked box (not sent: the API
    takes none); one with a typed confirmation has it already."""
    return destructive and not any(f.must_equal for f in fields)
