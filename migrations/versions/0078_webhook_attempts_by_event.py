"""An endpoint's attempts by event: `webhook_attempts_event`.

`GET /v1/webhook-endpoints/{id}/attempts?event_id=` (why did this event not arrive?) had only the
endpoint's log index (endpoint_id, id): it read the endpoint's attempts back from the newest until
it had the event's, all of them for an old event (2,000 rows for the oldest of 2,000 events; an
endpoint's attempts are never pruned). The deliveries have theirs (unique endpoint_id, event_id).

Revision ID: 0078
Revises: 0077
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0078"
down_revision = "0077"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX webhook_attempts_event ON webhook_attempts (endpoint_id, event_id, id)")


def downgrade() -> None:
    op.execute("DROP INDEX webhook_attempts_event")
