"""Usage event ids are scoped per customer, as reservations' request ids already are.

`usage_events` was keyed by `event_id` alone, so one customer's event id refused another's
(and told it the id existed). Its key becomes (customer_id, event_id), and `charges` refers to
an event by the same pair. Every row stays as it is, and so do API keys and journal entries:
an event recorded before keeps its id, and a replay of it is still a duplicate for its customer.

Going down needs every event id to be unique again: if two customers share one, the downgrade
stops and names it rather than drop either.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE charges DROP CONSTRAINT charges_event_id_fkey;
ALTER TABLE charges DROP CONSTRAINT charges_event_id_key;
ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey;
ALTER TABLE usage_events ADD CONSTRAINT usage_events_pkey PRIMARY KEY (customer_id, event_id);
ALTER TABLE charges ADD CONSTRAINT charges_event_key UNIQUE (customer_id, event_id);
ALTER TABLE charges ADD CONSTRAINT charges_event_fkey FOREIGN KEY (customer_id, event_id)
    REFERENCES usage_events (customer_id, event_id);
""")


def downgrade() -> None:
    op.execute("""
DO $$
DECLARE
    shared text;
BEGIN
    SELECT event_id INTO shared FROM usage_events GROUP BY event_id HAVING count(*) > 1 LIMIT 1;
    IF shared IS NOT NULL THEN
        RAISE EXCEPTION 'usage event id % is used by several customers; 0006 keys events by id alone',
            shared USING ERRCODE = 'unique_violation';
    END IF;
END $$;
ALTER TABLE charges DROP CONSTRAINT charges_event_fkey;
ALTER TABLE charges DROP CONSTRAINT charges_event_key;
ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey;
ALTER TABLE usage_events ADD CONSTRAINT usage_events_pkey PRIMARY KEY (event_id);
ALTER TABLE charges ADD CONSTRAINT charges_event_id_key UNIQUE (event_id);
ALTER TABLE charges ADD CONSTRAINT charges_event_id_fkey FOREIGN KEY (event_id)
    REFERENCES usage_events (event_id);
""")
