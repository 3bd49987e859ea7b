"""The usage fold finds each queued charge by its primary key (lane, id) alone.

0026's fold looked each queued charge up by `lane = ... AND id = ... AND customer_id = ...`. With
both `charges_pkey` (lane, id) and `charges_event_key` (lane, customer_id, event_id) matching two
of those columns, the planner took the second whenever it guessed them alike (a fresh or
unanalyzed table, or a customer it thought small), and every probe then read all of the customer's
charges: one wallet with a few thousand charges folded its 256 queued charges in 100-450 ms, a
read that grew with every charge (measured with auto_explain: "Rows Removed by Filter: 640" a
probe, 0.36 ms each). The charge id is unique in its lane and a queue row names its own charge's
customer (only the charges' trigger writes the queue), so the customer adds nothing to the probe.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

SIGNATURE = "wallets_fold_usage(smallint)"
OLD = """SELECT * FROM charges c WHERE c.lane = %1$s AND c.id = g.charge_id
                                             AND c.customer_id = g.customer_id LIMIT 1"""
NEW = """SELECT * FROM charges c WHERE c.lane = %1$s AND c.id = g.charge_id LIMIT 1"""


def _rewrite(old: str, new: str) -> None:
    conn = op.get_bind()
    definition = conn.exec_driver_sql(f"SELECT pg_get_functiondef('{SIGNATURE}'::regprocedure)").scalar_one()
    assert definition.count(old) == 1, "wallets_fold_usage is not the function this migration rewrites"
    op.execute(definition.replace(old, new))


def upgrade() -> None:
    _rewrite(OLD, NEW)


def downgrade() -> None:
    _rewrite(NEW, OLD)
