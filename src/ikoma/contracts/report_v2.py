"""Report contract v2 (stable): version, summary, durationMs, steps[] and errors[], all required."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StepStatus = Literal["SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED", "TIMEOUT"]


class _Strict(BaseModel):
    # strict: a "12" where a number is due is a runner bug worth a 422, not a silent coercion.
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Step(_Strict):
    name: str = Field(min_length=1)
    status: StepStatus
    duration_ms: int | None = Field(default=None, ge=0, alias="durationMs")
    output: str | None = None
    exit_code: int | None = Field(default=None, alias="exitCode")
    data: dict[str, Any] | None = None


class ReportError(_Strict):
    message: str
    code: str | None = None
    step: str | None = None


class ReportV2(_Strict):
    version: Literal["v2"]
    summary: str
    duration_ms: int = Field(ge=0, alias="durationMs")
    steps: list[Step]
    errors: list[ReportError]
