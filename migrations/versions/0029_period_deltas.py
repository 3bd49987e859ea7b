"""Period rollups and usage counters folded in bulk, off the write path, and exact at all times.

Since 0017 (period rollups) and 0004 (usage counters) every wallet batch upserted what its
entries added to each customer's billing period: ~6 `period_rollups` rows and ~3 `usage_counters`
rows per usage event, each an ON CONFLICT DO UPDATE of a row an earlier batch wrote. That was
~43 % of the write statement of an ingest batch (auto_explain of a 256-event lane batch: 27.1 ms
and 12.3 ms of its ~90 ms; issue 10, acceptance 5).

Now a batch appends one `period_deltas` row per customer and period instead (a plain INSERT: no
conflict arbitration, one index entry), holding what the batch added there: the rollup items
with their quantities and amounts, and the usage counters by book and rule, as parallel arrays.
`wallets_fold_usage(lane)` (0026's fold, extended) folds a lane's deltas into `period_rollups` and
`usage_counters` in the same statement that folds its queued charges into the usage rollups: it
deletes the deltas and upserts their sums, atomically, so the upserts are shared by every batch
folded together. It runs when 0026's does: in a batch of the lane once enough was queued there
(wallets/engine.py), and in the scheduled job `fold_usage`, both under the lane's writer lock.

The readers (the invoice close and the upcoming invoice: `load_rollups`; graduated tiers:
`load_period_usage`) add the customer's unfolded deltas to the folded rows in one snapshot: a
batch's increments are in exactly one of the two, so they are exact whether or not a fold ran.
`tokentill audit verify` compares rollups plus deltas with the postings, and counters plus deltas
with the charges.

The database refuses nonsense deltas: the lane is the customer's (CHECK), the customer exists
(checked once per statement, as 0025 checks references into the journal), the period is a period
label, the arrays are parallel and not all empty, every element is present (no NULL), amounts
and quantities are integers (no fraction; below 10^30 in magnitude, so folded sums fit the
rollups' numeric(38, 0)), counters are not negative, and items are 1 to 2,000 characters (as
`period_rollups` requires: a delta that could not be folded would stop its lane's fold). A delta
is never updated, and the table cannot be truncated; a delta deleted other than by the fold, or
added by hand, is found by the audit.

Every period rollup and counter already in the database is folded (written directly before), so
there are no deltas at first; the downgrade folds the pending ones back.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-03
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE DOMAIN wallets_rollup_item AS text NOT NULL CHECK (length(VALUE) BETWEEN 1 AND 2000);
CREATE DOMAIN wallets_counter_key AS text NOT NULL CHECK (length(VALUE) >= 1);
CREATE DOMAIN wallets_units AS numeric NOT NULL CHECK (VALUE = trunc(VALUE) AND abs(VALUE) < 1e30);
CREATE DOMAIN wallets_count AS numeric NOT NULL CHECK (VALUE = trunc(VALUE) AND VALUE >= 0 AND VALUE < 1e30);

-- What one batch added to one customer's billing period, until folded (wallets_fold_usage).
CREATE TABLE period_deltas (
    lane        smallint NOT NULL CONSTRAINT period_deltas_lane_of_customer CHECK (lane = ledger_lane(customer_id)),
    customer_id text NOT NULL,  -- a customer's: checked once per statement (below)
    period      text NOT NULL CONSTRAINT period_deltas_period_label CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    -- period_rollups: item -> quantity, amount
    items       wallets_rollup_item[] NOT NULL DEFAULT '{}',
    quantities  wallets_units[] NOT NULL DEFAULT '{}',
    amounts     wallets_units[] NOT NULL DEFAULT '{}',
    -- usage_counters: book, rule -> units rated
    books       wallets_counter_key[] NOT NULL DEFAULT '{}',
    rules       wallets_counter_key[] NOT NULL DEFAULT '{}',
    counts      wallets_count[] NOT NULL DEFAULT '{}',
    CONSTRAINT period_deltas_items_parallel
        CHECK (cardinality(quantities) = cardinality(items) AND cardinality(amounts) = cardinality(items)),
    CONSTRAINT period_deltas_counts_parallel
        CHECK (cardinality(rules) = cardinality(books) AND cardinality(counts) = cardinality(books)),
    CONSTRAINT period_deltas_not_empty CHECK (cardinality(items) + cardinality(books) > 0)
) PARTITION BY LIST (lane);
CREATE INDEX period_deltas_customer ON period_deltas (lane, customer_id, period);

-- Each delta names a customer: one primary-key probe per new row, at the end of the statement,
-- instead of a foreign key's check per row (as 0025 does for the journal). Customers are never
-- deleted nor renamed (wallets_customer_guard), and a delta is never updated, so that is all a
-- foreign key would check.
CREATE FUNCTION wallets_check_delta_customers() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT n.customer_id INTO missing
      FROM new_deltas n LEFT JOIN LATERAL (SELECT true AS found FROM customers c WHERE c.id = n.customer_id) c ON true
     WHERE c.found IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'period_deltas: no customer %', missing USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER period_deltas_customers AFTER INSERT ON period_deltas REFERENCING NEW TABLE AS new_deltas
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_delta_customers();
CREATE TRIGGER period_deltas_immutable BEFORE UPDATE ON period_deltas
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER period_deltas_no_truncate BEFORE TRUNCATE ON period_deltas
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

PARTITION = r"""
CREATE TABLE period_deltas_l{k} PARTITION OF period_deltas FOR VALUES IN ({k});
CREATE TRIGGER period_deltas_customers AFTER INSERT ON period_deltas_l{k} REFERENCING NEW TABLE AS new_deltas
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_delta_customers();
CREATE TRIGGER period_deltas_no_truncate BEFORE TRUNCATE ON period_deltas_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""


