"""A re-rate may change who pays a charge without changing what it costs: a discount backdated over
calls a free allowance paid whole leaves each charge at 0.00, but the discount now pays part of it
and the allowance less (`allowance_moves`). `charge_adjustments` refused any adjustment whose amount
did not change (CHECK new_amount <> old_amount), so such a re-rate failed whole (a 500); now an
adjustment must change its amount or its lines.

Revision ID: 0037
Revises: 0036
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0037"
down_revision = "0036"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_check;
ALTER TABLE charge_adjustments ADD CONSTRAINT charge_adjustments_check
    CHECK (new_amount <> old_amount OR new_lines <> old_lines);
"""

# Adjustments that kept their amount would violate the old check: a downgrade would lose them.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM charge_adjustments WHERE new_amount = old_amount) THEN
        RAISE EXCEPTION 're-rates changed who pays charges, not their amounts: a downgrade below 0037 would lose them'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_check;
ALTER TABLE charge_adjustments ADD CONSTRAINT charge_adjustments_check CHECK (new_amount <> old_amount);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
