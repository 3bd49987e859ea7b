"""A grant revoked in whole is closed for good: `lots.revoked_at` records when.

Before, nothing recorded a whole revocation (the lot's row does not change; its remaining went to
0 through its account), so what came back to the lot afterwards (a released hold's piece, a
re-rate's money back, a settle below its hold) made it spendable again. The wallet rules now send
what comes back to such a lot to the promotions account the revocation credited.

The backfill closes each grant that a `grant_reversal` entry left at 0 (its account's balance
after that entry) and that still holds nothing; a grant that already took money back holds it
and stays open, to be revoked again by hand (that revocation closes it). The guard allows
`revoked_at` to be set once, before any expiry, and never changed.

Revision ID: 0048
Revises: 0047
Create Date: 2026-12-05
"""
from __future__ import annotations

from alembic import op

revision = "0048"
down_revision = "0047"
branch_labels = None
depends_on = None

_GUARD = """
CREATE OR REPLACE FUNCTION wallets_lot_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.expired_at IS NOT NULL
       OR (NEW.id, NEW.customer_id, NEW.kind, NEW.account_id, NEW.account_code, NEW.granted,
           NEW.priority, NEW.expires_at, NEW.reason, NEW.reference, NEW.entry_id, NEW.created_at)
          IS DISTINCT FROM
          (OLD.id, OLD.customer_id, OLD.kind, OLD.account_id, OLD.account_code, OLD.granted,
           OLD.priority, OLD.expires_at, OLD.reason, OLD.reference, OLD.entry_id, OLD.created_at)
       OR (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
       OR (NEW.revoked_at IS NOT NULL AND OLD.kind <> 'grant') THEN
        RAISE EXCEPTION 'lots: only the expiry and a grant''s whole revocation may be recorded, once'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$"""

_OLD_GUARD = """
CREATE OR REPLACE FUNCTION wallets_lot_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.expired_at IS NOT NULL
       OR (NEW.id, NEW.customer_id, NEW.kind, NEW.account_id, NEW.account_code, NEW.granted,
           NEW.priority, NEW.expires_at, NEW.reason, NEW.reference, NEW.entry_id, NEW.created_at)
          IS DISTINCT FROM
          (OLD.id, OLD.customer_id, OLD.kind, OLD.account_id, OLD.account_code, OLD.granted,
           OLD.priority, OLD.expires_at, OLD.reason, OLD.reference, OLD.entry_id, OLD.created_at) THEN
        RAISE EXCEPTION 'lots: only the expiry may be recorded, once' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$"""


def upgrade() -> None:
    op.execute("ALTER TABLE lots ADD COLUMN revoked_at timestamptz")
    op.execute(_GUARD)
    op.execute("""
UPDATE lots l SET revoked_at = w.at
  FROM (SELECT l.lane, l.id, min(j.occurred_at) AS at
          FROM lots l
          JOIN postings p ON p.lane = l.lane AND p.account_id = l.account_id
          JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id AND j.kind = 'grant_reversal'
         WHERE l.kind = 'grant' AND l.expired_at IS NULL
           AND (SELECT sum(q.amount) FROM postings q
                 WHERE q.lane = l.lane AND q.account_id = l.account_id AND q.entry_id <= j.id) = 0
         GROUP BY l.lane, l.id) w
 WHERE l.lane = w.lane AND l.id = w.id
   AND (SELECT coalesce(sum(q.amount), 0) FROM postings q
         WHERE q.lane = l.lane AND q.account_id = l.account_id) = 0""")


def downgrade() -> None:
    op.execute(_OLD_GUARD)
    op.execute("ALTER TABLE lots DROP COLUMN revoked_at")
