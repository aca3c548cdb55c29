"""placeholder: hot-path indexes or columns (issue 11), if the performance work needs any

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:20:00

Reserved so that work in progress on several issues keeps one linear chain; until it is filled it
changes nothing.
"""

from __future__ import annotations

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
