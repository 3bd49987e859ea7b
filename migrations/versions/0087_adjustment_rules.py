"""The rule ids a re-rate moved a charge's units between: `charge_adjustments.old_rules`, `new_rules`.

A re-rate to a version that names a volume rule otherwise (`in` -> `in-b`) moves the charge's units
to that rule's volume. The adjustments kept amounts by model and token type alone, so a close
could not tell which rule the units it moved count for (November's `in-b` trued up on its own
1,000,000 tokens, 0.00, where its 4,000,000 give -$18.50), and a re-rate that moved the units
without changing what they cost was not kept at all (the check below refused it; it corrected no
true-up: 0.00 where -$9.00 is due). Now each adjustment keeps the rules of the charge's usage lines
at the book's price, by token type, before and after ({token type: rule id}; NULL: not kept, the
adjustments before this revision), and an adjustment must change its amount, its lines or its
rules.

Revision ID: 0087
Revises: 0086
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0087"
down_revision = "0086"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE charge_adjustments
    ADD COLUMN old_rules jsonb CHECK (jsonb_typeof(old_rules) = 'object'),
    ADD COLUMN new_rules jsonb CHECK (jsonb_typeof(new_rules) = 'object');
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_check;
ALTER TABLE charge_adjustments ADD CONSTRAINT charge_adjustments_check
    CHECK (new_amount <> old_amount OR new_lines <> old_lines OR coalesce(new_rules <> old_rules, false));
"""

# Adjustments that moved a charge's units to another rule alone would violate the old check: a
# downgrade would lose them.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM charge_adjustments WHERE new_amount = old_amount AND new_lines = old_lines) THEN
        RAISE EXCEPTION 're-rates moved charges to other rules alone: a downgrade below 0087 would lose them'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_check;
ALTER TABLE charge_adjustments ADD CONSTRAINT charge_adjustments_check
    CHECK (new_amount <> old_amount OR new_lines <> old_lines);
ALTER TABLE charge_adjustments DROP COLUMN old_rules, DROP COLUMN new_rules;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
