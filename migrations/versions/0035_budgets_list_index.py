"""The budget listing's index: GET /v1/budgets pages live budgets by customer then id, from a
keyset position. Without an index in that order, each page sorted every live budget the filter
kept (30,000 budgets: a 100-row page 9 ms of sort in the database, 54 ms an answer); with
budgets_list a page reads its rows in order from where the last ended. On the partitioned parent,
so each lane's partition (and any added later) gets its own.

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX budgets_list ON budgets (customer_id, id) WHERE deleted_at IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX budgets_list")
