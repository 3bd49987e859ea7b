"""A customer's re-rate entries: `journal_entries_rerates`.

A close reads what the customer's re-rates billed in the closing period gave back off its
receivable (wallets.store.load_corrections), under its lane's writer lock. It found them from the
customer's adjustments, every one of them whatever the period, with their re-rates: 70,969
adjustments (six re-rated months of 300,000 charges) for six entries, 195 ms. It now finds the
customer's re-rate entries first, on this index (partial: re-rate entries alone, a few per re-rate),
and one adjustment of each. Created on the partitioned parent: each lane's partition gets its own.

Revision ID: 0070
Revises: 0069
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0070"
down_revision = "0069"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX journal_entries_rerates ON journal_entries (lane, customer_id) "
               "WHERE kind = 'rerate_adjustment'")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_rerates")
