"""A re-rate moves the calls a budget made mid-window counted in its `before:<budget>` row.

A money budget made part-way through its window counts the calls closed before it in one row,
`before:<budget id>`, with the re-rates applied to them so far. A re-rate applied after it moved only
the calls with a row of their own, so a call charged $10.01, closed before a month's $15.00 hard
budget was made and then re-rated to $8.01, stayed 10.01 there (a $6.99 hold refused). The budget
now keeps the last charge adjustment of its customer it counted (`seeded_through`): a later
adjustment of a call its window counted with no row of its own is moved, one counted already is
not. NULL (a budget made before this, or one counting nothing from before): none is moved.

Revision ID: 0058
Revises: 0057
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0058"
down_revision = "0057"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE budgets ADD COLUMN seeded_through bigint")


def downgrade() -> None:
    op.execute("ALTER TABLE budgets DROP COLUMN seeded_through")
