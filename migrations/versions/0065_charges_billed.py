"""Charges by customer and billing period: `charges_billed`.

A re-rate reads what each account still has in the charges billed in the periods that billed a
period's usage (wallets.store.paid_left), under its lane's writer lock. It looked them up by
period with only `charges_customer` (customer, usage time) to go on, so it read every charge of
the customer's history: 354 ms at 300,000 charges (a seq scan of the lane's partition, 500,000
rows read for 12,236). Created on the partitioned parent: each lane's partition gets its own.

Revision ID: 0065
Revises: 0064
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0065"
down_revision = "0064"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX charges_billed ON charges (customer_id, period)")


def downgrade() -> None:
    op.execute("DROP INDEX charges_billed")
