"""Times taken from query parameters, brought to UTC before they are compared with stored times."""

from __future__ import annotations

from datetime import UTC, datetime

from ikoma.domain.errors import Invalid


def utc(value: datetime | None, field: str) -> datetime | None:
    """`value` in UTC (a naive time is taken as UTC: SQLite keeps stored times without an offset).

    A time past the last UTC time Python holds (`9999-12-31T23:00-02:00`) is refused with 422, not
    answered 500.
    """
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        message = f"`{field}` is out of range once in UTC"
        raise Invalid(
            message, reason="validation_error", errors=[{"path": field, "message": message, "type": "range"}]
        ) from None
