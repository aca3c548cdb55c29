"""Roles, ordered: observer < builder < operator < admin. A caller acts with one role at a time."""

from __future__ import annotations

from enum import IntEnum

from ikoma.domain.errors import BadRequest, Forbidden


class Role(IntEnum):
    OBSERVER = 1
    BUILDER = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise BadRequest(f"unknown role {value!r} (one of: {names})", reason="invalid_role") from None


ROLE_NAMES = tuple(r.label for r in Role)


def lowered(granted: Role, requested: str | None) -> Role:
    """The role to act with: `X-Role` may lower the granted role, never raise it (scenario 18)."""
    if requested is None or requested.strip() == "":
        return granted
    wanted = Role.parse(requested)
    if wanted > granted:
        raise Forbidden(
            f"X-Role {wanted.label} is above this credential's role {granted.label}",
            reason="role_escalation",
            role=granted.label,
            requested=wanted.label,
        )
    return wanted
