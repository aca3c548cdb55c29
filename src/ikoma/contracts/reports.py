"""Choosing and applying a report contract by `report.version`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from ikoma.contracts.report_v1 import ReportV1
from ikoma.contracts.report_v2 import ReportV2

Report = Annotated[ReportV1 | ReportV2, Field(discriminator="version")]
_REPORT = TypeAdapter(Report)

# What POST /v1/orders tells the caller a runner will send back (seed 000's example, verbatim shape).
REPORT_CONTRACT: dict[str, Any] = {
    "version": "v2",
    "compatibleVersions": ["v1", "v2"],
    "summary": "string",
    "durationMs": 123,
    "steps": [],
    "errors": [],
}


def parse_report(raw: object) -> ReportV1 | ReportV2:
    """Validate a report strictly; raises pydantic.ValidationError with the field paths."""
    return _REPORT.validate_python(raw)
