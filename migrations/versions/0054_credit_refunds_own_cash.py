"""A cash refund of overpaid credit is bounded at commit as the API bounds it, not by net cash.

0051 checked that a customer's entries paid out no more cash than they brought in. The refund rule
(wallets.core.refunds.refundable) asks more: cash in, less what is still the customer's own as its
paid top-ups' credit, what open reservations hold and what it owes, must cover the refund. With a
$10.00 top-up unspent, a $2.00 refund of credit that no cash paid for left net cash at $8.00 and
passed 0051's check, paying out the top-up's cash. Now, at commit, after the refund: net cash in >=
the live paid top-up lots' balances (lots a correction opened are not: that credit is what a refund
pays) + the reserved account + what is owed (the receivable less open reservations' holds on it).
Lot liveness is at the entry's time (its command's clock). What a later command of the same batch
does is seen too: a batch whose later command makes the bound fail is split and run again in
parts (wallets.engine), as for any failure, and each part then passes alone.

Revision ID: 0054
Revises: 0053
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0054"
down_revision = "0053"
branch_labels = None
depends_on = None

_HEAD = r"""
CREATE OR REPLACE FUNCTION wallets_credit_refund_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
    net numeric;
    kept numeric;
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
"""

_OWN_CASH = r"""
    SELECT coalesce((SELECT sum(b.credits - b.debits)
                       FROM lots l
                       JOIN account_balances b ON b.lane = l.lane AND b.account_id = l.account_id
                       LEFT JOIN journal_entries o ON o.lane = l.lane AND o.id = l.entry_id
                      WHERE l.lane = NEW.lane AND l.customer_id = NEW.customer_id AND l.kind = 'topup'
                        AND l.expired_at IS NULL AND l.revoked_at IS NULL
                        AND (l.expires_at IS NULL OR l.expires_at > NEW.occurred_at)
                        AND o.kind IS DISTINCT FROM 'rerate_adjustment' AND o.kind IS DISTINCT FROM 'volume_true_up'
                        AND o.kind IS DISTINCT FROM 'invoice_rounding'), 0)
         + coalesce((SELECT sum(b.credits - b.debits)
                       FROM accounts a JOIN account_balances b ON b.lane = NEW.lane AND b.account_id = a.id
                      WHERE a.code = 'liability:customer:' || NEW.customer_id || '\:reserved'), 0)
         + greatest(0, coalesce((SELECT sum(b.debits - b.credits)
                                   FROM accounts a JOIN account_balances b ON b.lane = NEW.lane AND b.account_id = a.id
                                  WHERE a.code = 'asset:customer:' || NEW.customer_id || '\:receivable'), 0)
                     - coalesce((SELECT sum(least(h.amount, r.amount - r.captured))
                                   FROM reservations r
                                   JOIN reservation_holds h ON h.lane = r.lane AND h.reservation_id = r.id
                                  WHERE r.lane = NEW.lane AND r.customer_id = NEW.customer_id
                                    AND r.status IN ('held', 'capturing')
                                    AND h.account_code = 'asset:customer:' || NEW.customer_id || '\:receivable'), 0))
      INTO kept;
    IF coalesce(net, 0) < kept THEN
        RAISE EXCEPTION 'credit refund %: customer % would be paid % of cash still its own (paid top-ups, held, owed)',
            NEW.id, NEW.customer_id, kept - coalesce(net, 0) USING ERRCODE = 'check_violation';
    END IF;
"""

_TAIL = r"""
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.execute(_HEAD + _OWN_CASH + _TAIL)


def downgrade() -> None:
    op.execute(_HEAD + _TAIL)  # 0051's function
