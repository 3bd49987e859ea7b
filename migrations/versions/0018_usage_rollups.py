"""Daily usage rollups: per customer, UTC day, model, price version and rated line key
(token type, kind, rule), the quantity, the amount and the number of charges, written in the
same statement as the charges (wallets/store.py) so the usage report reads them instead of
expanding every charge's lines. The line key is rolled up by every subset of its parts (a cube):
`level` has a bit set for each part left out (4 token type, 2 kind, 1 rule; 7: whole charges), so
that each row counts the charges with a line under it exactly, whatever a report groups by.
Existing charges are backfilled by the very aggregation the write uses.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# The rows of `source` (charges, or the rows a batch just inserted into them) aggregated into the
# rollup's keys: the usage report's own expressions (wallets/reports.py) over the same lines.
AGGREGATE = r"""
SELECT c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date AS day, c.model, c.price_version,
       l ->> 'token_type' AS token_type, l ->> 'kind' AS kind, l ->> 'rule_id' AS rule_id,
       GROUPING(l ->> 'token_type', l ->> 'kind', l ->> 'rule_id') AS level,
       sum((l ->> 'quantity')::bigint)::numeric AS quantity, sum((l ->> 'amount_units')::numeric) AS amount,
       count(DISTINCT c.id) AS charges
  FROM {source} c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
 GROUP BY c.customer_id, (c.occurred_at AT TIME ZONE 'UTC')::date, c.model, c.price_version,
          CUBE (l ->> 'token_type', l ->> 'kind', l ->> 'rule_id')
"""

SCHEMA = r"""
CREATE TABLE usage_rollups (
    lane          smallint NOT NULL DEFAULT 0,
    customer_id   text NOT NULL REFERENCES customers (id),
    day           date NOT NULL,
    model         text,
    price_version text,
    token_type    text,
    kind          text,
    rule_id       text,
    level         smallint NOT NULL CHECK (level BETWEEN 0 AND 7),
    quantity      numeric(38, 0) NOT NULL DEFAULT 0,
    amount        numeric(38, 0) NOT NULL DEFAULT 0,
    charges       bigint NOT NULL DEFAULT 0 CHECK (charges >= 0),
    CHECK ((level & 4 = 0 OR token_type IS NULL) AND (level & 2 = 0 OR kind IS NULL)
           AND (level & 1 = 0 OR rule_id IS NULL))
) PARTITION BY LIST (lane);
CREATE UNIQUE INDEX usage_rollups_key ON usage_rollups
    (lane, customer_id, day, level, model, price_version, token_type, kind, rule_id) NULLS NOT DISTINCT;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    lanes = op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one()
    op.execute("".join(f"CREATE TABLE usage_rollups_l{k} PARTITION OF usage_rollups FOR VALUES IN ({k});\n"
                       for k in range(int(lanes))))
    op.execute(f"""INSERT INTO usage_rollups (lane, customer_id, day, model, price_version, token_type, kind,
                       rule_id, level, quantity, amount, charges)
                   SELECT ledger_lane(a.customer_id), a.customer_id, a.day, a.model, a.price_version, a.token_type,
                          a.kind, a.rule_id, a.level, a.quantity, a.amount, a.charges
                     FROM ({AGGREGATE.format(source='charges')}) a""")


def downgrade() -> None:
    op.execute("DROP TABLE usage_rollups")
