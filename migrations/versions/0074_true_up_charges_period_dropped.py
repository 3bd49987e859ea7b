"""Drop `true_up_charges_period`: 0071's unique key serves its reads.

`true_up_charges_period (lane, customer_id, period)` (0068) is the first three columns of
`true_up_charges_once (lane, customer_id, period, rerate_id, rule_id, charge_id)` (0071), so every
read it served (store.true_up_given: one customer's period) is served by the unique key as well;
the table's other readers (`audit verify`) read it whole. It only cost each close's and re-rate's
write an index entry per row (a row per charge of a volume rule: 100,000 a month for a customer
with 100,000 charges). `lots_customer` (0067) stays: the generic plan of a wallet batch's load (a
session's PL/pgSQL function, `force_generic_plan`) reads the lots a hold came from by it; without
it that part read the lane's whole `lots` partition.

DROP INDEX on the partitioned parent takes ACCESS EXCLUSIVE on `true_up_charges` and its lane
partitions for the moment of the drop (nothing reads or writes the table but closes, re-rates and
verify). The downgrade builds it again (a SHARE lock on the partitions while it reads them).

Revision ID: 0074
Revises: 0073
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

from migrations.earlier import migration

revision = "0074"
down_revision = "0073"
branch_labels = None
depends_on = None

_INDEX = "CREATE INDEX true_up_charges_period ON true_up_charges (lane, customer_id, period);"


def upgrade() -> None:
    assert _INDEX in migration("0068_true_up_charges").SCHEMA, "0068 made true_up_charges_period otherwise"
    op.execute("DROP INDEX true_up_charges_period")


def downgrade() -> None:
    op.execute(_INDEX)
