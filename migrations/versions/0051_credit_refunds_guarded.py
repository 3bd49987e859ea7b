"""Cash refunds of overpaid credit (`credit_refund` entries) are guarded by the database too.

A refund pays back in cash credit a correction gave back (a re-rate's, a volume true-up's, a
close's rounding) beyond what the customer owed. Checked at commit for each such entry: what it
debits is only lots of its customer that a correction opened (never a paid top-up's, whose refund
is a `grant_reversal`, nor a grant's), and the customer's entries have paid out no more cash than
they brought in (top-ups and invoice payments, less refunds). The wallet rule refuses more before
posting (wallets.core.refunds); this is the last line.

A partial index on the entries that move a customer's cash keeps both the rule's read and this
check to those entries (a customer's usage entries are not read).

Revision ID: 0051
Revises: 0050
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0051"
down_revision = "0050"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX journal_entries_cash_kinds ON journal_entries (lane, customer_id)
    WHERE kind IN ('topup', 'invoice_payment', 'grant_reversal', 'credit_refund');

CREATE FUNCTION wallets_credit_refund_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
    net numeric;
BEGIN
    SELECT a.code INTO bad
      FROM postings p JOIN accounts a ON a.id = p.account_id
      LEFT JOIN lots l ON l.lane = p.lane AND l.account_id = p.account_id AND l.customer_id = NEW.customer_id
      LEFT JOIN journal_entries o ON o.lane = l.lane AND o.id = l.entry_id
     WHERE p.lane = NEW.lane AND p.entry_id = NEW.id AND p.amount > 0
       AND o.kind IS DISTINCT FROM 'rerate_adjustment' AND o.kind IS DISTINCT FROM 'volume_true_up'
       AND o.kind IS DISTINCT FROM 'invoice_rounding'
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'credit refund %: % is not credit a correction gave back to customer %',
            NEW.id, bad, NEW.customer_id USING ERRCODE = 'check_violation';
    END IF;
    SELECT sum(p.amount) INTO net
      FROM journal_entries j
      JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
      JOIN accounts a ON a.id = p.account_id
     WHERE j.lane = NEW.lane AND j.customer_id = NEW.customer_id
       AND j.kind IN ('topup', 'invoice_payment', 'grant_reversal', 'credit_refund')
       AND a.code = 'asset:platform:cash:' || a.asset;
    IF coalesce(net, 0) < 0 THEN
        RAISE EXCEPTION 'credit refund %: customer % would be paid % more cash than it paid in',
            NEW.id, NEW.customer_id, -net USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_entries_credit_refund AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.kind = 'credit_refund') EXECUTE FUNCTION wallets_credit_refund_guard();
"""

DOWNGRADE = r"""
DROP TRIGGER journal_entries_credit_refund ON journal_entries;
DROP FUNCTION wallets_credit_refund_guard();
DROP INDEX journal_entries_cash_kinds;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
