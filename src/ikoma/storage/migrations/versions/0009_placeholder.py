"""placeholder: event log (issue 12): filled by the event-stream work

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:20:00

Reserved so that work in progress on several issues keeps one linear chain; until it is filled it
changes nothing.
"""

from __future__ import annotations

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
