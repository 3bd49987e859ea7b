"""Period-to-date usage per customer and price rule: what graduated tiers are applied to.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(r"""
-- Units rated per customer, billing period (calendar month, UTC, of the usage time), price book
-- and rule. Rebuildable from charges; the audit checks that they agree.
CREATE TABLE usage_counters (
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    book_id     text NOT NULL,
    rule_id     text NOT NULL,
    quantity    numeric(38, 0) NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (customer_id, period, book_id, rule_id)
);
""")


def downgrade() -> None:
    op.execute("DROP TABLE usage_counters")
