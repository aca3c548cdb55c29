"""Refusals and operational failures of the operations tools, each with a stable code.

A tool that raises :class:`AppError` ends FAILED with ``errors: [{code, message}]`` and its `result`
step carries ``{"error": {code, message}}``: the API returns that body, so the codes are a contract.
"""

from __future__ import annotations

from typing import Any

INVALID_PARAMS = "invalid_params"
INVALID_APP_NAME = "invalid_app_name"
INVALID_BACKUP_NAME = "invalid_backup_name"
APP_NOT_FOUND = "app_not_found"
APP_EXISTS = "app_exists"
APP_INVALID = "app_invalid"
MANIFEST_INVALID = "manifest_invalid"
CONFIRMATION_REQUIRED = "confirmation_required"
DATABASE_UNAVAILABLE = "database_unavailable"
DATABASE_NOT_FOUND = "database_not_found"
DATABASE_CONFLICT = "database_conflict"
MIGRATION_CHANGED = "migration_changed"
MIGRATION_FAILED = "migration_failed"
BACKUP_EXISTS = "backup_exists"
BACKUP_NOT_FOUND = "backup_not_found"
BACKUP_FAILED = "backup_failed"
RESTORE_FAILED = "restore_failed"
CHECKSUM_MISMATCH = "checksum_mismatch"
RELEASE_NOT_FOUND = "release_not_found"
RUNTIME_UNAVAILABLE = "runtime_unavailable"
START_FAILED = "start_failed"
PORT_IN_USE = "port_in_use"
STOP_FAILED = "stop_failed"
TOOL_MISSING = "tool_missing"
FILESYSTEM_ERROR = "filesystem_error"
RUNNER_ERROR = "runner_error"


class AppError(Exception):
    """A refusal or failure a caller can act on: `code` is stable, `message` is a human sentence."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}
