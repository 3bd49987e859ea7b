"""The outbox by the id its events are delivered under: `outbox_event_id`.

A re-drive of one event (`POST /v1/webhook-endpoints/{id}/redrive {"event_id"}`) of an event the
endpoint was never handed (one from before it subscribed), or of an id that is no event (a 404) or
another topic's (a 422), looked the id up in the outbox by `webhook_event_id(lane, dedup_key,
payload)`, which no index held: each lookup scanned every lane's whole outbox, which is never pruned
(20,000 rows: 111 ms; 5.6 us a row). Created on the partitioned parent: each lane's partition gets
its own.

Revision ID: 0077
Revises: 0076
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0077"
down_revision = "0076"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX outbox_event_id ON outbox (webhook_event_id(lane, dedup_key, payload))")


def downgrade() -> None:
    op.execute("DROP INDEX outbox_event_id")
