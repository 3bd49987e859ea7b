"""A re-rate moves what a money budget's current window counted: `rerate:<adjustment id>` rows.

A call charged $10.01 and re-rated to $8.01 stayed $10.01 in its budget's window, so a hard cap
refused holds the customer had room for. The re-rate now writes, beside the reservation's (or
usage event's) own row, one row per adjustment and budget whose `used` is the adjustment's
difference: less than 0 for a re-rate downward, which only these rows may be (with nothing held).
The window stays 0 or more: what a row takes back was counted there first.

Revision ID: 0055
Revises: 0054
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0055"
down_revision = "0054"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE reservation_budgets DROP CONSTRAINT reservation_budgets_used_check;
ALTER TABLE reservation_budgets ADD CONSTRAINT reservation_budgets_used_check
    CHECK (used >= 0 OR (reservation_id LIKE 'rerate:%' AND held = 0));
""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE reservation_budgets DROP CONSTRAINT reservation_budgets_used_check;
ALTER TABLE reservation_budgets ADD CONSTRAINT reservation_budgets_used_check CHECK (used >= 0);
""")
