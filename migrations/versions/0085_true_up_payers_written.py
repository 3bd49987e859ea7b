"""Each true-up's payer rows numbered as written: `true_up_payers.written`.

`tokentill audit verify` checks that what each payer got of each charge in all, true-up after
true-up, stays between nothing and what it paid of it: a running total in the order the true-ups
were written. That order was `created_at`, the database's statement_timestamp() of the batch's
write (9777fb7): one clock, but a clock. Stepped back (NTP) between two re-rates, the second's rows
were dated before the first's, its take back counted before what the first gave: a healthy ledger
flagged (a payer at -$0.30). A re-rate reads what each payer got so far as sums (no order), so only
verify misread it.

Now each batch's write numbers its rows from one sequence, once per statement (a batch's true-ups
share the number, as they shared the instant: one batch, nothing orders them), and verify orders by
that number. The lane's lock orders the re-rates of a customer (the second's statement follows the
first's commit), so the numbers follow them whatever any clock reads. One sequence for every lane,
as journal_entries' ids: nextval takes no lock a serializable transaction conflicts on; the order
matters only within a customer, so within a lane. Rows written before have no number (NULL) and
are ordered before the numbered ones by created_at, as before. Adding the column rewrites nothing
(no default on existing rows; the default is set after). Downgrade drops the column and its
sequence: verify orders by created_at again.

Revision ID: 0085
Revises: 0084
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0085"
down_revision = "0084"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE SEQUENCE true_up_payers_written AS bigint;
ALTER TABLE true_up_payers ADD COLUMN written bigint;
ALTER TABLE true_up_payers ALTER COLUMN written SET DEFAULT nextval('true_up_payers_written');
ALTER SEQUENCE true_up_payers_written OWNED BY true_up_payers.written;
""")


def downgrade() -> None:
    op.execute("ALTER TABLE true_up_payers DROP COLUMN written")
