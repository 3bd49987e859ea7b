"""A true-up's record numbered in the adjustments' order: `true_up_charges.adjustment_seq`.

`tokentill audit verify` ties a close's record of each charge to the rule the charge's lines
counted for at the close: as the last re-rate written before the close left them
(charge_adjustments.new_rules, 0087). "Before" was read from two clocks: the adjustment's
created_at against the record's, each the time of the server that wrote it. A re-rate applied
just before the close by a server whose clock read 3 ms ahead of the closing server's was dated
after the close, read as after it, and its charge counted under the rule it had left: a healthy
ledger named ("charge ... gave back 0 where its overcharge ... is 1000000000", and its twin).

Now each batch's true_up_charges rows take, once per statement, the next number of the
adjustments' own sequence (charge_adjustments.id, an identity: the order adjustments were
written). The lane's lock orders a customer's re-rates and closes (a batch begins after the one
before it committed), so an adjustment written before the close has an id below its record's
number and one written after an id above it, whatever any clock reads. Rows written before keep
no number (NULL: nothing is rewritten, the default is set after) and are read by their dates, as
before. Downgrade drops the column: verify reads the dates again.

Revision ID: 0090
Revises: 0089
Create Date: 2026-12-07
"""
from __future__ import annotations

from alembic import op

revision = "0090"
down_revision = "0089"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE true_up_charges ADD COLUMN adjustment_seq bigint;
DO $$ BEGIN
    EXECUTE format('ALTER TABLE true_up_charges ALTER COLUMN adjustment_seq SET DEFAULT nextval(%L::regclass)',
                   pg_get_serial_sequence('charge_adjustments', 'id'));
END $$;
""")


def downgrade() -> None:
    op.execute("ALTER TABLE true_up_charges DROP COLUMN adjustment_seq")
