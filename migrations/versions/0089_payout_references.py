"""A customer's refund reference (the processor's or bank's refund id, re_...) names one payout,
whichever way it was paid: a top-up's refund (grant_reversal, reversal `refund`, 0088) or a refund of
overpaid credit (credit_refund, 0052). `tokentill audit reconcile` matches it to one refund row; the
rules refuse a second payout of either kind under it (409 idempotency_conflict), and this unique
index is the database's guard that what writes around them does not post one. 0052's and 0088's
indexes stay (each its kind's); this one spans both. A refund without a reference ("") is not in it.

A database may hold one reference paid out both ways from before the rule; entries cannot be
changed, so each such later entry (and each one 0088 left out) is named in the index's predicate and
left out of it; the first of each reference is in it and guards that reference from now on.

Revision ID: 0089
Revises: 0088
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0089"
down_revision = "0088"
branch_labels = None
depends_on = None

_PAYOUTS = ("(kind = 'credit_refund' OR (kind = 'grant_reversal' AND metadata ->> 'reversal' = 'refund')) "
            "AND metadata ->> 'reference' <> ''")
# The payouts after the first of their customer and reference, by id (entries' ids are one sequence).
_LATER = f"""SELECT id FROM (
    SELECT id, row_number() OVER (PARTITION BY lane, customer_id, metadata ->> 'reference' ORDER BY id) AS n
      FROM journal_entries WHERE {_PAYOUTS}) t
 WHERE n > 1 ORDER BY id"""


def upgrade() -> None:
    later = [int(i) for i, in op.get_bind().execute(text(_LATER))]
    left_out = f" AND id NOT IN ({', '.join(map(str, later))})" if later else ""
    op.execute(f"""CREATE UNIQUE INDEX journal_entries_payout_reference
                       ON journal_entries (lane, customer_id, (metadata ->> 'reference'))
                    WHERE {_PAYOUTS}{left_out}""")


def downgrade() -> None:
    op.execute("DROP INDEX journal_entries_payout_reference")
