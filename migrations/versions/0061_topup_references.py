"""A customer's top-ups have one payment reference each: the payment's id at the processor or
bank. The top-up rule answers a reference sent again as its first top-up (3d5c05e), under the
lane's lock; this unique index is the database's guard that one payment is never credited twice
by what writes around the rule. Like 0052's, it holds the lane (a partitioned table's unique index
holds its partition key), and a top-up without a reference ("") is not in it.

A database may hold top-ups credited twice under one reference from before 3d5c05e (which
`tokentill audit reconcile` lists as duplicates); entries cannot be changed, so each such later
entry is named in the index's predicate and left out of it; the first of each reference is in it
and guards that reference from now on.

Revision ID: 0061
Revises: 0060
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0061"
down_revision = "0060"
branch_labels = None
depends_on = None

# The top-ups after the first of their customer and reference, by id (entries' ids are one sequence).
_LATER = """SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY lane, customer_id, metadata ->> 'reference' ORDER BY id) AS n
      FROM journal_entries WHERE kind = 'topup' AND metadata ->> 'reference' <> '') t
 WHERE n > 1 ORDER BY id"""


def upgrade() -> None:
    later = [int(i) for i, in op.get_bind().execute(text(_LATER))]
    left_out = f" AND id NOT IN ({', '.join(map(str, later))})" if later else ""
    op.execute(f"""CREATE UNIQUE INDEX journal_entries_topup_reference
                       ON journal_entries (lane, customer_id, (metadata ->> 'reference'))
                    WHERE kind = 'topup' AND metadata ->> 'reference' <> ''{left_out}""")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_topup_reference")
