"""A customer's cash refunds of overpaid credit have one reference each: the payout's id at the
bank or processor, what `tokentill audit reconcile` matches. The refund rule answers a reference
sent again as the first refund (as an invoice payment's); this unique index is the database's
guard that one payout is never posted twice.

Revision ID: 0052
Revises: 0051
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0052"
down_revision = "0051"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""CREATE UNIQUE INDEX journal_entries_credit_refund_reference
                      ON journal_entries (lane, customer_id, (metadata ->> 'reference'))
                   WHERE kind = 'credit_refund'""")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_credit_refund_reference")
