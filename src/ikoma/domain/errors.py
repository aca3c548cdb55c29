"""Errors users can act on: a stable machine-readable reason, a sentence, and what it concerns."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every refusal the API maps to an HTTP status; `reason` is the stable contract."""

    status_code = 400
    reason = "bad_request"

    def __init__(self, message: str, *, reason: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.details = {k: v for k, v in details.items() if v is not None}


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401
    reason = "unauthorized"


class Forbidden(DomainError):
    """403: who is calling is known, and their role does not allow this."""

    status_code = 403
    reason = "forbidden"


class NotFound(DomainError):
    status_code = 404
    reason = "not_found"


class Conflict(DomainError):
    """409: the request is well-formed but the current state refuses it."""

    status_code = 409
    reason = "conflict"


class Invalid(DomainError):
    """422: the request refers to something that does not exist or breaks a rule of the data."""

    status_code = 422
    reason = "validation_error"


class Unavailable(DomainError):
    status_code = 503
    reason = "database_unavailable"
