"""How a catalog entry and an /execute answer look over MCP (shared by /mcp and `ikoma mcp`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import mcp_types as types

from ikoma.contracts import mcp as contract

APP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["appName"],
    "properties": {"appName": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}},
}


def entry(**overrides: Any) -> dict[str, Any]:
    base = {
        "key": "apps.health",
        "name": "App health",
        "description": "Health of every process of the app (HTTP health path).",
        "paramsSchema": APP_SCHEMA,
        "minRole": "observer",
        "destructive": False,
        "readOnly": True,
        "allowed": True,
    }
    return {**base, **overrides}


def test_tool_keeps_the_catalog_key_as_name_and_its_name_as_title() -> None:
    tool = contract.tool_from_entry(entry())
    assert tool.name == "apps.health"
    assert tool.title == "App health"
    assert tool.annotations is not None
    assert tool.annotations.title == "App health"
    assert tool.description == "Health of every process of the app (HTTP health path)."


def test_tool_schema_is_the_params_schema_plus_server_id_and_wait() -> None:
    tool = contract.tool_from_entry(entry())
    schema = tool.input_schema
    assert schema["type"] == "object"
    assert schema["required"] == ["appName"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"appName", "serverId", "wait"}
    assert schema["properties"]["appName"] == APP_SCHEMA["properties"]["appName"]
    assert schema["properties"]["serverId"]["type"] == "string"
    assert schema["properties"]["wait"]["type"] == "number"


def test_tool_schema_is_a_copy_that_leaves_the_catalog_entry_untouched() -> None:
    original = entry()
    contract.tool_from_entry(original)
    assert set(original["paramsSchema"]["properties"]) == {"appName"}


def test_tool_of_a_catalog_entry_without_params_still_has_an_object_schema() -> None:
    tool = contract.tool_from_entry(entry(key="platform.check", paramsSchema=None))
    assert tool.input_schema["type"] == "object"
    assert set(tool.input_schema["properties"]) == {"serverId", "wait"}


def test_read_only_and_destructive_flags_become_hints() -> None:
    read = contract.tool_from_entry(entry()).annotations
    assert read is not None
    assert (read.read_only_hint, read.destructive_hint, read.idempotent_hint) == (True, False, True)
    remove = contract.tool_from_entry(
        entry(key="apps.remove", minRole="operator", destructive=True, readOnly=False)
    ).annotations
    assert remove is not None
    assert (remove.read_only_hint, remove.destructive_hint, remove.idempotent_hint) == (False, True, None)


def test_hints_are_sent_with_their_mcp_names() -> None:
    dumped = contract.tool_from_entry(entry()).model_dump(by_alias=True, exclude_none=True)
    assert dumped["annotations"] == {
        "title": "App health",
        "readOnlyHint": True,
        "destructiveHint": False,
        "idempotentHint": True,
    }
    assert "inputSchema" in dumped


def test_a_tool_the_key_cannot_run_says_which_role_it_needs() -> None:
    tool = contract.tool_from_entry(entry(key="deploy.up", minRole="operator", allowed=False, readOnly=False))
    assert tool.description is not None
    assert "Needs role operator" in tool.description


def test_arguments_split_into_params_server_and_wait_as_the_execute_body() -> None:
    params, server_id, wait = contract.split_arguments({"appName": "myapp", "serverId": "web-1", "wait": 5})
    assert (params, server_id, wait) == ({"appName": "myapp"}, "web-1", 5)
    assert contract.split_arguments(None) == ({}, None, None)


def test_a_success_is_structured_and_the_same_json_as_text() -> None:
    body = {"healthy": True, "checks": {"docker": False, "postgres": True}}
    result = contract.tool_result(200, body)
    assert result.is_error is False
    assert result.structured_content == body
    [text] = result.content
    assert isinstance(text, types.TextContent)
    assert '"healthy": true' in text.text


def test_values_are_rendered_as_the_api_renders_them() -> None:
    result = contract.tool_result(200, {"at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)})
    assert result.structured_content == {"at": "2026-01-02T03:04:05Z"}


def test_still_running_after_wait_is_not_an_error_and_carries_the_order() -> None:
    body = {"orderId": "o-1", "status": "RUNNING", "location": "/v1/orders/o-1"}
    result = contract.tool_result(202, body)
    assert result.is_error is False
    assert result.structured_content == body


def test_a_refusal_is_a_tool_error_with_the_reason_and_the_role_needed() -> None:
    body = contract.error_body(
        "forbidden",
        "tool deploy.up needs role operator; this request acts as observer",
        {"tool": "deploy.up", "required": "operator", "role": "observer"},
    )
    result = contract.tool_result(403, body)
    assert result.is_error is True
    assert result.structured_content == {
        "reason": "forbidden",
        "message": "tool deploy.up needs role operator; this request acts as observer",
        "details": {"tool": "deploy.up", "required": "operator", "role": "observer"},
    }
    [text] = result.content
    assert isinstance(text, types.TextContent)
    assert text.text.startswith("forbidden: tool deploy.up needs role operator")


def test_the_role_needed_is_named_even_when_the_message_does_not() -> None:
    assert contract.refusal_text(
        {"reason": "forbidden", "message": "no", "details": {"required": "admin"}}
    ) == ("forbidden: no (needs role admin)")


def test_error_body_moves_validation_errors_to_the_top_level_as_the_api_does() -> None:
    errors = [{"path": "appName", "message": "bad", "type": "pattern"}]
    assert contract.error_body("validation_error", "request is invalid", {"errors": errors}) == {
        "reason": "validation_error",
        "message": "request is invalid",
        "errors": errors,
    }
