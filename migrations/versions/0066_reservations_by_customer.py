"""Reservations by customer and time: `reservations_customer`.

A budget made part-way through its window counts the customer's calls held in it
(wallets.budget_seeding), under its lane's writer lock. No index led by the customer and the time
of a reservation existed, so it scanned the lane's whole partition: making a month budget read
400,000 reservations (two scans, 130 and 116 ms) for its month's 8,000. Created on the partitioned
parent: each lane's partition gets its own.

Revision ID: 0066
Revises: 0065
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0066"
down_revision = "0065"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX reservations_customer ON reservations (customer_id, created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX reservations_customer")
