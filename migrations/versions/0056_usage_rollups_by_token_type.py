"""Usage rollups by token type only: the levels that leave the token type out are gone.

Since 0018 the fold (0026, 0029: `wallets_fold_usage`) rolled each customer's day, model and price
version up over every subset of the line key (token type, kind, rule): 8 levels, ~20 rows a
customer-day with three lines a charge. The usage report always groups by token type (a row never
adds two units: `reports.unit_groups`), so it reads levels 0-3 only; the rows of levels 4-7
(token type left out) were written, folded and audited for nothing. That was the largest cost of
PostgreSQL per ingested usage event: in `tokentill bench ingest` the fold of ~4,100 charges took
~2.6 s under auto_explain, 1.7 s of it the rollups' aggregation and upsert (10,560 rows); by token
type it aggregates 6,336 rows, in 2 sort orders instead of 3 (issue 10, acceptance 5).

Now the fold groups by token type and the cube of kind and rule (levels 0-3, the same level
numbers), the rows of levels 4-7 are deleted, and the table refuses them (CHECK). The audit
compares the rollups with the same aggregation (`wallets.store.USAGE_AGGREGATE`).

The downgrade folds whatever is pending, then restores 0029's fold and writes levels 4-7 again from
every charge (all of them folded by then).

Revision ID: 0056
Revises: 0055
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

from migrations.earlier import migration

revision = "0056"
down_revision = "0055"
branch_labels = None
depends_on = None

KEY = "customer_id, day, level, model, price_version, token_type, kind, rule_id"

# 0018's aggregation (the usage report's expressions) with the token type in every group.
AGGREGATE = r"""
SELECT c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date AS day, c.model, c.price_version,
       l ->> 'token_type' AS token_type, l ->> 'kind' AS kind, l ->> 'rule_id' AS rule_id,
       GROUPING(l ->> 'token_type', l ->> 'kind', l ->> 'rule_id') AS level,
       sum((l ->> 'quantity')::bigint)::numeric AS quantity, sum((l ->> 'amount_units')::numeric) AS amount,
       count(DISTINCT c.id) AS charges
  FROM {source} c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
 GROUP BY c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date, c.model, c.price_version, l ->> 'token_type',
          CUBE (l ->> 'kind', l ->> 'rule_id')"""

PENDING = ("SELECT wallets_fold_usage(lane) FROM (SELECT lane FROM usage_unfolded UNION "
           "SELECT lane FROM period_deltas) l")


def upgrade() -> None:
    deltas = migration("0029_period_deltas")
    op.execute(deltas._fold(AGGREGATE, KEY))
    op.execute("DELETE FROM usage_rollups WHERE level >= 4;\n"
               "ALTER TABLE usage_rollups DROP CONSTRAINT usage_rollups_level_check;\n"
               "ALTER TABLE usage_rollups ADD CONSTRAINT usage_rollups_level_check CHECK (level BETWEEN 0 AND 3);")


def downgrade() -> None:
    op.execute(PENDING)  # every charge folded: levels 4-7 are then written from all of them
    deltas, usage = migration("0029_period_deltas"), migration("0026_usage_rollups_folded")
    old = usage._aggregate()
    op.execute("ALTER TABLE usage_rollups DROP CONSTRAINT usage_rollups_level_check;\n"
               "ALTER TABLE usage_rollups ADD CONSTRAINT usage_rollups_level_check CHECK (level BETWEEN 0 AND 7);")
    op.execute(deltas._fold(old, KEY))
    op.execute(f"""INSERT INTO usage_rollups (lane, {KEY}, quantity, amount, charges)
                   SELECT ledger_lane(a.customer_id), {", ".join(f"a.{k}" for k in KEY.split(", "))},
                          a.quantity, a.amount, a.charges
                     FROM ({old.format(source='charges')}) a
                    WHERE a.level >= 4""")
