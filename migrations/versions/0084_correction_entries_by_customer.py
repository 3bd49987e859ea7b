"""A customer's close and re-rate entries by time: `journal_entries_corrections`.

A re-rate taking back from where a closed lot's money went (promotions, breakage) reads what the
customer's closes and re-rates moved there for it since (their entries' `closed_lots`,
wallets.store.load_payers). It found them from every adjustment of the customer and every close,
its whole history: 2,000 re-rate entries of 5 adjustments each and 25 closes read for a grant
revoked after all of them. An entry before a lot closed moved nothing there for it, so it now reads
the entries since the first of the lots asked closed, on this index (partial: close and re-rate
entries alone). Created on the partitioned parent: each lane's partition gets its own.

Revision ID: 0084
Revises: 0083
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0084"
down_revision = "0083"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX journal_entries_corrections ON journal_entries (lane, customer_id, occurred_at) "
               "WHERE kind IN ('rerate_adjustment', 'volume_true_up')")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_corrections")
