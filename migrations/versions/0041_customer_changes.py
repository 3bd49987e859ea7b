"""Customer changes (PATCH /v1/customers/{id}): the change log, and the guards that keep a
change honest.

`customer_changes` records every change: who (the API key's id), when, each field's old and new
value, and what the customer owed then (its receivable). Rows are immutable (no UPDATE, DELETE
or TRUNCATE), lane-partitioned like every per-customer table.

The customers guard (0003, 0017) refuses a change of id, currency and created_at, and of the
billing cycle; now `billing` never changes either (prepaid usage and postpaid invoices already
billed would read differently). And a change of `overdraft_limit` must leave `blocked` as the
new limit says, from the receivable as posted: a limit lowered below what the customer owes
blocks the wallet in the same UPDATE (no new hold may draw on credit), and one raised above it
unblocks it. Settles still charge past the limit (the inference happened); verify's
`wallet_limits` checks `blocked` against the limit at any time.

Revision ID: 0041
Revises: 0040
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0041"
down_revision = "0040"
branch_labels = None
depends_on = None

# The customers guard of 0017 ({extra} empty), and this migration's checks.
GUARD = r"""
CREATE OR REPLACE FUNCTION wallets_customer_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owed numeric;
BEGIN
    IF TG_OP = 'DELETE' OR NEW.id IS DISTINCT FROM OLD.id OR NEW.currency IS DISTINCT FROM OLD.currency
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'customers: id, currency and created_at never change'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.time_zone IS DISTINCT FROM OLD.time_zone OR NEW.billing_anchor_day IS DISTINCT FROM OLD.billing_anchor_day
       OR NEW.open_period_start < OLD.open_period_start THEN
        RAISE EXCEPTION 'customers: the billing cycle never changes, and periods close forward only'
            USING ERRCODE = 'restrict_violation';
    END IF;{extra}
    RETURN NEW;
END $$;
"""
EXTRA = r"""
    IF NEW.billing IS DISTINCT FROM OLD.billing THEN
        RAISE EXCEPTION 'customers: billing never changes' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.overdraft_limit IS DISTINCT FROM OLD.overdraft_limit THEN
        SELECT coalesce(sum(b.debits - b.credits), 0) INTO owed
          FROM accounts a JOIN account_balances b ON b.account_id = a.id
         WHERE a.code = 'asset\:customer\:' || NEW.id || '\:receivable';  -- \: is a colon (not a bind)
        IF NEW.blocked IS DISTINCT FROM (NEW.overdraft_limit IS NOT NULL AND owed > NEW.overdraft_limit) THEN
            RAISE EXCEPTION 'customers: % owes %, so with overdraft limit % blocked must be %', NEW.id, owed,
                coalesce(NEW.overdraft_limit::text, 'none'), NOT NEW.blocked
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;"""

SCHEMA = r"""
CREATE TABLE customer_changes (
    lane        smallint NOT NULL,
    customer_id text NOT NULL REFERENCES customers (id),
    seq         integer NOT NULL CHECK (seq >= 1),
    changed_at  timestamptz NOT NULL,
    changed_by  text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 200),  -- the API key's id
    changes     jsonb NOT NULL CHECK (jsonb_typeof(changes) = 'object' AND changes <> '{}'::jsonb),
    receivable  numeric(38, 0) NOT NULL CHECK (receivable >= 0),  -- what the customer owed then
    PRIMARY KEY (lane, customer_id, seq),
    CHECK (lane = ledger_lane(customer_id))
) PARTITION BY LIST (lane);
CREATE TRIGGER customer_changes_immutable BEFORE UPDATE OR DELETE ON customer_changes
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
"""


def upgrade() -> None:
    op.execute(GUARD.format(extra=EXTRA))
    op.execute(SCHEMA)
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar())
    op.execute("".join(f"CREATE TABLE customer_changes_l{k} PARTITION OF customer_changes FOR VALUES IN ({k});\n"
                       for k in range(lanes)))
    op.execute("".join(
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();\n"
        for name in ("customer_changes", *(f"customer_changes_l{k}" for k in range(lanes)))))


def downgrade() -> None:
    op.execute("DROP TABLE customer_changes")
    op.execute(GUARD.format(extra=""))
