"""A seal dated after a clock stepped back: the latest of the clock, the seal before it and its entries.

0081's seals_sealed_at refused a version 4 seal dated after clock_timestamp(), and the sealer
dated it by the clock: a database clock stepped back (NTP) below the last seal's date, or below an
entry recorded before the step, made every new seal refused ("before seal 1") and the seal job
error until the clock caught up, a sealing outage. The sealer now dates a seal
GREATEST(clock_timestamp(), the seal before it, its entries' latest recorded_at), and the guard
refuses a seal dated after the clock only when it is also after the seal before it and after
every entry it covers: ahead of the clock by what the order rules force, never more. The other
rules are 0081's. The covered entries' latest recorded_at is read only in that case (a clock
behind).

And the check for a covered entry recorded after the seal reads the covered range (txid index),
not the journal: 0081's `ORDER BY id LIMIT 1`, under the generic plan PL/pgSQL takes from a
session's 6th seal, walked the id index from the first entry ever written, every seal (with
1,000,000 entries sealed before and 50,000 in the seal: 600-830 ms a seal, where 30 ms before).

Revision ID: 0083
Revises: 0082
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0083"
down_revision = "0082"
branch_labels = None
depends_on = None

_HEAD = """
CREATE OR REPLACE FUNCTION seals_sealed_at_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE
    before_id bigint;
    before_at timestamptz;
    late bigint;
    late_at timestamptz;
BEGIN
"""
_ORDER = """
    IF NEW.sealed_at < before_at THEN
        RAISE EXCEPTION 'seal % is dated %, before seal % (%)', NEW.id, NEW.sealed_at, before_id, before_at
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT t.id, t.recorded_at INTO late, late_at FROM (
        SELECT j.id, j.recorded_at FROM journal_entries j
         WHERE j.txid >= NEW.from_txid AND j.txid < NEW.to_txid AND j.recorded_at > NEW.sealed_at
        OFFSET 0) t
     ORDER BY t.id LIMIT 1;
    IF late IS NOT NULL THEN
        RAISE EXCEPTION 'seal % is dated %, before entry % was recorded (%)', NEW.id, NEW.sealed_at, late, late_at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
"""
# OFFSET 0 keeps the covered range read by the txid index: 0081's ORDER BY id LIMIT 1 over the
# journal, once PL/pgSQL took the generic plan (the 6th seal of a session), walked the id index
# from the journal's first entry: every entry ever written, each seal (1,000,000 old: 600-830 ms).
_BEFORE = """
    SELECT s.id, s.sealed_at INTO before_id, before_at FROM seals s WHERE s.id < NEW.id ORDER BY s.id DESC LIMIT 1;
"""
# Ahead of the clock only as far as the seal before it or its latest entry forces.
_AHEAD = """
    IF NEW.sealed_at > clock_timestamp() AND NEW.sealed_at > coalesce(before_at, '-infinity')
       AND NEW.sealed_at > coalesce((SELECT max(j.recorded_at) FROM journal_entries j
                                      WHERE j.txid >= NEW.from_txid AND j.txid < NEW.to_txid), '-infinity') THEN
        RAISE EXCEPTION 'seal % is dated %, in the future', NEW.id, NEW.sealed_at
            USING ERRCODE = 'check_violation';
    END IF;
"""
# 0081's: refused after the clock, whatever the seal before it and the entries.
_FUTURE = """
    IF NEW.sealed_at > clock_timestamp() THEN
        RAISE EXCEPTION 'seal % is dated %, in the future', NEW.id, NEW.sealed_at
            USING ERRCODE = 'check_violation';
    END IF;
"""


def _guard(*parts: str) -> None:
    schema = op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()
    op.execute(_HEAD.format(schema=schema) + "".join(parts) + _ORDER)


def upgrade() -> None:
    _guard(_BEFORE, _AHEAD)


def downgrade() -> None:
    _guard(_FUTURE, _BEFORE)
