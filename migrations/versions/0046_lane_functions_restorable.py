"""The lane functions that CHECK constraints call find ledger_lane by its object, not its name.

pg_dump, pg_restore and pg_upgrade (which dumps the schema) run with an empty search_path. Two
SQL functions called `ledger_lane` by name: `ledger_entry_lane`, which the journal's, outbox's
and balances' lane CHECK constraints call, and `ledger_balance_lane`. So every restore of a
tokentill backup failed ("function ledger_lane(text) does not exist" while attaching the
journal's partitions and copying their rows: an empty journal), and so did the embedded
cluster's upgrade from PostgreSQL 16 to 18. They become SQL-standard bodies (`RETURN ...`,
PostgreSQL 14 and later), parsed when created: they refer to `ledger_lane` itself, a dump
writes it schema-qualified, and they are still inlined. Same results, same signatures.

Revision ID: 0046
Revises: 0045
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0046"
down_revision = "0045"
branch_labels = None
depends_on = None

_UP = """
CREATE OR REPLACE FUNCTION ledger_balance_lane(customer_id text, stripes smallint, stripe smallint)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN stripes > 1 THEN (stripe % {lanes})::smallint
                WHEN customer_id IS NULL THEN 0::smallint ELSE ledger_lane(customer_id) END;
CREATE OR REPLACE FUNCTION ledger_entry_lane(customer_id text) RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce(ledger_lane(customer_id), 0::smallint);
"""

# 0009's definitions
_DOWN = """
CREATE OR REPLACE FUNCTION ledger_balance_lane(customer_id text, stripes smallint, stripe smallint)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN stripes > 1 THEN (stripe % {lanes})::smallint
                WHEN customer_id IS NULL THEN 0::smallint ELSE ledger_lane(customer_id) END$$;
CREATE OR REPLACE FUNCTION ledger_entry_lane(customer_id text) RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT coalesce(ledger_lane(customer_id), 0::smallint)$$;
"""


def _lanes() -> int:
    return int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())


def upgrade() -> None:
    op.execute(_UP.format(lanes=_lanes()))


def downgrade() -> None:
    op.execute(_DOWN.format(lanes=_lanes()))
