"""placeholder: reserved for issue 13 (console: users, sessions, action log indexes) work in progress

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 21:20:00

Reserved so that work in progress on several parts keeps one linear chain; until it is filled it
changes nothing.
"""

from __future__ import annotations

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
