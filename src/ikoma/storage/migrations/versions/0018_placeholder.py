"""placeholder: reserved for issue 16 (providers, catalog, instances) work in progress

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 21:50:00

Reserved so that work in progress on several parts keeps one linear chain; until it is filled it
changes nothing.
"""

from __future__ import annotations

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
