"""Re-rating after customer price overrides change: a charge is corrected at most once per book
version *and* version of its customer's overrides (the one in force at its usage time), so a
second backdated override version re-rates charges a re-rate already corrected with that book
version; and a re-rate is named by the overrides it rates with too (`rerates.overrides`, a digest
of the override versions of the customers in its scope; '' when none), so the same book,
version, range and customer filter after another override change is a new re-rate, with entries
and credit notes of its own.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE rerates ADD COLUMN overrides text NOT NULL DEFAULT '';
ALTER TABLE rerates DROP CONSTRAINT rerates_book_id_version_range_from_range_to_customer_filter_key;
ALTER TABLE rerates ADD CONSTRAINT rerates_identity UNIQUE
    (book_id, version, range_from, range_to, customer_filter, overrides);
ALTER TABLE charge_adjustments ADD COLUMN overrides_version integer NOT NULL DEFAULT 0
    CHECK (overrides_version >= 0);  -- 0: no overrides in force at the charge's usage time
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_pkey;
ALTER TABLE charge_adjustments ADD PRIMARY KEY (charge_id, corrected_version, overrides_version);
"""

# A re-rate that rated with overrides cannot be told apart from another without this column:
# going below 0033 is refused while one exists (adjustments are immutable records of money moved).
DOWNGRADE = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM rerates WHERE overrides <> '')
       OR EXISTS (SELECT 1 FROM charge_adjustments WHERE overrides_version <> 0) THEN
        RAISE EXCEPTION 're-rates with price overrides were applied: a downgrade below 0033 would lose which '
                        'overrides version corrected each charge' USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
ALTER TABLE charge_adjustments DROP CONSTRAINT charge_adjustments_pkey;
ALTER TABLE charge_adjustments ADD PRIMARY KEY (charge_id, corrected_version);
ALTER TABLE charge_adjustments DROP COLUMN overrides_version;
ALTER TABLE rerates DROP CONSTRAINT rerates_identity;
ALTER TABLE rerates ADD CONSTRAINT rerates_book_id_version_range_from_range_to_customer_filter_key UNIQUE
    (book_id, version, range_from, range_to, customer_filter);
ALTER TABLE rerates DROP COLUMN overrides;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
