"""`true_up_charges`' references to customers and re-rates checked once per statement, not per row.

A close or a re-rate writes a row per charge of each volume rule it gives money back of (0068):
100,000 rows for a customer with 100,000 charges a month, in one INSERT of its batch, under the
lane's writer lock. Each row's foreign keys (`customer_id` -> `customers`, `rerate_id` ->
`rerates`) ran a check of their own, a query with a row lock (FOR KEY SHARE) on the parent: the
same customer, and the same re-rate, 100,000 times.

These foreign keys become one statement-level check per table the statement names (transition
tables, as 0025 did for the charges and the postings): each distinct customer and re-rate of the
statement's new rows probed once by primary key. They are as strong as the keys were: a row naming
a missing customer or re-rate fails its statement with foreign_key_violation (23503), inserted
through the parent or into a lane partition by name (statement triggers fire for the table a
statement names, so each partition has its own). The rows cannot change afterwards (the table's
row trigger refuses UPDATE and DELETE, and TRUNCATE), and the parents cannot go away, so the key
share lock is not needed: a customer's id never changes and it is never deleted
(`customers_guard`), a re-rate is immutable (`rerates_immutable`), and a TRUNCATE of either is
refused, without CASCADE by the other tables' foreign keys to it (lots, accounts, credit notes,
charge adjustments...), with CASCADE by those tables' own truncate guards.

The downgrade restores the two foreign keys (validating every row).

Revision ID: 0075
Revises: 0074
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0075"
down_revision = "0074"
branch_labels = None
depends_on = None

FOREIGN_KEYS = {  # constraint: its definition (0068), dropped here and restored by the downgrade
    "true_up_charges_customer_id_fkey": "FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "true_up_charges_rerate_id_fkey": "FOREIGN KEY (rerate_id) REFERENCES rerates (id)",
}

FUNCTION = r"""
CREATE FUNCTION wallets_check_true_up_charge_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT n.customer_id INTO bad FROM (SELECT DISTINCT customer_id FROM new_rows) n
     WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = n.customer_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'true_up_charges reference customers: no customer %', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.rerate_id INTO bad FROM (SELECT DISTINCT rerate_id FROM new_rows WHERE rerate_id IS NOT NULL) n
     WHERE NOT EXISTS (SELECT 1 FROM rerates r WHERE r.id = n.rerate_id) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'true_up_charges reference rerates: no re-rate %', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
"""

TRIGGER = """CREATE TRIGGER true_up_charges_refs AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_true_up_charge_refs();
"""


def _tables() -> list[str]:
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())
    return ["true_up_charges", *(f"true_up_charges_l{k}" for k in range(lanes))]


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute("".join(TRIGGER.format(table=table) for table in _tables()))
    op.execute("".join(f"ALTER TABLE true_up_charges DROP CONSTRAINT {name};\n" for name in FOREIGN_KEYS))


def downgrade() -> None:
    op.execute("".join(f"DROP TRIGGER true_up_charges_refs ON {table};\n" for table in _tables()))
    op.execute("DROP FUNCTION wallets_check_true_up_charge_refs()")
    op.execute("".join(f"ALTER TABLE true_up_charges ADD CONSTRAINT {name} {definition};\n"
                       for name, definition in FOREIGN_KEYS.items()))
