"""Each charge keeps the billing period it is billed in (`period`), as its entry does in its
metadata: `audit verify` compares each customer's period rollups with the periods its entries
and charges are billed in, exactly. A free call (no entry) left no trace of its period but its
rollup lines, so verify had to accept lines netting 0 in any period of a customer with one.

The backfill computes the period as the code assigns it (wallets.model.Customer.billed_in): a
charge with an entry takes its entry's; one without an entry is billed in its usage time's own
period, or the first period open when it was recorded if that one was closed by then (open from
the end of the customer's last invoice finalized before the charge, else its first invoice's
start, else its current open period). A charge whose entry is billed in no period (posted before
migration 0017) is billed in none: NULL.

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0040"
down_revision = "0039"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE charges ADD COLUMN period text CONSTRAINT charges_period_label CHECK (period ~ '^[0-9]{4}-[0-9]{2}$');

ALTER TABLE charges DISABLE TRIGGER charges_immutable;
UPDATE charges c SET period = CASE
    WHEN c.entry_id IS NOT NULL THEN (SELECT j.metadata ->> 'period' FROM journal_entries j
                                       WHERE j.lane = c.lane AND j.id = c.entry_id)
    ELSE (SELECT wallets_period_label(greatest(c.occurred_at, coalesce(
                     (SELECT max(i.period_end) FROM invoices i
                       WHERE i.customer_id = c.customer_id AND i.finalized_at <= c.created_at),
                     (SELECT min(i.period_start) FROM invoices i WHERE i.customer_id = c.customer_id),
                     cu.open_period_start)), cu.time_zone, cu.billing_anchor_day)
            FROM customers cu WHERE cu.id = c.customer_id) END;
ALTER TABLE charges ENABLE TRIGGER charges_immutable;
"""

DOWNGRADE = r"""
ALTER TABLE charges DROP COLUMN period;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
