"""Late captures: a capture that arrives after its reservation was settled or released (the SDK
spooled it, and the block's exit closed the reservation first) is usage that happened, and is
charged. The reservation keeps its status; only its charge total and capture count move forward.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

GUARD = r"""
CREATE OR REPLACE FUNCTION wallets_reservation_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.id, NEW.customer_id, NEW.request_id, NEW.request_hash, NEW.model, NEW.amount,
           NEW.dimensions, NEW.estimate, NEW.entry_id, NEW.created_at, NEW.expires_at)
          IS DISTINCT FROM
          (OLD.id, OLD.customer_id, OLD.request_id, OLD.request_hash, OLD.model, OLD.amount,
           OLD.dimensions, OLD.estimate, OLD.entry_id, OLD.created_at, OLD.expires_at)
       OR NEW.captured < OLD.captured OR NEW.released < OLD.released OR NEW.charged < OLD.charged
       OR NEW.captures < OLD.captures THEN
        RAISE EXCEPTION 'reservations: only status and running totals change, forward'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NOT (OLD.status = NEW.status AND OLD.status IN ('held', 'capturing', 'expired')
            OR OLD.status IN ('held', 'capturing')
               AND NEW.status IN ('capturing', 'settled', 'released', 'expired')
            OR OLD.status = 'expired' AND NEW.status = 'settled'{late}) THEN
        RAISE EXCEPTION 'reservation %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""
# A closed reservation's hold is gone: a late capture moves only what it charged and the count.
LATE = """
            OR OLD.status = NEW.status AND OLD.status IN ('settled', 'released')
               AND NEW.captured = OLD.captured AND NEW.released = OLD.released
               AND NEW.closed_at IS NOT DISTINCT FROM OLD.closed_at"""


def upgrade() -> None:
    op.execute(GUARD.replace("{late}", LATE))


def downgrade() -> None:
    op.execute(GUARD.replace("{late}", ""))
