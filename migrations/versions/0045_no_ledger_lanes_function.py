"""The SQL function `ledger_lanes()` (0009) is dropped: nothing calls it. The lane count is read
from `ledger_settings` (ledger.lanes.lane_count), and the lane functions that column defaults and
checks call (`ledger_lane`, `ledger_entry_lane`, `ledger_balance_lane`) carry the count in their
own bodies.

Downgrade recreates it from `ledger_settings`, as 0009 made it.

Revision ID: 0045
Revises: 0044
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0045"
down_revision = "0044"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP FUNCTION ledger_lanes()")


def downgrade() -> None:
    op.execute("""
DO $$
BEGIN
    EXECUTE format('CREATE FUNCTION ledger_lanes() RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE '
                   'AS %L', format('SELECT %s::smallint', (SELECT lanes FROM ledger_settings)));
END $$""")
