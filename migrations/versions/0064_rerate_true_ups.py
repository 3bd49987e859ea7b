"""What a re-rate that posted no entry corrected of a closed period's volume true-ups: `rerate_true_ups`.

A re-rate keeps its corrections of a closed period's true-ups (and of the free allowances' share
of their money back) in its entry's metadata (`true_ups`), which `POST /v1/rerate`'s answer reads.
One whose lines net 0 posts no entry, so its answer left them out: a $20.00 allowance's period
re-rated to a quarter of its prices answered -3.00 (the charges' rows) where it moved nothing
(-3.00 + 7.50 on the true-up - 4.50 on the allowance's share), as the preview said. Such a re-rate
now keeps them here, one row per customer and billing period it corrected ([period, rule, model,
old, new] each, as the metadata's), immutable like its adjustments; a re-rate that posted an entry
keeps them in the entry alone.

Revision ID: 0064
Revises: 0063
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0064"
down_revision = "0063"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE rerate_true_ups (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lane        smallint NOT NULL,
    rerate_id   text NOT NULL REFERENCES rerates (id),
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    true_ups    jsonb NOT NULL CHECK (jsonb_typeof(true_ups) = 'array' AND jsonb_array_length(true_ups) > 0),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rerate_true_ups_rerate ON rerate_true_ups (rerate_id, customer_id);
CREATE TRIGGER rerate_true_ups_immutable BEFORE UPDATE OR DELETE ON rerate_true_ups
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER rerate_true_ups_no_truncate BEFORE TRUNCATE ON rerate_true_ups
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

# Without the table those re-rates' answers would lose what they corrected: refused while any is kept.
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM rerate_true_ups) THEN
        RAISE EXCEPTION 're-rates kept their true-up corrections: a downgrade below 0064 would lose them'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
DROP TABLE rerate_true_ups;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
