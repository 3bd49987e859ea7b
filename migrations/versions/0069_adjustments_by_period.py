"""Re-rate adjustments by customer and period: `charge_adjustments_period`.

A money budget made part-way through its window counts the re-rates of its window's calls so far
(wallets.budget_seeding), under its lane's writer lock. It read every adjustment of the customer,
with their charges and reservations, whatever the window: a month budget of a customer with 70,969
adjustments (50,000 of its 300,000 charges, re-rated) scanned the lane's whole charges and
reservations partitions (856 ms). An adjustment names the period of its charge's usage, a period is
named by the month it starts in and lasts a month, so a call of the window is in a period named at
the earliest the month before the window's: the read now starts there, on this index. Not
partitioned (as `charge_adjustments`); IF NOT EXISTS: one built beforehand with CONCURRENTLY (README,
Migrations) is kept.

Revision ID: 0069
Revises: 0068
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0069"
down_revision = "0068"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS charge_adjustments_period ON charge_adjustments (customer_id, lane, period)")


def downgrade() -> None:
    op.execute("DROP INDEX charge_adjustments_period")
