"""Report contracts v1 and v2: strict validation with field paths, chosen by `report.version`."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ikoma.contracts import REPORT_CONTRACT, ReportV1, ReportV2, parse_report


def _v2(**overrides: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": "v2",
        "summary": "nginx reloaded on web-1",
        "durationMs": 1840,
        "steps": [
            {"name": "nginx -t", "status": "SUCCEEDED", "durationMs": 120, "exitCode": 0, "output": "ok"},
            {"name": "systemctl reload nginx", "status": "SUCCEEDED", "durationMs": 1700},
        ],
        "errors": [],
    }
    report.update(overrides)
    return report


def _locs(error: ValidationError) -> list[tuple[int | str, ...]]:
    return [tuple(e["loc"]) for e in error.errors()]


def _refused(raw: object) -> ValidationError:
    with pytest.raises(ValidationError) as refused:
        parse_report(raw)
    return refused.value


# --- v2 ------------------------------------------------------------------------------------------


def test_complete_v2_report_is_accepted_with_its_steps() -> None:
    report = parse_report(_v2())
    assert isinstance(report, ReportV2)
    assert report.duration_ms == 1840
    assert [s.name for s in report.steps] == ["nginx -t", "systemctl reload nginx"]
    assert report.steps[0].exit_code == 0


def test_v2_report_with_empty_steps_and_errors_is_accepted() -> None:
    report = parse_report(
        {"version": "v2", "summary": "nothing to do", "durationMs": 0, "steps": [], "errors": []}
    )
    assert isinstance(report, ReportV2)
    assert report.steps == []
    assert report.errors == []


def test_v2_report_carries_its_errors() -> None:
    report = parse_report(
        _v2(errors=[{"message": "disk full", "code": "ENOSPC", "step": "apt-get upgrade"}, {"message": "x"}])
    )
    assert isinstance(report, ReportV2)
    assert [(e.message, e.code, e.step) for e in report.errors] == [
        ("disk full", "ENOSPC", "apt-get upgrade"),
        ("x", None, None),
    ]


@pytest.mark.parametrize(
    ("field", "loc"),
    [("summary", "summary"), ("durationMs", "durationMs"), ("steps", "steps"), ("errors", "errors")],
)
def test_v2_report_missing_a_required_field_names_that_field(field: str, loc: str) -> None:
    raw = _v2()
    del raw[field]
    error = _refused(raw)
    assert ("v2", loc) in _locs(error)
    assert {e["type"] for e in error.errors()} == {"missing"}


def test_report_missing_its_version_is_refused_naming_version() -> None:
    raw = _v2()
    del raw["version"]
    error = _refused(raw)
    assert error.errors()[0]["type"] == "union_tag_not_found"
    assert "version" in str(error)


def test_v2_report_with_an_extra_top_level_field_is_refused() -> None:
    error = _refused(_v2(host="web-1"))
    assert _locs(error) == [("v2", "host")]
    assert error.errors()[0]["type"] == "extra_forbidden"


def test_v2_duration_given_as_a_string_is_refused_not_coerced() -> None:
    error = _refused(_v2(durationMs="12"))
    assert _locs(error) == [("v2", "durationMs")]
    assert error.errors()[0]["type"] == "int_type"


def test_v2_negative_duration_is_refused() -> None:
    error = _refused(_v2(durationMs=-1))
    assert _locs(error) == [("v2", "durationMs")]
    assert error.errors()[0]["type"] == "greater_than_equal"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("summary", 42),
        ("steps", {"name": "x"}),
        ("errors", "none"),
        ("durationMs", 12.5),
        ("durationMs", True),
    ],
)
def test_v2_field_of_the_wrong_type_is_refused(field: str, value: object) -> None:
    error = _refused(_v2(**{field: value}))
    assert ("v2", field) in _locs(error)


def test_step_missing_its_name_is_refused_with_the_path_to_it() -> None:
    error = _refused(_v2(steps=[{"status": "SUCCEEDED"}]))
    assert _locs(error) == [("v2", "steps", 0, "name")]
    assert error.errors()[0]["type"] == "missing"


def test_second_step_with_an_unknown_status_is_refused_with_its_index() -> None:
    error = _refused(_v2(steps=[{"name": "ok", "status": "SUCCEEDED"}, {"name": "bad", "status": "DONE"}]))
    assert _locs(error) == [("v2", "steps", 1, "status")]


def test_step_with_an_empty_name_is_refused() -> None:
    assert _locs(_refused(_v2(steps=[{"name": "", "status": "SKIPPED"}]))) == [("v2", "steps", 0, "name")]


def test_step_with_a_negative_duration_is_refused() -> None:
    error = _refused(_v2(steps=[{"name": "reload", "status": "FAILED", "durationMs": -5}]))
    assert _locs(error) == [("v2", "steps", 0, "durationMs")]


def test_error_entry_missing_its_message_is_refused_with_the_path_to_it() -> None:
    assert _locs(_refused(_v2(errors=[{"code": "E1"}]))) == [("v2", "errors", 0, "message")]


def test_unknown_report_version_is_refused() -> None:
    error = _refused(_v2(version="v3"))
    assert error.errors()[0]["type"] == "union_tag_invalid"
    assert "v3" in str(error)


def test_report_that_is_not_an_object_is_refused() -> None:
    _refused(["v2", "summary"])


# --- v1 ------------------------------------------------------------------------------------------


def test_minimal_v1_report_is_accepted() -> None:
    report = parse_report({"version": "v1", "summary": "pong"})
    assert isinstance(report, ReportV1)
    assert report.summary == "pong"
    assert report.duration_ms is None
    assert report.data is None


def test_v1_report_keeps_its_free_form_data() -> None:
    report = parse_report({"version": "v1", "summary": "facts", "durationMs": 35, "data": {"kernel": "6.1"}})
    assert isinstance(report, ReportV1)
    assert report.duration_ms == 35
    assert report.data == {"kernel": "6.1"}


def test_v1_report_refuses_v2_fields() -> None:
    error = _refused({"version": "v1", "summary": "pong", "steps": []})
    assert _locs(error) == [("v1", "steps")]


def test_v1_report_without_summary_is_refused_naming_summary() -> None:
    assert _locs(_refused({"version": "v1"})) == [("v1", "summary")]


# --- version ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "model"),
    [({"version": "v1", "summary": "pong"}, ReportV1), (_v2(), ReportV2)],
    ids=["v1", "v2"],
)
def test_report_is_parsed_in_the_version_it_declares(raw: dict[str, Any], model: type) -> None:
    report = parse_report(raw)
    assert type(report) is model
    assert report.version == raw["version"]


def test_v1_shaped_report_declaring_v2_is_validated_as_v2() -> None:
    error = _refused({"version": "v2", "summary": "pong"})
    assert {loc for loc in _locs(error)} == {("v2", "durationMs"), ("v2", "steps"), ("v2", "errors")}


def test_advertised_report_contract_is_a_valid_v2_report() -> None:
    example = {k: v for k, v in REPORT_CONTRACT.items() if k != "compatibleVersions"}
    assert isinstance(parse_report(example), ReportV2)
    assert REPORT_CONTRACT["compatibleVersions"] == ["v1", "v2"]
