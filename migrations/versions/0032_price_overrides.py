"""Customer price overrides: contract prices, discounts and free allowances, versioned and
effective-dated like price books. The version in force at a usage's time rates it.

A customer's versions are numbered 1, 2, … and each takes effect after the one before it
(`effective_from` strictly later), so the version in force at any time never changes once
written: history is never rewritten. Rows are immutable (no UPDATE, DELETE or TRUNCATE). The
table carries its customer's lane, in its primary key, and is LIST-partitioned by it, as every
per-customer table is (README, Architecture: Lanes); wallet batches read it in their lane only.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE price_overrides (
    lane           smallint NOT NULL,
    customer_id    text NOT NULL REFERENCES customers (id),
    version        integer NOT NULL CHECK (version >= 1),
    effective_from timestamptz NOT NULL,
    body           jsonb NOT NULL CHECK (jsonb_typeof(body) = 'object'),
    body_hash      bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, customer_id, version),
    UNIQUE (lane, customer_id, effective_from),
    CHECK (lane = ledger_lane(customer_id))
) PARTITION BY LIST (lane);

-- Versions are appended in order: the next number, effective after every earlier version.
CREATE FUNCTION price_overrides_append() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last_version integer;
    last_from timestamptz;
BEGIN
    SELECT version, effective_from INTO last_version, last_from FROM price_overrides
     WHERE lane = NEW.lane AND customer_id = NEW.customer_id ORDER BY version DESC LIMIT 1;
    IF NEW.version <> coalesce(last_version, 0) + 1 OR NEW.effective_from <= last_from THEN
        RAISE EXCEPTION 'price_overrides: version % of % must follow version % and take effect after %',
            NEW.version, NEW.customer_id, coalesce(last_version, 0), last_from
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER price_overrides_append BEFORE INSERT ON price_overrides
    FOR EACH ROW EXECUTE FUNCTION price_overrides_append();
CREATE TRIGGER price_overrides_immutable BEFORE UPDATE OR DELETE ON price_overrides
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar())
    op.execute("".join(f"CREATE TABLE price_overrides_l{k} PARTITION OF price_overrides FOR VALUES IN ({k});\n"
                       for k in range(lanes)))
    op.execute("".join(
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();\n"
        for name in ("price_overrides", *(f"price_overrides_l{k}" for k in range(lanes)))))


def downgrade() -> None:
    op.execute("DROP TABLE price_overrides")
    op.execute("DROP FUNCTION price_overrides_append()")
