"""The charges rated ahead of their transaction's start (a usage event timed ahead of the server's
clock, by up to 300 s), indexed by book and usage time: a price book version that takes effect
"now" takes effect after the latest of them (wallets.books.add_version), so the version that
rated such an event is the one the book says was in force at its time. The index holds only
those charges (a partial index: its predicate is evaluated per insert, nothing more).

Revision ID: 0050
Revises: 0049
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0050"
down_revision = "0049"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX charges_ahead ON charges (price_book, occurred_at) WHERE occurred_at > created_at")


def downgrade() -> None:
    op.execute("DROP INDEX charges_ahead")
