"""Usage rollups folded in bulk, off the write path, and exact at all times.

Since 0018 every statement that inserted charges also upserted their daily usage rollups: a cube
over the line key, ~20 rollup rows per charge when each call brings one event per customer, the
largest cost of PostgreSQL per ingested usage event (~1.5-3 ms of its ~3-4 ms, issue 10,
acceptance 5). Now a charge is queued instead: a statement trigger on `charges` (and on each
partition) puts every new charge in `usage_unfolded` (lane, customer, charge id), and
`wallets_fold_usage(lane)` folds a lane's queued charges into the rollups in one statement:
it deletes the queue rows and upserts the aggregate of their charges, atomically. The wallet
engine folds a lane inside a batch once enough charges were queued there (wallets/engine.py), so
the upserts are shared by every charge of a customer and day folded together.

The usage report reads the rollups and adds the queued charges of the customer from the charges
themselves (wallets/reports.py), in one snapshot: a charge is in exactly one of the two, so the
report is exact whether or not a fold ran. The audit compares the rollups with the charges that
are not queued. Queue rows come only from the charges' trigger (a row inserted any other way is
refused), and the queue cannot be truncated.

Every charge already in the database is in the rollups (0018 wrote them with the charges), so the
queue starts empty.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

KEY = "customer_id, day, level, model, price_version, token_type, kind, rule_id"

SCHEMA = r"""
CREATE TABLE usage_unfolded (
    lane        smallint NOT NULL,
    customer_id text NOT NULL,
    charge_id   bigint NOT NULL,
    PRIMARY KEY (lane, customer_id, charge_id)
) PARTITION BY LIST (lane);

CREATE FUNCTION wallets_queue_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_unfolded (lane, customer_id, charge_id) SELECT lane, customer_id, id FROM new_charges;
    RETURN NULL;
END $$;

CREATE FUNCTION wallets_reject_queue_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'usage_unfolded is written only by the charges'' trigger'
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER charges_queue_usage AFTER INSERT ON charges REFERENCING NEW TABLE AS new_charges
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_queue_usage();
CREATE TRIGGER usage_unfolded_guard BEFORE INSERT OR UPDATE ON usage_unfolded
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION wallets_reject_queue_write();
CREATE TRIGGER usage_unfolded_no_truncate BEFORE TRUNCATE ON usage_unfolded
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

PARTITION = r"""
CREATE TABLE usage_unfolded_l{k} PARTITION OF usage_unfolded FOR VALUES IN ({k});
CREATE TRIGGER charges_queue_usage AFTER INSERT ON charges_l{k} REFERENCING NEW TABLE AS new_charges
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_queue_usage();
CREATE TRIGGER usage_unfolded_no_truncate BEFORE TRUNCATE ON usage_unfolded_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""


def _fold(aggregate: str) -> str:
    """The fold of one lane: its queue emptied and its charges added to the rollups, in one
    statement (the lane written in, so the plan names its partitions only). Returns the number
    of charges folded."""
    return rf"""
CREATE FUNCTION wallets_fold_usage(fold_lane smallint) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    folded bigint;
BEGIN
    EXECUTE format($q$
    WITH gone AS (DELETE FROM usage_unfolded WHERE lane = %1$s RETURNING customer_id, charge_id),
    queued AS (SELECT c.* FROM gone g CROSS JOIN LATERAL (  -- a primary-key probe per charge, never a scan
                   SELECT * FROM charges c WHERE c.lane = %1$s AND c.id = g.charge_id
                                             AND c.customer_id = g.customer_id LIMIT 1) c),
    rolled AS (
        INSERT INTO usage_rollups (lane, {KEY}, quantity, amount, charges)
        SELECT %1$s, {KEY}, quantity, amount, charges
          FROM ({aggregate.replace("{source}", "queued")}) a
        ON CONFLICT (lane, {KEY})
        DO UPDATE SET quantity = usage_rollups.quantity + EXCLUDED.quantity,
                      amount = usage_rollups.amount + EXCLUDED.amount,
                      charges = usage_rollups.charges + EXCLUDED.charges)
    SELECT count(*) FROM gone$q$, fold_lane) INTO folded;
    RETURN folded;
END $fn$;
"""


def _aggregate() -> str:
    """0018's aggregation of charges into the rollups' keys (the usage report's expressions)."""
    path = Path(__file__).with_name("0018_usage_rollups.py")
    spec = importlib.util.spec_from_file_location("migration_0018_usage_rollups", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AGGREGATE


def _lanes() -> int:
    return int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute("".join(PARTITION.replace("{k}", str(k)) for k in range(_lanes())))
    op.execute(_fold(_aggregate()))


def downgrade() -> None:
    # Whatever is still queued goes into the rollups first: 0018's writes keep them up to date.
    op.execute("SELECT wallets_fold_usage(lane) FROM (SELECT DISTINCT lane FROM usage_unfolded) l")
    op.execute("".join(f"DROP TRIGGER charges_queue_usage ON charges_l{k};\n" for k in range(_lanes())))
    op.execute("DROP TRIGGER charges_queue_usage ON charges;\n"
               "DROP FUNCTION wallets_fold_usage(smallint);\n"
               "DROP TABLE usage_unfolded;\n"
               "DROP FUNCTION wallets_queue_usage();\n"
               "DROP FUNCTION wallets_reject_queue_write();")
