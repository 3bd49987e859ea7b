"""Since when every kept usage hash reads its times as instants: `ledger_settings.instant_hashes_since`.

A usage event's request hash, and a usage batch's Idempotency-Key hash, read each timestamp as the
instant it names (c1c9c09, 8ef7fcc; to the 9 digits of its fraction since e8ee375). Records kept
by a version before those hashed the text as sent (or the instant to the microsecond), so the
route looks for such a hash among the body's respellings where an event or key is met with
another hash: up to 2,161 sha256 of an event's body, 181-182 of a keyed batch's. A record written
by a version at 0080 or later never holds one, and is not searched: the route compares its
`created_at` with this setting, read with it (no further query).

The setting is the time this migration ran (the column's default, evaluated once for the one row:
no UPDATE of the immutable row); every record created before it may be of the older format,
conservatively, including those written by versions between c1c9c09 and 0079. A database created
now gets the time it was made: none of its records is searched. Downgrade drops the column; an
upgrade after it takes the later time (more records searched, none fewer).

Revision ID: 0080
Revises: 0079
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0080"
down_revision = "0079"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE ledger_settings ADD COLUMN instant_hashes_since timestamptz NOT NULL DEFAULT now();
ALTER TABLE ledger_settings ALTER COLUMN instant_hashes_since DROP DEFAULT;
COMMENT ON COLUMN ledger_settings.instant_hashes_since IS
    'usage events and keys created from here on hash their times as instants (migration 0080)';
""")


def downgrade() -> None:
    op.execute("ALTER TABLE ledger_settings DROP COLUMN instant_hashes_since")
