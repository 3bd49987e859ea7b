"""Top-ups that paid the receivable: `lots.paid_receivable`, and their index.

A close of a prepaid customer (and its upcoming invoice) reads what its top-ups paid off the
receivable and no invoice records yet (wallets.store.load_unapplied), under its lane's writer lock.
Whether a top-up paid any is its entry's posting to the receivable, so the read took every top-up
lot of the customer (`lots_customer`) and probed its entry's postings for each: a customer with
20,000 top-ups, 40 of which paid the receivable, read 20,000 lots and probed 20,000 postings and
accounts (141,427 buffers, 71-147 ms) for its 40.

`paid_receivable` marks a top-up lot whose top-up paid the receivable (its entry credits the
customer's receivable): known when the top-up is posted (wallets.core.credits.top_up), written with
the lot and never changed (the entry is immutable). Backfilled here from the postings.
`lots_customer_paid_receivable` (customer, marked lots) is what load_unapplied reads.

Revision ID: 0073
Revises: 0072
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0073"
down_revision = "0072"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE lots ADD COLUMN paid_receivable boolean NOT NULL DEFAULT false")
    # the receivable's code, 'asset:customer:<id>:receivable', split where ':receivable' would read as a bind
    op.execute("""UPDATE lots l SET paid_receivable = true
                   WHERE l.kind = 'topup' AND EXISTS (
                         SELECT FROM postings p JOIN accounts a ON a.id = p.account_id
                          WHERE p.lane = l.lane AND p.entry_id = l.entry_id AND p.amount < 0
                            AND a.code = 'asset:customer:' || l.customer_id || ':' || 'receivable')""")
    op.execute("CREATE INDEX lots_customer_paid_receivable ON lots (customer_id) WHERE paid_receivable")


def downgrade() -> None:
    op.execute("DROP INDEX lots_customer_paid_receivable")
    op.execute("ALTER TABLE lots DROP COLUMN paid_receivable")
