"""A price book version taking effect "now" is staged here, inside its own transaction.

Such a version takes effect at the time taken behind a fence of every lane's writer lock
(wallets.fence), which holds every lane's wallet batches until its commit. Its rules (a big book:
3,000 rules, 0.5 MB) are parsed into jsonb and stored here first, before the fence, and only
copied into `price_book_versions` behind it (a copy of the stored, compressed value: 0.3 ms, where
the INSERT of the text took 15 ms). The row is deleted by the statement that copies it, so no
row is ever committed: UNLOGGED (no WAL for it), and nothing reads it but that statement.

Revision ID: 0047
Revises: 0046
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0047"
down_revision = "0046"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE UNLOGGED TABLE price_book_version_drafts (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rules jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array')
)""")


def downgrade() -> None:
    op.execute("DROP TABLE price_book_version_drafts")
