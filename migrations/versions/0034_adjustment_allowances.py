"""What a re-rate moved of each free allowance: `charge_adjustments.allowance_moves`, the atomic
units the corrected charge takes from each of its customer's free allowances (by id) less what it
took before (`{}`: none). The period's allowance counters move by the same amounts in the same
statement, so an allowance a re-rate spent on earlier usage is not given again, and `tokentill
audit verify` (usage_counters) counts the moves beside the charges' own lines.

Revision ID: 0034
Revises: 0033
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE charge_adjustments ADD COLUMN allowance_moves jsonb NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(allowance_moves) = 'object');
"""

# The counters moved with them: without the column, verify could not tie them to the charges.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM charge_adjustments WHERE allowance_moves <> '{}'::jsonb) THEN
        RAISE EXCEPTION 're-rates moved free allowances: a downgrade below 0034 would lose what they moved'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
ALTER TABLE charge_adjustments DROP COLUMN allowance_moves;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
