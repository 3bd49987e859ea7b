"""`ledger_post` takes an entry's id from the batch when the batch gives one (`i`).

A wallet batch allocates its entries' ids from `journal_entries_id_seq` in its load, so it knows
them before it posts: the rows that name an entry (reservations, charges, usage events, lots,
stored answers) are built before `ledger_post` runs, and one statement calls `ledger_post` and
writes the rows (issue 10: a round trip fewer per batch). An entry without `i` takes the next
value of the sequence, as before.

Nothing is checked less: an id given twice in a lane is refused by the primary key, and every
other check (balance, bounds, immutability, the entry's lane) is the same statement as before.
Raw SQL could always choose an entry's id; `ledger_post` now lets its caller do so too.

The functions are rewritten from their definitions in the database (`pg_get_functiondef`), one
fragment each, so that what 0020-0023 made of them is kept.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

SIGNATURE = "(jsonb, smallint[], bigint[], smallint[])"

# The set-based path of ledger_post (0021), then the entry-by-entry path (0009's ledger_post,
# renamed ledger_post_each by 0020).
FRAGMENTS = {
    "ledger_post": (
        """INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata,
                                     checked_in_statement)
        SELECT lane_, v ->> 'k', """,
        """INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at, metadata,
                                     checked_in_statement)
        SELECT lane_, coalesce((v ->> 'i')::bigint, nextval('journal_entries_id_seq')), v ->> 'k', """),
    "ledger_post_each": (
        """INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata)
            VALUES (lane_, e ->> 'k', """,
        """INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at, metadata)
            VALUES (lane_, coalesce((e ->> 'i')::bigint, nextval('journal_entries_id_seq')), e ->> 'k', """),
}


def _rewrite(old_index: int, new_index: int) -> None:
    conn = op.get_bind()
    for name, fragments in FRAGMENTS.items():
        old, new = fragments[old_index], fragments[new_index]
        definition = conn.exec_driver_sql(
            f"SELECT pg_get_functiondef('{name}{SIGNATURE}'::regprocedure)").scalar_one()
        assert definition.count(old) == 1, f"{name} is not the function this migration rewrites"
        op.execute(definition.replace(old, new))


def upgrade() -> None:
    _rewrite(0, 1)


def downgrade() -> None:
    _rewrite(1, 0)
