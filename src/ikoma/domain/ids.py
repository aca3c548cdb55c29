"""Ids: every object is named by a UUID (any form `uuid.UUID` reads; answers use the dashed one)."""

from __future__ import annotations

import uuid


def is_uuid(value: str) -> bool:
    """True when `value` is a UUID: the cheap test before a lookup by id (else it may be a name)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
