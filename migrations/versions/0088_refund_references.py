"""A customer's refunds of top-ups have one reference each: the refund's id at the processor
(re_...), what `tokentill audit reconcile` matches. The reversal rule answers a refund reference
sent again as its first refund; this unique index is the database's guard that one refund is never
paid out twice by what writes around the rule. Like 0061's, it holds the lane, and a refund
without a reference ("") and a revocation (no cash) are not in it.

A database may hold a refund paid out twice under one reference from before the rule (which
reconcile lists as duplicates); entries cannot be changed, so each such later entry is named in
the index's predicate and left out of it; the first of each reference is in it and guards that
reference from now on.

Revision ID: 0088
Revises: 0087
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0088"
down_revision = "0087"
branch_labels = None
depends_on = None

_REFUNDS = "kind = 'grant_reversal' AND metadata ->> 'reversal' = 'refund' AND metadata ->> 'reference' <> ''"
# The refunds after the first of their customer and reference, by id (entries' ids are one sequence).
_LATER = f"""SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY lane, customer_id, metadata ->> 'reference' ORDER BY id) AS n
      FROM journal_entries WHERE {_REFUNDS}) t
 WHERE n > 1 ORDER BY id"""


def upgrade() -> None:
    later = [int(i) for i, in op.get_bind().execute(text(_LATER))]
    left_out = f" AND id NOT IN ({', '.join(map(str, later))})" if later else ""
    op.execute(f"""CREATE UNIQUE INDEX journal_entries_refund_reference
                       ON journal_entries (lane, customer_id, (metadata ->> 'reference'))
                    WHERE {_REFUNDS}{left_out}""")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_refund_reference")
