"""One row per true-up, rule and charge in `true_up_charges`.

What a true-up gave back of each charge (migration 0068) is one row per charge of each rule the
close or the re-rate priced per charge (a rule kept with nothing given back: one row without a
charge), and the next re-rate sums the rows of a charge: a second row of the same true-up, rule
and charge, which the table took, counted twice what was given back of it. Now a unique key refuses
it: (lane, customer, period, re-rate or the close, rule, charge), NULLS NOT DISTINCT (the close's
`rerate_id` and a kept rule's `charge_id` are NULL).

The code never writes two: a close (or a re-rate, per customer and period) writes its record in
one batch, one row per rule and charge (money_back.given_rows), and a close or a re-rate that ran
again moves nothing. So a database violates the key only where a row was inserted by hand; then
the upgrade stops naming the true-up and charge, and nothing is changed. Which row is the one
inserted the database cannot tell (`audit verify` names the true-up whose rows give back more than
it did); the table's trigger refuses deletes, so the database's owner removes it past the trigger.

Revision ID: 0071
Revises: 0070
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0071"
down_revision = "0070"
branch_labels = None
depends_on = None

UPGRADE = r"""
DO $$
DECLARE
    dup record;
BEGIN
    SELECT customer_id, period, rerate_id, rule_id, charge_id, count(*) AS n INTO dup FROM true_up_charges
     GROUP BY lane, customer_id, period, rerate_id, rule_id, charge_id HAVING count(*) > 1
     ORDER BY customer_id, period, rerate_id, rule_id, charge_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'true_up_charges holds % rows of one true-up and charge (customer %, period %, %, rule %, '
                        'charge %): the code writes one, so the others were inserted by hand; remove them to upgrade',
                        dup.n, dup.customer_id, dup.period,
                        coalesce('re-rate ' || dup.rerate_id, 'the close'), dup.rule_id,
                        coalesce(dup.charge_id::text, 'none')
            USING ERRCODE = 'unique_violation';
    END IF;
END $$;
CREATE UNIQUE INDEX true_up_charges_once
    ON true_up_charges (lane, customer_id, period, rerate_id, rule_id, charge_id) NULLS NOT DISTINCT;
"""

DOWNGRADE = "DROP INDEX true_up_charges_once;"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
