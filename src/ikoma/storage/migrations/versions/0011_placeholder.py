"""placeholder: agentless SSH servers and their encrypted credentials (issue 14): filled by the SSH work

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:20:00

Reserved so that work in progress on several issues keeps one linear chain; until it is filled it
changes nothing.
"""

from __future__ import annotations

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
