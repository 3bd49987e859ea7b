"""What a volume true-up gave back of each charge: `true_up_charges`.

A re-rate's correction of a closed period's volume true-up gives each charge's payers what the
charge is overcharged at the tier reached, less what the true-ups before gave back of it (the
close's, the earlier re-rates'). ec92fb3 kept that record in the close's and each re-rate's entry
metadata (`true_up_charges`). A re-rate whose lines net 0 posts no entry, so its record was kept
nowhere: the next re-rate counted the close's alone and gave the wrong payers the money back (a
top-up $1.10 and a grant $4.45 where $0.90 and $4.65 are due). And one entry carried one pair per
charge of the rule: a customer's 100,000 charges a month on a volume rule made megabytes of one
entry's metadata, in every export and journal page that includes it.

Now each is a row here, written in the batch of the close (`rerate_id` NULL) or of the re-rate
(with or without an entry): what it gave back of each charge of the rule (`units`, atomic units;
taken back: negative). A rule whose true-up kept the record and gave nothing back of any charge
has one row without a charge (`charge_id` NULL, 0): kept, nothing given, where a rule with no row
was not priced per charge (its correction shares its money back as before). Lane-partitioned like
every per-customer table, immutable (no UPDATE, DELETE or TRUNCATE). Entries written since ec92fb3
keep their metadata, which `store.true_up_given` still reads beside this table (no entry is
changed; nothing writes both).

Revision ID: 0068
Revises: 0067
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0068"
down_revision = "0067"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE true_up_charges (
    lane        smallint NOT NULL,
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    rule_id     text NOT NULL CHECK (rule_id <> ''),
    charge_id   bigint,                            -- NULL: the rule kept, nothing given back of any charge
    rerate_id   text REFERENCES rerates (id),      -- NULL: the period's close
    units       numeric(38, 0) NOT NULL,           -- atomic units given back (taken back: negative)
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (lane = ledger_lane(customer_id)),
    CHECK ((charge_id IS NULL) = (units = 0))
) PARTITION BY LIST (lane);
CREATE INDEX true_up_charges_period ON true_up_charges (lane, customer_id, period);
CREATE TRIGGER true_up_charges_immutable BEFORE UPDATE OR DELETE ON true_up_charges
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
"""

# Without the table the next re-rate of those periods would lose what their true-ups gave back.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM true_up_charges) THEN
        RAISE EXCEPTION 'true-ups kept what they gave back of each charge: a downgrade below 0068 would lose it'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
DROP TABLE true_up_charges;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar())
    op.execute("".join(f"CREATE TABLE true_up_charges_l{k} PARTITION OF true_up_charges FOR VALUES IN ({k});\n"
                       for k in range(lanes)))
    op.execute("".join(
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();\n"
        for name in ("true_up_charges", *(f"true_up_charges_l{k}" for k in range(lanes)))))


def downgrade() -> None:
    op.execute(DOWNGRADE)
