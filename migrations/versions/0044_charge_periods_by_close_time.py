"""The billing period of a charge without an entry (a call a free allowance, a 100 % discount or a
price of 0 paid whole), as 0040 backfilled it, is recomputed from when each of its customer's
periods was really closed.

0040 took a period as closed when the charge was recorded if its invoice's `finalized_at` was no
later than the charge's `created_at`. But `finalized_at` is the close's clock (`until`), not when
the close ran: an early close (`--early`, a clock ahead), a close given an `until` in the past, or
a scheduled close that reads its clock once and then closes customer after customer, each put
free calls recorded around it in another period than the one the code billed them in (and rolled
up their lines in). `audit verify` then failed (`period_rollups`) on a database that verified
before the upgrade, and the invoice of the period the charge names no longer matched it.

A close writes its `invoice.finalized` event to the outbox in its own transaction, which stamps
the event with the time that transaction started, as the charge's own does: a period counts as
closed for a charge when that event is no later than the charge (its invoice's `finalized_at`
where the event is gone). Charges with an entry keep their entry's period, as before; a charge
whose period this gives already is not touched.

Downgrade: nothing to undo (0040's downgrade drops the column).

Revision ID: 0044
Revises: 0043
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0044"
down_revision = "0043"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE charges DISABLE TRIGGER charges_immutable;
WITH billed AS (
    SELECT c.lane, c.id, wallets_period_label(greatest(c.occurred_at, coalesce(
               -- the end of the last period whose close ran before the charge was recorded
               (SELECT max(i.period_end) FROM invoices i
                  LEFT JOIN outbox o ON o.lane = i.lane
                                    AND o.dedup_key = 'invoice.finalized:' || i.customer_id || ':' || i.period
                 WHERE i.customer_id = c.customer_id AND coalesce(o.created_at, i.finalized_at) <= c.created_at),
               (SELECT min(i.period_start) FROM invoices i WHERE i.customer_id = c.customer_id),
               cu.open_period_start)), cu.time_zone, cu.billing_anchor_day) AS period
      FROM charges c JOIN customers cu ON cu.id = c.customer_id
     WHERE c.entry_id IS NULL
)
UPDATE charges c SET period = b.period
  FROM billed b
 WHERE c.lane = b.lane AND c.id = b.id AND c.period IS DISTINCT FROM b.period;
ALTER TABLE charges ENABLE TRIGGER charges_immutable;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    pass
