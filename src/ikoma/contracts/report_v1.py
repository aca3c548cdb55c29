"""Report contract v1 (legacy): a summary and optional free-form data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ReportV1(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    version: Literal["v1"]
    summary: str
    duration_ms: int | None = Field(default=None, ge=0, alias="durationMs")
    data: dict[str, Any] | None = None
