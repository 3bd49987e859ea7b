"""Reservation extensions: an open reservation's expiry may move later, and nothing else with it.

A gateway call (or an SDK block) that runs longer than its hold's TTL extends the reservation
(`POST /v1/reservations/{id}/extend`) so that the expiry job does not give its hold back while
the call is still running. The guard of 0003/0010 refused any change of `expires_at`; now an
UPDATE may set a later `expires_at` on a reservation that is held or capturing, as long as the
same UPDATE changes nothing else (status, running totals and closed_at as they were). An earlier
expiry, or a new one on a closed reservation, is still refused.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

GUARD = r"""
CREATE OR REPLACE FUNCTION wallets_reservation_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.id, NEW.customer_id, NEW.request_id, NEW.request_hash, NEW.model, NEW.amount,
           NEW.dimensions, NEW.estimate, NEW.entry_id, NEW.created_at{expiry_new})
          IS DISTINCT FROM
          (OLD.id, OLD.customer_id, OLD.request_id, OLD.request_hash, OLD.model, OLD.amount,
           OLD.dimensions, OLD.estimate, OLD.entry_id, OLD.created_at{expiry_old})
       OR NEW.captured < OLD.captured OR NEW.released < OLD.released OR NEW.charged < OLD.charged
       OR NEW.captures < OLD.captures THEN
        RAISE EXCEPTION 'reservations: only status and running totals change, forward'
            USING ERRCODE = 'restrict_violation';
    END IF;{extension}
    IF NOT (OLD.status = NEW.status AND OLD.status IN ('held', 'capturing', 'expired')
            OR OLD.status IN ('held', 'capturing')
               AND NEW.status IN ('capturing', 'settled', 'released', 'expired')
            OR OLD.status = 'expired' AND NEW.status = 'settled'
            OR OLD.status = NEW.status AND OLD.status IN ('settled', 'released')
               AND NEW.captured = OLD.captured AND NEW.released = OLD.released
               AND NEW.closed_at IS NOT DISTINCT FROM OLD.closed_at) THEN
        RAISE EXCEPTION 'reservation %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
"""
EXTENSION = r"""
    IF NEW.expires_at IS DISTINCT FROM OLD.expires_at
       AND NOT (NEW.expires_at > OLD.expires_at AND OLD.status IN ('held', 'capturing')
                AND (NEW.status, NEW.captured, NEW.released, NEW.charged, NEW.captures, NEW.closed_at)
                    IS NOT DISTINCT FROM
                    (OLD.status, OLD.captured, OLD.released, OLD.charged, OLD.captures, OLD.closed_at)) THEN
        RAISE EXCEPTION 'reservation %: only an open reservation''s expiry moves, later, and alone', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;"""


def upgrade() -> None:
    op.execute(GUARD.format(expiry_new="", expiry_old="", extension=EXTENSION))


def downgrade() -> None:  # 0010's guard: expires_at never changes (extended rows keep theirs)
    op.execute(GUARD.format(expiry_new=", NEW.expires_at", expiry_old=", OLD.expires_at", extension=""))
