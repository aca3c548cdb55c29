"""The run page's form: one labelled field per schema property, of the right widget and JSON type."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ikoma.console.forms import FormField, browser_pattern, form_fields, label_of, needs_acknowledgement

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["appName", "lines"],
    "properties": {
        "appName": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$", "description": "the app"},
        "lines": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 100},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "dryRun": {"type": "boolean", "default": True},
        "runtime": {"type": "string", "enum": ["auto", "process", "compose"], "default": "auto"},
        "level": {"enum": [1, 2, 3]},
        "packages": {"type": "array", "items": {"type": "string"}, "default": ["curl", "jq"]},
        "features": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
        "message": {"type": "string", "maxLength": 1000},
        "dbPassword": {"type": "string", "default": "never-shown"},
        "token": {"type": "string", "writeOnly": True},
        "labels": {"type": "object"},
        "note": {"type": ["string", "null"], "title": "A note"},
    },
}


def by_property(fields: list[FormField]) -> dict[str, FormField]:
    return {f.property: f for f in fields}


def test_every_property_gets_one_field_in_the_schema_order_named_under_params() -> None:
    fields = form_fields(SCHEMA)
    assert [f.property for f in fields] == list(SCHEMA["properties"])
    assert all(f.name == f"params.{f.property}" for f in fields)
    assert [f.property for f in fields if f.required] == ["appName", "lines"]


def test_each_json_type_gets_its_widget_and_the_type_the_browser_sends() -> None:
    f = by_property(form_fields(SCHEMA))
    assert (f["appName"].widget, f["appName"].data_type, f["appName"].pattern) == (
        "text",
        "",
        "^[a-z][a-z0-9\\-]{0,62}$",
    )
    assert f["appName"].description == "the app"
    lines = f["lines"]
    assert (lines.widget, lines.data_type, lines.step, lines.minimum, lines.maximum, lines.default) == (
        "number",
        "integer",
        "1",
        1,
        5000,
        "100",
    )
    assert (f["ratio"].data_type, f["ratio"].step, f["ratio"].minimum) == ("number", "any", 0)
    assert (f["dryRun"].widget, f["dryRun"].data_type, f["dryRun"].checked) == ("checkbox", "boolean", True)
    runtime = f["runtime"]
    assert (runtime.widget, [o.value for o in runtime.options], runtime.default) == (
        "select",
        ["auto", "process", "compose"],
        "auto",
    )
    assert (f["level"].widget, f["level"].data_type) == ("select", "integer")
    assert (f["packages"].widget, f["packages"].data_type, f["packages"].default) == (
        "lines",
        "json",
        "curl\njq",
    )
    assert (f["features"].widget, [o.value for o in f["features"].options]) == ("multiselect", ["a", "b"])
    assert (f["message"].widget, f["message"].data_type, f["message"].max_length) == (
        "textarea",
        "string",
        1000,
    )
    assert (f["labels"].widget, f["labels"].data_type) == ("json", "json")
    assert (f["note"].widget, f["note"].label) == ("text", "A note")


def test_secret_params_are_password_inputs_without_their_default() -> None:
    f = by_property(form_fields(SCHEMA))
    assert (f["dbPassword"].widget, f["dbPassword"].default) == ("password", None)
    assert f["token"].widget == "password"


def test_labels_are_words_made_from_the_property_name() -> None:
    assert label_of("dryRun", {}) == "Dry run"
    assert label_of("app_name", {}) == "App name"
    assert label_of("serverID", {}) == "Server ID"
    assert label_of("x", {"title": "  Given title "}) == "Given title"


def test_a_destructive_app_tool_must_repeat_the_app_name_in_confirm() -> None:
    schema = {
        "type": "object",
        "required": ["appName", "confirm"],
        "properties": {
            "appName": {"type": "string"},
            "confirm": {"type": "string", "description": "must equal appName"},
        },
    }
    fields = form_fields(schema, destructive=True)
    confirm = by_property(fields)["confirm"]
    assert (confirm.required, confirm.must_equal) == (True, "params.appName")
    assert confirm.label == "Type the app name again to confirm"
    assert not needs_acknowledgement(True, fields)
    # not destructive: `confirm` is a plain param
    assert by_property(form_fields(schema))["confirm"].must_equal is None


def test_a_destructive_playbook_without_a_typed_confirmation_asks_for_a_ticked_box() -> None:
    fields = form_fields({"type": "object", "properties": {"all": {"type": "boolean"}}}, destructive=True)
    assert needs_acknowledgement(True, fields)
    assert not needs_acknowledgement(False, fields)


def test_a_schema_without_properties_has_no_fields() -> None:
    assert form_fields(None) == []
    assert form_fields({"type": "object"}) == []
    assert form_fields({"type": "object", "properties": {}}) == []


@pytest.mark.parametrize(
    ("schema_pattern", "html_pattern"),
    [
        ("^[a-z][a-z0-9-]{0,62}$", "^[a-z][a-z0-9\\-]{0,62}$"),  # a trailing `-`: the v flag refuses it bare
        ("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", "^[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}$"),
        ("^[-a-z]+$", "^[\\-a-z]+$"),
        ("^[^-x]$", "^[^\\-x]$"),
        ("^(a|b)[{}|]$", "^(a|b)[\\{\\}\\|]$"),
        ("[]a]", "[\\]a]"),
        ("^\\d+\\[x$", "^\\d+\\[x$"),
        ("[a[b]]", None),  # nested classes mean something else under the v flag: left to the API
        ("[a&&b]", None),
        ("[a-", None),
    ],
)
def test_schema_patterns_become_ones_browsers_compile_with_the_same_meaning(
    schema_pattern: str, html_pattern: str | None
) -> None:
    """Browsers compile `pattern` with the `v` flag (checked in Chromium for the ones kept); the escaped
    form matches exactly what the schema's pattern matches."""
    assert browser_pattern(schema_pattern) == html_pattern
    if html_pattern is not None:
        for sample in ("web-1", "-", "a", "b", "x", "]", "{", "|", "12[x", "Z9._-", "ab"):
            expected = re.fullmatch(schema_pattern, sample) is not None
            assert (re.fullmatch(html_pattern, sample) is not None) == expected, sample
