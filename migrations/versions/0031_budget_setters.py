"""Who set a budget: the operator (an admin key) or the customer (its own customer:<id> key).

A customer's key may create, change and delete its own budgets, but a budget the operator set
(a plan's quota, a hard cap agreed with the customer) only an admin may change or delete: before,
a customer key could raise or delete the cap set on it. Budgets made before this revision are
taken as the operator's (the safe side: an admin can still change them).

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE budgets ADD COLUMN set_by text NOT NULL DEFAULT 'operator' "
               "CONSTRAINT budgets_set_by CHECK (set_by IN ('operator', 'customer'))")


def downgrade() -> None:
    op.execute("ALTER TABLE budgets DROP COLUMN set_by")
