"""What a volume true-up gave back of each charge, by payer: `true_up_payers`.

`true_up_charges` (0068) keeps what a close's true-up, or a re-rate's correction of it, gave back
of each charge, not how that was split between the charge's payers. A charge paid by two lots (a
top-up that ran out mid-charge and the next one, a grant and a top-up) got its part back the last
consumed first, each lot up to what it paid; a later re-rate counted the charge's total alone and
gave each lot back up to what it paid again, the close's share of it forgotten: a $5.00 top-up
that paid $0.20 of a charge and got its $0.20 back at the close got $0.20 more, $4.85 where $4.65
was due and the other lot $0.20 short.

Now each true-up (close: `rerate_id` NULL) also writes here, in the same batch, what each payer got
of each charge it gave back (or took back: negative) something of, over all the true-up's rules:
`payer`, the lot's account or the receivable. What none of the charge's payers took (a part its
payers had no room for, shared over the rule's other payers; a re-rate's part netted with the
charge's own increase; a take back none of them could give, paid like usage) is a row without a
payer. So a true-up's rows of a charge sum to its `true_up_charges` rows of it (every rule), and
the next correction gives (takes) back of each payer by what it got so far.

Rows written before 0082 have no payers here: for a charge a true-up gave back something of
without rows here, which payer got what is not known, and the re-rates read it as before (the
receivable first, then the lots the last consumed first, each up to what it paid: the close's own
order, which a re-rate that gave a lot back more than its share did not follow).

Lane-partitioned, immutable (no UPDATE, DELETE, TRUNCATE), its references to customers and
re-rates checked once per statement (0075's function). The downgrade refuses to drop rows.

Revision ID: 0082
Revises: 0081
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0082"
down_revision = "0081"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE true_up_payers (
    lane        smallint NOT NULL,
    customer_id text NOT NULL,
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    rerate_id   text,                               -- NULL: the period's close
    charge_id   bigint NOT NULL,
    payer       text CHECK (payer <> ''),           -- NULL: none of the charge's payers
    units       numeric(38, 0) NOT NULL CHECK (units <> 0),  -- given back (taken back: negative)
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (lane = ledger_lane(customer_id))
) PARTITION BY LIST (lane);
CREATE UNIQUE INDEX true_up_payers_once
    ON true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer) NULLS NOT DISTINCT;
CREATE TRIGGER true_up_payers_immutable BEFORE UPDATE OR DELETE ON true_up_payers
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
"""

TRIGGERS = """CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER true_up_payers_refs AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION wallets_check_true_up_charge_refs();
"""

# Without the table the next re-rate would give each payer back as if it had got nothing yet.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM true_up_payers) THEN
        RAISE EXCEPTION 'true-ups kept what each payer got back of each charge: a downgrade below 0082 would lose it'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
DROP TABLE true_up_payers;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())
    op.execute("".join(f"CREATE TABLE true_up_payers_l{k} PARTITION OF true_up_payers FOR VALUES IN ({k});\n"
                       for k in range(lanes)))
    op.execute("".join(TRIGGERS.format(table=table)
                       for table in ("true_up_payers", *(f"true_up_payers_l{k}" for k in range(lanes)))))


def downgrade() -> None:
    op.execute(DOWNGRADE)
