"""Hash version 3: an entry's hash covers each posting's asset.

Versions 1 and 2 hash each posting as [id, account code, stripe, amount]: the account code, not
its currency. A superuser who turned every USD account into EUR (triggers off), or anyone who did
so throughout an export (account records and postings' assets), left every entry balanced and
every hash intact: `audit verify` and the offline verifier passed. Version 3 hashes each posting
as [id, account code, stripe, amount, asset] (after recorded_at, as 2), and the sealer writes it
from now on; older seals keep their version and verify as before. Only 1, 2 and 3 are allowed.

Downgrade keeps the versions 3 aside in `seal_hash_versions_3` (immutable) and relabels those
seals 2, which the upgrade undoes: down and up again, every seal keeps its version. While at 0075,
that tokentill hashes them as version 2 and so reports their entries as altered: upgrade again to
verify them (as 0042 did for version 2 at 0041).

Revision ID: 0076
Revises: 0075
Create Date: 2026-12-06
"""
from __future__ import annotations

from alembic import op

revision = "0076"
down_revision = "0075"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
ALTER TABLE seals DROP CONSTRAINT seals_hash_version_known,
    ADD CONSTRAINT seals_hash_version_known CHECK (hash_version IN (1, 2, 3));
DO $$
BEGIN
    IF to_regclass('seal_hash_versions_3') IS NOT NULL THEN  -- kept aside by this migration's downgrade
        ALTER TABLE seals DISABLE TRIGGER seals_immutable;
        UPDATE seals s SET hash_version = v.hash_version FROM seal_hash_versions_3 v WHERE v.seal_id = s.id;
        ALTER TABLE seals ENABLE TRIGGER seals_immutable;
        DROP TABLE seal_hash_versions_3;
    END IF;
END $$;
""")


def downgrade() -> None:
    op.execute("""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM seals WHERE hash_version = 3) THEN
        CREATE TABLE seal_hash_versions_3 (seal_id bigint PRIMARY KEY, hash_version smallint NOT NULL);
        CREATE TRIGGER seal_hash_versions_3_immutable BEFORE UPDATE OR DELETE ON seal_hash_versions_3
            FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
        INSERT INTO seal_hash_versions_3 SELECT id, hash_version FROM seals WHERE hash_version = 3;
        ALTER TABLE seals DISABLE TRIGGER seals_immutable;
        UPDATE seals SET hash_version = 2 WHERE hash_version = 3;
        ALTER TABLE seals ENABLE TRIGGER seals_immutable;
    END IF;
END $$;
ALTER TABLE seals DROP CONSTRAINT seals_hash_version_known,
    ADD CONSTRAINT seals_hash_version_known CHECK (hash_version IN (1, 2));
""")
