"""The money budgets made mid-window before 0058 get the `seeded_through` 0058 gives those made since.

0058 left it NULL on every budget made before it, so no re-rate ever moved their `before:<budget>`
rows: a call charged $10.01, re-rated to $8.01 before a month's $15.00 hard budget was made (its
before: row 8.01), then to $9.01, stayed 8.01 there and let a $6.99 hold through. Made, a budget
counted the adjustments of its customer posted before it. A re-rate writes them in a wallet batch,
whose transaction begins once it holds its lane's lock and commits before letting it go, and posts
each in a journal entry whose `recorded_at` is that transaction's now(); a budget is made under the
same lock, in a transaction begun once it is taken, its `created_at` that transaction's now(). So
the adjustments it counted are exactly those whose entry was recorded before it (the database's one
clock: an adjustment's own `created_at` is the server's clock, which may run apart), and the last
of them is what 0058 would have kept. An adjustment with no entry is placed by its own `created_at`.
A re-rate applied since, which moved nothing there, moves it when applied again. Only the money
budgets with a before: row are seeded (no other is moved by one), live ones only (a deleted
budget's rows are never moved, and the database refuses any change to it, budgets_guard of 0014:
the upgrade failed on a database holding one); one made in the half hour before 7b78041, which
counted the calls as first charged, is seeded the same: the adjustments made before it stay
uncounted, as they were.

Revision ID: 0063
Revises: 0062
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0063"
down_revision = "0062"
branch_labels = None
depends_on = None

BACKFILL = """
UPDATE budgets b
   SET seeded_through = coalesce((SELECT max(a.id) FROM charge_adjustments a
                                    LEFT JOIN journal_entries e ON e.lane = a.lane AND e.id = a.entry_id
                                   WHERE a.lane = b.lane AND a.customer_id = b.customer_id
                                     AND coalesce(e.recorded_at, a.created_at) < b.created_at), 0)
 WHERE b.seeded_through IS NULL AND b.metric = 'money' AND b.deleted_at IS NULL
   AND EXISTS (SELECT 1 FROM reservation_budgets y
                WHERE y.lane = b.lane AND y.budget_id = b.id AND y.reservation_id = 'before:' || b.id)
"""


def upgrade() -> None:
    op.execute(BACKFILL)


def downgrade() -> None:
    pass  # a value 0058 keeps as it would have: nothing to undo (0058's own downgrade drops the column)
