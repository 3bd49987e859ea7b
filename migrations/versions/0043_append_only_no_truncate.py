"""The append-only tables that still took a TRUNCATE refuse it.

Their rows refuse UPDATE and DELETE (or, for lots, every change but their balance's), yet a plain
`TRUNCATE` by the application's role emptied them, no superuser needed:
- `idempotency_keys`, `idempotency_records`: a request replayed afterwards posted a second time;
- `seals`: the tamper evidence itself (verify then had nothing to compare);
- `invoice_payments`: invoices read unpaid again while the money stayed posted;
- `price_book_versions`: the prices that rated every charge;
- `reservation_holds`, `lots`: what each hold drew from, the credit lots and their expiry.
Each now has a statement-level `BEFORE TRUNCATE` trigger (`ledger_reject_change`, as postings
have since 0001), on the table and on each of its lane partitions: a TRUNCATE naming a
partition fires only that partition's triggers.

Revision ID: 0043
Revises: 0042
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0043"
down_revision = "0042"
branch_labels = None
depends_on = None

TABLES = ("idempotency_keys", "idempotency_records", "seals", "invoice_payments", "price_book_versions",
          "reservation_holds", "lots")

# Each table of TABLES and its partitions, in the current schema.
_EACH = """
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
              WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY (%(tables)s)
             UNION ALL
             SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
              WHERE p.relnamespace = current_schema()::regnamespace AND p.relname = ANY (%(tables)s)
    LOOP
        EXECUTE format(%(statement)s, t.relname || '_no_truncate', t.relname);
    END LOOP;
END $$"""


def _each(statement: str) -> str:
    tables = "ARRAY[" + ", ".join(f"'{t}'" for t in TABLES) + "]"
    return _EACH % {"tables": tables, "statement": f"'{statement}'"}


def upgrade() -> None:
    op.execute(_each("CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT "
                     "EXECUTE FUNCTION ledger_reject_change()"))


def downgrade() -> None:
    op.execute(_each("DROP TRIGGER %I ON %I"))
