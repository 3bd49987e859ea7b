"""What a re-rate that posted no entry kept of its payer rows: `rerate_true_ups.payer_rows`.

A true-up's rows of what each payer got of each charge (`true_up_payers`, 0082) are tied by verify
to its entry: what the entry posted each account is its rows and what it recorded beyond them
(`beyond_payer_rows`, part of the entry's hash). A re-rate whose lines net 0 posts no entry, so
its rows were tied to nothing but their charges' sums and the payers' bounds: a row of a charge
given by hand to a payer of it (the top-up that paid the 5th, its $0.60 that no payer got made
the top-up's, within what it paid) passed verify, and the next correction took that $0.60 back
from the top-up. Such a re-rate now keeps its rows beside its true-ups' corrections, as written
([charge, payer or null, units] each, [] where it kept none), and verify ties the table's rows
to them exactly. NULL: written before this column (not tied, as before). Downgrade drops it.

Revision ID: 0091
Revises: 0090
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0091"
down_revision = "0090"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE rerate_true_ups ADD COLUMN payer_rows jsonb "
        "CHECK (payer_rows IS NULL OR jsonb_typeof(payer_rows) = 'array')"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE rerate_true_ups DROP COLUMN payer_rows")
