"""Whose fault a tool's error is: the caller's request, or the machine. The one table that says so.

A tool fails with a stable code (runner/apps/errors.py). Some codes say the request was wrong: a name
mistyped, a backup name already taken, a destructive call without its confirmation. Retyping the request
fixes those, and the machine is as healthy as before: they are answered to the caller (422 with the code,
the order's report keeps them) but are neither important messages nor a failure in the machine's state.
Every other code, and a failure without a code, is the machine's (a program missing, a database down, a
port taken, a timeout): those turn the state red, as they should.
"""

from __future__ import annotations

from typing import Any

FAILED = "FAILED"

# fixed by changing the request; each code is what the runner's tools raise (a unit test holds every code
# of runner/apps/errors.py to be either here or in MACHINE_ERRORS, so a new code is a decision)
CALLER_ERRORS = frozenset(
    {
        "invalid_params",  # a param the schema allowed but the tool refused (an unknown process name, …)
        "invalid_app_name",
        "invalid_backup_name",
        "confirmation_required",
        "app_not_found",  # a mistyped app
        "app_exists",  # apps.init of a name taken
        "backup_exists",  # db.backup to a name taken
        "backup_not_found",
        "release_not_found",  # a rollback with nothing to go back to, or an unknown release id
        "database_not_found",  # a db tool on an app without a database ("run db.create first")
        "migration_changed",  # an applied migration sent again with other content
    }
)
# the machine's (or the app's on it), named so that the split is a visible choice, not a default
MACHINE_ERRORS = frozenset(
    {
        "app_invalid",
        "manifest_invalid",
        "database_unavailable",
        "database_conflict",
        "migration_failed",
        "backup_failed",
        "restore_failed",
        "checksum_mismatch",
        "runtime_unavailable",
        "start_failed",
        "port_in_use",
        "stop_failed",
        "tool_missing",
        "filesystem_error",
        "runner_error",
    }
)


def is_caller_error(code: object) -> bool:
    """True when a tool error with this code is the caller's request, not the machine's health."""
    return isinstance(code, str) and code in CALLER_ERRORS


def error_codes(report: Any) -> list[str | None]:
    """The code of each error a report carries (None for an error without one); the `result` step's
    `{error: {code}}` when the report lists no errors."""
    if not isinstance(report, dict):
        return []
    errors = [e for e in report.get("errors") or [] if isinstance(e, dict)]
    if errors:
        return [e["code"] if isinstance(e.get("code"), str) else None for e in errors]
    for step in reversed(report.get("steps") or []):
        data = step.get("data") if isinstance(step, dict) else None
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return [error["code"] if isinstance(error.get("code"), str) else None]
    return []


def caller_error(status: str, report: Any) -> str | None:
    """The code of a FAILED order that failed only because of its request, else None.

    Every error the report names must be a caller error: one machine error among them, a failure
    without a code, a timeout or a lost runner is the machine's.
    """
    if status != FAILED:
        return None
    codes = error_codes(report)
    if not codes or not all(is_caller_error(code) for code in codes):
        return None
    return codes[0]
