"""API keys: random secrets stored as sha256 hashes, with a scope and optional customer list.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    secret_hash bytea NOT NULL UNIQUE,
    scope       text NOT NULL CHECK (scope IN ('admin', 'inference', 'auditor') OR scope ~ '^customer:.+$'),
    customers   text[] NOT NULL DEFAULT '{}',
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
""")


def downgrade() -> None:
    op.execute("DROP TABLE api_keys")
