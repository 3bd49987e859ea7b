"""Re-rate adjustments by customer: `charge_adjustments_customer`.

The usage report adds what re-rates moved of a customer's charges to their amounts, so it looks
up a customer's adjustments on every read; without this index that was a scan of every
customer's.

Revision ID: 0053
Revises: 0052
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0053"
down_revision = "0052"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX charge_adjustments_customer ON charge_adjustments (customer_id, lane, charge_id)")


def downgrade() -> None:
    op.execute("DROP INDEX charge_adjustments_customer")
