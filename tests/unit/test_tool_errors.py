"""Which tool errors are the caller's (the request was wrong) and which the machine's."""

from __future__ import annotations

from typing import Any

from ikoma.domain.tool_errors import CALLER_ERRORS, MACHINE_ERRORS, caller_error, is_caller_error
from ikoma.runner.apps import errors as tool_codes


def failed(*codes: str | None) -> dict[str, Any]:
    return {"summary": "x", "errors": [{"message": "m", **({"code": c} if c else {})} for c in codes]}


def test_every_code_the_tools_raise_is_classified_once() -> None:
    raised = {v for k, v in vars(tool_codes).items() if k.isupper() and isinstance(v, str)}
    assert raised == CALLER_ERRORS | MACHINE_ERRORS
    assert not CALLER_ERRORS & MACHINE_ERRORS


def test_input_errors_are_the_callers() -> None:
    for code in (
        "backup_exists",
        "app_not_found",
        "invalid_app_name",
        "invalid_params",
        "confirmation_required",
    ):
        assert is_caller_error(code), code
    for code in ("database_unavailable", "port_in_use", "runner_error", "missing_program", None, 7):
        assert not is_caller_error(code), code


def test_an_order_is_a_caller_error_only_when_it_failed_and_every_error_is_the_callers() -> None:
    assert caller_error("FAILED", failed("backup_exists")) == "backup_exists"
    assert caller_error("FAILED", failed("app_not_found", "port_in_use")) is None
    assert caller_error("FAILED", failed(None)) is None  # a failure without a code is the machine's
    assert caller_error("FAILED", {"summary": "x", "errors": []}) is None
    assert caller_error("TIMEOUT", failed("app_not_found")) is None
    assert caller_error("SUCCEEDED", failed("app_not_found")) is None
    assert caller_error("FAILED", None) is None


def test_the_result_steps_error_counts_when_the_report_lists_none() -> None:
    report = {"errors": [], "steps": [{"name": "result", "data": {"error": {"code": "app_exists"}}}]}
    assert caller_error("FAILED", report) == "app_exists"
