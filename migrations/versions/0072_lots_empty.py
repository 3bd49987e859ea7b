"""Lots that hold nothing: `lots.empty`, and the load's index of the others.

Every wallet batch loads its customers' unexpired lots with money (wallets.store.load), under its
lane's writer lock. Whether a lot has money is its balance row's (`account_balances`), so the load
read every unexpired lot of the customer (`lots_customer`, 0067) and its balance to keep the few
with money: a customer with 20,000 spent top-ups read 20,001 lots and as many balances for its one
live lot, 18.7-64 ms a load (the load's generic plan, best and median of 30; 2 cores at load 7).

`empty` marks a lot that held nothing when a wallet batch last wrote it. The batch writes the mark
as each lot it holds ends it (wallets.batch.Batch._lot_marks): a lot spent is marked, and one given
money back (a released hold, a re-rate's or a true-up's give-back: the batch loads the lots those
go to) loses its mark in the batch that credits it. Every posting to a lot is a wallet batch's.
Not a trigger on the balances: a reservation's account crosses 0 at most reserves and settles, and
a deferred trigger's call cost each ~50 us of PostgreSQL time at load 10 (2 calls a lifecycle), for
nothing; and an immediate one's update of a lot clashes with the batch's own update of it (a
sweep, a revocation) in the same statement. Backfilled here from the balances (unexpired lots).

`lots_customer_money` (customer, unexpired lots not empty) is what the load reads; it replaces
`lots_customer_live` (unexpired lots), which no query needs any more. `lots_customer` stays: the
close's read of a customer's top-ups (store.load_unapplied) uses it.

Revision ID: 0072
Revises: 0071
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0072"
down_revision = "0071"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE lots ADD COLUMN empty boolean NOT NULL DEFAULT false")
    op.execute("""UPDATE lots l SET empty = true FROM account_balances b
                   WHERE b.lane = l.lane AND b.account_id = l.account_id AND l.expired_at IS NULL
                     AND b.credits <= b.debits""")
    op.execute("CREATE INDEX lots_customer_money ON lots (customer_id) WHERE expired_at IS NULL AND NOT empty")
    op.execute("DROP INDEX lots_customer_live")


def downgrade() -> None:
    op.execute("CREATE INDEX lots_customer_live ON lots (customer_id) WHERE expired_at IS NULL")
    op.execute("DROP INDEX lots_customer_money")
    op.execute("ALTER TABLE lots DROP COLUMN empty")
