"""Versioned report contracts (seed 000's `report.v1` / `report.v2`): `report.version` is the truth."""

from ikoma.contracts.report_v1 import ReportV1
from ikoma.contracts.report_v2 import ReportV2
from ikoma.contracts.reports import REPORT_CONTRACT, error_paths, parse_report

__all__ = ["REPORT_CONTRACT", "ReportV1", "ReportV2", "error_paths", "parse_report"]
