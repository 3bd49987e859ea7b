"""Every INSERT into the outbox is announced on the channel tokentill_outbox at commit.

Webhook dispatchers listen on it and fan out as soon as an event is committed, instead of
polling the outbox every second whether or not anything was written; their poll is now a slow
fallback (retries falling due, leases running out, a listener that is down). A NOTIFY inside a
wallet batch's transaction is delivered only if it commits, and repeated ones in one transaction
are folded into one. Rows inserted into an outbox partition by name (raw SQL) are not announced;
the fallback poll finds them.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(r"""
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tokentill_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_announced AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
""")


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_announced ON outbox; DROP FUNCTION outbox_notify();")
