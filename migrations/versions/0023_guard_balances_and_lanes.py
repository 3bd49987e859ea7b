"""Two holes found by raw SQL with the application's role (review of 0019-0022):

- cached balances could drift from the postings: `account_balances` had no guard, so a direct
  UPDATE of `debits`/`credits` (or of `lower_bound`, which lifted a bound the account does not
  have), an INSERT of a row that starts above zero, a DELETE or a TRUNCATE all went through. Now a
  balance row is written only by the ledger's own triggers (postings applied, an account opened,
  an account's bound changed): any write at trigger depth 0 is refused, and so is TRUNCATE. The
  triggers' own UPDATEs run at depth 1, so the WHEN clause costs the hot path no function call.
- an entry's lane was not tied to its customer: the same (customer, key) could be written twice,
  once in its own lane and once in another (the unique key includes the lane), and an entry
  whose lane is not its customer's is invisible to the replay lookups. Now
  CHECK (lane = ledger_entry_lane(customer_id)), as every writer already does.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02
"""
from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION ledger_reject_balance_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: balances are written only by the ledger''s triggers',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER account_balances_guard BEFORE INSERT OR UPDATE OR DELETE ON account_balances
    FOR EACH ROW WHEN (pg_trigger_depth() < 1) EXECUTE FUNCTION ledger_reject_balance_write();
CREATE TRIGGER account_balances_no_truncate BEFORE TRUNCATE ON account_balances
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_lane_of_customer
    CHECK (lane = ledger_entry_lane(customer_id));
"""

# TRUNCATE triggers are not inherited: a partition truncated by name needs its own.
PARTITION = r"""
CREATE TRIGGER account_balances_no_truncate BEFORE TRUNCATE ON account_balances_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

DOWNGRADE = r"""
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_lane_of_customer;
DROP TRIGGER account_balances_no_truncate ON account_balances;
DROP TRIGGER account_balances_guard ON account_balances;
DROP FUNCTION ledger_reject_balance_write();
"""


def _lanes() -> int:
    return int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute("".join(PARTITION.replace("{k}", str(k)) for k in range(_lanes())))


def downgrade() -> None:
    op.execute("".join(f"DROP TRIGGER account_balances_no_truncate ON account_balances_l{k};\n"
                       for k in range(_lanes())))
    op.execute(DOWNGRADE)
