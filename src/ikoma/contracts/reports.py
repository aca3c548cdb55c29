"""Choosing and applying a report contract by `report.version`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

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
    """Validate a report strictly; raises pydantic.ValidationError (see `error_paths`)."""
    return _REPORT.validate_python(raw)


def error_paths(exc: ValidationError) -> list[dict[str, str]]:
    """Each violation as {path, message, type}, paths inside the report (`steps.0.name`).

    pydantic puts the union tag first in the location (`v2.steps`); the report's own field path is
    what a runner author needs, and its version is already in the report.
    """
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in ("v1", "v2"):
            loc = loc[1:]
        out.append({"path": ".".join(loc), "message": err["msg"], "type": err["type"]})
    return out
