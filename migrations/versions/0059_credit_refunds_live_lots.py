"""A cash refund takes only from live lots, as `GET /refundable` counts them.

0054's guard checked that each lot a `credit_refund` debits is one a correction opened (a re-rate,
a volume true-up, a close's rounding), not that it is still live: the refund rule
(wallets.core.refunds.overpaid_lots) and `GET /refundable` count only lots neither swept
(expired_at), revoked, nor past their expiry at the refund's time. A $3.00 lot a re-rate gave back
of an invoice paid by wire, past its `expires_at` (not yet swept): `refundable` 0.00, yet a $2.00
refund of it posted by hand was taken. Now, at commit, a refund debiting a lot swept, revoked or
expired at the entry's time is refused (check_violation), naming the lot.

Revision ID: 0059
Revises: 0058
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

from migrations.earlier import migration

revision = "0059"
down_revision = "0058"
branch_labels = None
depends_on = None

_LIVE = r"""
    SELECT a.code INTO bad
      FROM postings p JOIN accounts a ON a.id = p.account_id
      JOIN lots l ON l.lane = p.lane AND l.account_id = p.account_id AND l.customer_id = NEW.customer_id
     WHERE p.lane = NEW.lane AND p.entry_id = NEW.id AND p.amount > 0
       AND (l.expired_at IS NOT NULL OR l.revoked_at IS NOT NULL OR l.expires_at <= NEW.occurred_at)
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'credit refund %: % is not a live lot of customer % (swept, revoked or expired at %)',
            NEW.id, bad, NEW.customer_id, NEW.occurred_at USING ERRCODE = 'check_violation';
    END IF;
"""


def upgrade() -> None:
    m = migration("0054_credit_refunds_own_cash")
    op.execute(m._HEAD + _LIVE + m._OWN_CASH + m._TAIL)


def downgrade() -> None:
    m = migration("0054_credit_refunds_own_cash")
    op.execute(m._HEAD + m._OWN_CASH + m._TAIL)  # 0054's function
