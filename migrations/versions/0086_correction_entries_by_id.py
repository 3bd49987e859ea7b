"""A customer's close and re-rate entries by id: `journal_entries_corrections_by_id`.

A re-rate taking back from where a revoked (swept) lot's money went reads what the customer's
closes and re-rates moved there for it since (their `closed_lots`, wallets.store.load_payers): the
entries after the revocation's (sweep's) entry, a later id, as the correction that wrote them saw
the lot revoked (swept) whatever the servers' clocks read. 06cb6d4 and fd4a20c read them on 0084's
index by date, from a day (chain.DATED_AHEAD) before the revocation (expiry): a correction written
after it by a server whose clock read more than a day behind (or a revocation by one more than a
day ahead) was left out, and the next correction took from promotions (breakage) again what it
had taken: -$0.16 for a $0.10 revocation. Now the entries after that id are read on this index
(partial, as 0084's: close and re-rate entries alone), beside 0084's by date for an expired lot not
swept yet (closed by the entry's own clock). Created on the partitioned parent: each lane's
partition gets its own (README, Migrations: the lock and the way around it, as 0084's).

Revision ID: 0086
Revises: 0085
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0086"
down_revision = "0085"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX journal_entries_corrections_by_id ON journal_entries (lane, customer_id, id) "
               "WHERE kind IN ('rerate_adjustment', 'volume_true_up')")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_corrections_by_id")
