"""Every change to api_keys is announced on the channel tokentill_api_keys at commit.

Processes cache the keys they have verified while they listen on this channel, and forget them
when it speaks (a revocation, an edit, a delete, even one made with raw SQL).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(r"""
CREATE FUNCTION api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tokentill_api_keys', CASE WHEN TG_LEVEL = 'ROW' THEN OLD.id ELSE '' END);
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_notify();
CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify();
""")


def downgrade() -> None:
    op.execute("""
DROP TRIGGER api_keys_truncated ON api_keys;
DROP TRIGGER api_keys_changed ON api_keys;
DROP FUNCTION api_keys_notify();
""")