def _fold(aggregate: str, key: str) -> str:
    """The fold of one lane: its queued charges into the usage rollups (0026, each found by its
    primary key as 0027 made it), its deltas into
    the period rollups and usage counters, each queue emptied, in one statement (the lane written
    in, so the plan names its partitions only). Returns the number of charges folded, as before."""
    return rf"""
CREATE OR REPLACE FUNCTION wallets_fold_usage(fold_lane smallint) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint;
BEGIN
    EXECUTE format($q$
    WITH gone AS (DELETE FROM usage_unfolded WHERE lane = %1$s RETURNING customer_id, charge_id),
    queued AS (SELECT c.* FROM gone g CROSS JOIN LATERAL (  -- a primary-key probe per charge (0027)
                   SELECT * FROM charges c WHERE c.lane = %1$s AND c.id = g.charge_id LIMIT 1) c),
    rolled AS (
        INSERT INTO usage_rollups (lane, {key}, quantity, amount, charges)
        SELECT %1$s, {key}, quantity, amount, charges
          FROM ({aggregate.replace("{source}", "queued")}) a
        ON CONFLICT (lane, {key})
        DO UPDATE SET quantity = usage_rollups.quantity + EXCLUDED.quantity,
                      amount = usage_rollups.amount + EXCLUDED.amount,
                      charges = usage_rollups.charges + EXCLUDED.charges),
    deltas AS (DELETE FROM period_deltas WHERE lane = %1$s
               RETURNING customer_id, period, items, quantities, amounts, books, rules, counts),
    -- the arrays unnested in the select list, in step (same lengths: CHECKs): a set-returning
    -- function in FROM would build a tuplestore per delta (40 percent slower, measured)
    periods AS (
        INSERT INTO period_rollups (lane, customer_id, period, item, quantity, amount)
        SELECT %1$s, customer_id, period, item, sum(quantity), sum(amount)
          FROM (SELECT customer_id, period, unnest(items) AS item, unnest(quantities) AS quantity,
                       unnest(amounts) AS amount FROM deltas) x
         GROUP BY customer_id, period, item
        ON CONFLICT (lane, customer_id, period, item)
        DO UPDATE SET quantity = period_rollups.quantity + EXCLUDED.quantity,
                      amount = period_rollups.amount + EXCLUDED.amount),
    counted AS (
        INSERT INTO usage_counters (lane, customer_id, period, book_id, rule_id, quantity)
        SELECT %1$s, customer_id, period, book_id, rule_id, sum(quantity)
          FROM (SELECT customer_id, period, unnest(books) AS book_id, unnest(rules) AS rule_id,
                       unnest(counts) AS quantity FROM deltas) x
         GROUP BY customer_id, period, book_id, rule_id
        ON CONFLICT (lane, customer_id, period, book_id, rule_id)
        DO UPDATE SET quantity = usage_counters.quantity + EXCLUDED.quantity)
    SELECT count(*) FROM gone$q$, fold_lane) INTO folded;  -- the deltas' CTEs run all the same
    RETURN folded;
END $fn$;
"""


def _migration(name: str) -> ModuleType:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lanes() -> int:
    return int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute("".join(PARTITION.replace("{k}", str(k)) for k in range(_lanes())))
    usage = _migration("0026_usage_rollups_folded")
    op.execute(_fold(usage._aggregate(), usage.KEY))


def downgrade() -> None:
    # Whatever is pending goes into the rollups and counters first: 0026's writers keep them up to date.
    op.execute("SELECT wallets_fold_usage(lane) FROM (SELECT lane FROM usage_unfolded UNION "
               "SELECT lane FROM period_deltas) l")
    usage, probe = _migration("0026_usage_rollups_folded"), _migration("0027_fold_probes_by_key")
    op.execute("DROP FUNCTION wallets_fold_usage(smallint);\n"
               + usage._fold(usage._aggregate()).replace(probe.OLD, probe.NEW))
    op.execute("DROP TABLE period_deltas;\n"
               "DROP FUNCTION wallets_check_delta_customers();\n"
               "DROP DOMAIN wallets_rollup_item, wallets_counter_key, wallets_units, wallets_count;")
