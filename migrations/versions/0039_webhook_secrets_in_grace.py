"""Webhook endpoints keep every rotated-out signing secret still in its grace, not only the last
one: a second rotation within a day cut the first rotated-out secret short, though the first
rotation's answer had promised it a day of signing, and a receiver still on it lost every event.

`previous_secret` and `previous_secret_until` become two arrays, `previous_secrets` and
`previous_secrets_until` (latest end first, at most 5), each secret checked as before. The
downgrade keeps, of those, the one whose grace ends last (what the older code signs with).

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE FUNCTION webhook_secrets_valid(secrets text[]) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT coalesce(bool_and(s IS NOT NULL AND s ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'), true)
           FROM unnest(secrets) AS s$$;

ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secrets text[] NOT NULL DEFAULT '{}'
        CHECK (webhook_secrets_valid(previous_secrets) AND cardinality(previous_secrets) <= 5),
    ADD COLUMN previous_secrets_until timestamptz[] NOT NULL DEFAULT '{}'
        CHECK (array_position(previous_secrets_until, NULL) IS NULL),
    ADD CHECK (cardinality(previous_secrets) = cardinality(previous_secrets_until)),
    ADD CHECK (status <> 'deleted' OR cardinality(previous_secrets) = 0);

UPDATE webhook_endpoints SET previous_secrets = ARRAY[previous_secret],
                             previous_secrets_until = ARRAY[previous_secret_until]
 WHERE previous_secret IS NOT NULL;

-- their CHECKs go with them
ALTER TABLE webhook_endpoints DROP COLUMN previous_secret, DROP COLUMN previous_secret_until;
"""

DOWNGRADE = r"""
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    ADD COLUMN previous_secret_until timestamptz,
    ADD CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));

UPDATE webhook_endpoints e SET (previous_secret, previous_secret_until) = (
    SELECT s, u FROM unnest(e.previous_secrets, e.previous_secrets_until) AS k(s, u) ORDER BY u DESC LIMIT 1)
 WHERE cardinality(e.previous_secrets) > 0;

ALTER TABLE webhook_endpoints DROP COLUMN previous_secrets, DROP COLUMN previous_secrets_until;
DROP FUNCTION webhook_secrets_valid(text[]);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
