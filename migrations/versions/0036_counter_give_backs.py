"""A period's counters may move down: a usage counter delta (`period_deltas.counts`) may be
negative. A close's volume true-up gives back to a free allowance what the customer never paid
(a positive `free_allowance` line), and a re-rate may take less of an allowance than its charge
did; the period's allowance counter moves down by as much, in the same statement as the entry,
so late usage of the period gets what the allowance has left. The folded counter
(`usage_counters.quantity`) is still never negative: the close gives back at most what the
counters hold.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None

# NOT VALID: PostgreSQL cannot check a domain's rows in an array column; the rows it holds
# satisfy the new check, which is looser, and every new value is checked.
UPGRADE = r"""
ALTER DOMAIN wallets_count DROP CONSTRAINT wallets_count_check;
ALTER DOMAIN wallets_count ADD CONSTRAINT wallets_count_check
    CHECK (VALUE = trunc(VALUE) AND abs(VALUE) < 1e30) NOT VALID;
"""

# Refused while an unfolded delta moves a counter down.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM period_deltas WHERE EXISTS (SELECT 1 FROM unnest(counts) n WHERE n < 0)) THEN
        RAISE EXCEPTION 'unfolded deltas move usage counters down: fold them before a downgrade below 0036'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
ALTER DOMAIN wallets_count DROP CONSTRAINT wallets_count_check;
ALTER DOMAIN wallets_count ADD CONSTRAINT wallets_count_check
    CHECK (VALUE = trunc(VALUE) AND VALUE >= 0 AND VALUE < 1e30) NOT VALID;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
