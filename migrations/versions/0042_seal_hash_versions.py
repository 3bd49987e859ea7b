"""Seals record the version of their entry hashes, and new seals cover recorded_at.

An entry's hash (`ledger.chain.entry_digest`) left out `recorded_at`, when the entry was written:
a superuser with the triggers off, or anyone editing an export, could move it and every
verification passed. Hash version 2 covers it; version 1 is the hash as it was. `seals.hash_version`
says which one a seal's hashes were made with: 1 for every seal written before (the column's
default, so a sealer of 0041 still running during a deploy writes what it means), 2 for the seals
the sealer writes now. Verification, online and offline, hashes each seal's entries with its
version. The column is as immutable as the rest of a seal (`seals_immutable`, 0001), and only
1 and 2 are allowed.

Downgrade drops the column, keeping the versions other than 1 aside in `seal_hash_versions`
(immutable too), which the upgrade puts back and drops: down and up again, every seal keeps its
version, and the seals written meanwhile are version 1 (which is what a 0041 sealer writes). While
at 0041, that tokentill's `audit verify` hashes every seal with version 1 and so reports the
entries under version 2 seals as altered: upgrade again to verify them.

Revision ID: 0042
Revises: 0041
Create Date: 2026-12-04
"""
from __future__ import annotations

from alembic import op

revision = "0042"
down_revision = "0041"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE seals ADD COLUMN hash_version smallint NOT NULL DEFAULT 1
    CONSTRAINT seals_hash_version_known CHECK (hash_version IN (1, 2));
DO $$
BEGIN
    IF to_regclass('seal_hash_versions') IS NOT NULL THEN  -- kept aside by this migration's downgrade
        ALTER TABLE seals DISABLE TRIGGER seals_immutable;
        UPDATE seals s SET hash_version = v.hash_version FROM seal_hash_versions v WHERE v.seal_id = s.id;
        ALTER TABLE seals ENABLE TRIGGER seals_immutable;
        DROP TABLE seal_hash_versions;
    END IF;
END $$;
""")


def downgrade() -> None:
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM seals WHERE hash_version <> 1) THEN
        CREATE TABLE seal_hash_versions (seal_id bigint PRIMARY KEY, hash_version smallint NOT NULL);
        CREATE TRIGGER seal_hash_versions_immutable BEFORE UPDATE OR DELETE ON seal_hash_versions
            FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
        INSERT INTO seal_hash_versions SELECT id, hash_version FROM seals WHERE hash_version <> 1;
    END IF;
END $$;
ALTER TABLE seals DROP COLUMN hash_version;
""")
