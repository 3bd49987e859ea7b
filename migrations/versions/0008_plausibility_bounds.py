"""Plausibility bounds: a price book version may carry a maximum charge per request and a
context window (stored as posted, beside its rules), and a customer may override the maximum
charge. Both are optional: versions and customers stored before keep none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A column with a constant default is added without rewriting rows, so the versions'
    # immutability trigger (BEFORE UPDATE) is not involved.
    op.execute("""
ALTER TABLE price_book_versions ADD COLUMN plausibility jsonb NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(plausibility) = 'object');
ALTER TABLE customers ADD COLUMN max_charge_per_request numeric(38, 0)
    CHECK (max_charge_per_request > 0);
""")


def downgrade() -> None:
    op.execute("""
ALTER TABLE customers DROP COLUMN max_charge_per_request;
ALTER TABLE price_book_versions DROP COLUMN plausibility;
""")
