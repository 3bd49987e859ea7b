"""The webhook fan-out reads the outbox without writing to it.

0013 marked fanned-out events with `outbox.delivered_at`; a writer that inserts the same dedup
key again (a budget's once-per-window alert, say) after such an update, with an older snapshot,
fails with 40001 and retries its whole batch. Now each outbox row carries its writer's
transaction id, and the fan-out reads past a cursor over (txid, id), taking only rows of
transactions older than every open one: a row that commits later always lies past the cursor.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE outbox ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX outbox_fan_out ON outbox (txid, id);
CREATE TABLE webhook_fan_out (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    txid      xid8 NOT NULL,  -- every outbox row up to (txid, outbox_id) has been fanned out
    outbox_id bigint NOT NULL
);
-- Rows from before are read once more; those 0013 fanned out (delivered_at set) are skipped.
INSERT INTO webhook_fan_out (txid, outbox_id) VALUES ('0', 0);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS webhook_fan_out;
DROP INDEX IF EXISTS outbox_fan_out;
ALTER TABLE outbox DROP COLUMN IF EXISTS txid;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
