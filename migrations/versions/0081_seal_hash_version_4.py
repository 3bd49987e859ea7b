"""Hash version 4: a seal's chain hash covers its sealed_at, and the database checks its date.

An auditor reads a seal's sealed_at as "these entries existed by then", yet no hash covered it: a
superuser with the triggers off (or anyone editing an export) could move it and both
verifications passed. And it was the sealer's transaction start (the column's default now()),
while a seal covers what committed before its first statement: an entry written in between was
sealed dated before it was recorded, and a seal taken meanwhile by another sealer made the dates
go backwards. Version 4 hashes entries as 3 does and chains sealed_at after them
(`ledger.chain.seal_chain`); the sealer dates a seal when it writes it (clock_timestamp()). A
version 4 seal is refused (`seals_sealed_at`) when it is dated after the database's clock, before
the seal before it, or before any entry it covers was recorded. Older seals keep their version
and verify as before; only 1 to 4 are allowed.

Downgrade keeps the versions 4 aside in `seal_hash_versions_4` (immutable) and relabels those
seals 3, which the upgrade undoes (as 0076 did for 3 at 0075): down and up again, every seal
keeps its version. While at 0080, that tokentill chains them as version 3 and so reports their
chain hashes as not matching: upgrade again to verify them. Down to base, 0001 drops the table.

Revision ID: 0081
Revises: 0080
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0081"
down_revision = "0080"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()
    op.execute(f"""
ALTER TABLE seals DROP CONSTRAINT seals_hash_version_known,
    ADD CONSTRAINT seals_hash_version_known CHECK (hash_version IN (1, 2, 3, 4));
CREATE FUNCTION seals_sealed_at_guard() RETURNS trigger LANGUAGE plpgsql
SET search_path = {schema}, pg_temp AS $$
DECLARE
    before_id bigint;
    before_at timestamptz;
    late bigint;
    late_at timestamptz;
BEGIN
    IF NEW.sealed_at > clock_timestamp() THEN
        RAISE EXCEPTION 'seal % is dated %, in the future', NEW.id, NEW.sealed_at
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT s.id, s.sealed_at INTO before_id, before_at FROM seals s WHERE s.id < NEW.id ORDER BY s.id DESC LIMIT 1;
    IF NEW.sealed_at < before_at THEN
        RAISE EXCEPTION 'seal % is dated %, before seal % (%)', NEW.id, NEW.sealed_at, before_id, before_at
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT j.id, j.recorded_at INTO late, late_at FROM journal_entries j
     WHERE j.txid >= NEW.from_txid AND j.txid < NEW.to_txid AND j.recorded_at > NEW.sealed_at
     ORDER BY j.id LIMIT 1;
    IF late IS NOT NULL THEN
        RAISE EXCEPTION 'seal % is dated %, before entry % was recorded (%)', NEW.id, NEW.sealed_at, late, late_at
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER seals_sealed_at BEFORE INSERT ON seals
    FOR EACH ROW WHEN (NEW.hash_version >= 4) EXECUTE FUNCTION seals_sealed_at_guard();
DO $$
BEGIN
    IF to_regclass('seal_hash_versions_4') IS NOT NULL THEN  -- kept aside by this migration's downgrade
        ALTER TABLE seals DISABLE TRIGGER seals_immutable;
        UPDATE seals s SET hash_version = v.hash_version FROM seal_hash_versions_4 v WHERE v.seal_id = s.id;
        ALTER TABLE seals ENABLE TRIGGER seals_immutable;
        DROP TABLE seal_hash_versions_4;
    END IF;
END $$;
""")


def downgrade() -> None:
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM seals WHERE hash_version = 4) THEN
        CREATE TABLE seal_hash_versions_4 (seal_id bigint PRIMARY KEY, hash_version smallint NOT NULL);
        CREATE TRIGGER seal_hash_versions_4_immutable BEFORE UPDATE OR DELETE ON seal_hash_versions_4
            FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
        INSERT INTO seal_hash_versions_4 SELECT id, hash_version FROM seals WHERE hash_version = 4;
        ALTER TABLE seals DISABLE TRIGGER seals_immutable;
        UPDATE seals SET hash_version = 3 WHERE hash_version = 4;
        ALTER TABLE seals ENABLE TRIGGER seals_immutable;
    END IF;
END $$;
DROP TRIGGER seals_sealed_at ON seals;
DROP FUNCTION seals_sealed_at_guard();
ALTER TABLE seals DROP CONSTRAINT seals_hash_version_known,
    ADD CONSTRAINT seals_hash_version_known CHECK (hash_version IN (1, 2, 3));
""")
