"""Versioned report contracts (seed 000's `report.v1` / `report.v2`): `report.version` is the truth."""

from ikoma.contracts.reports import REPORT_CONTRACT, ReportV1, ReportV2, parse_report

__all__ = ["REPORT_CONTRACT", "ReportV1", "ReportV2", "parse_report"]
