"""Indexes for the journal's filters: its time order, and request ids.

The journal lists entries by (occurred_at, id); a time range or the first pages then read one
index range instead of every entry. A request id (a reservation's, in an entry's metadata, or a
usage event's id) is found through expression indexes instead of a scan. Measured on 200,000
entries (README, The journal).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX journal_entries_time ON journal_entries (occurred_at, id)")
    op.execute("CREATE INDEX journal_entries_request ON journal_entries ((metadata ->> 'request_id'))")
    op.execute("CREATE INDEX journal_entries_event ON journal_entries ((metadata ->> 'event_id')) "
               "WHERE kind = 'usage'")


def downgrade() -> None:
    for name in ("journal_entries_event", "journal_entries_request", "journal_entries_time"):
        op.execute(f"DROP INDEX {name}")
