"""Billing periods and invoices: each customer's cycle (IANA time zone, anchor day, grace window,
payment terms) and first open period; per-period rollups kept with the entries (partitioned by
lane, like every write-path table); finalized invoices, immutable and numbered without gaps per
issuer and year; payments of invoices.

Customers that exist already get calendar months in UTC, their open period being the one they
were created in.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# The customers guard of 0003 ({cycle} empty), and this migration's cycle check.
GUARD = r"""
CREATE OR REPLACE FUNCTION wallets_customer_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.id IS DISTINCT FROM OLD.id OR NEW.currency IS DISTINCT FROM OLD.currency
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'customers: id, currency and created_at never change'
            USING ERRCODE = 'restrict_violation';
    END IF;{cycle}
    RETURN NEW;
END $$;
"""
CYCLE = r"""
    IF NEW.time_zone IS DISTINCT FROM OLD.time_zone OR NEW.billing_anchor_day IS DISTINCT FROM OLD.billing_anchor_day
       OR NEW.open_period_start < OLD.open_period_start THEN
        RAISE EXCEPTION 'customers: the billing cycle never changes, and periods close forward only'
            USING ERRCODE = 'restrict_violation';
    END IF;"""

SCHEMA = r"""
ALTER TABLE customers
    ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    ADD COLUMN billing_anchor_day smallint CHECK (billing_anchor_day BETWEEN 1 AND 31),
    ADD COLUMN grace_seconds int NOT NULL DEFAULT 3600 CHECK (grace_seconds BETWEEN 0 AND 2678400),
    ADD COLUMN payment_terms_days smallint NOT NULL DEFAULT 30 CHECK (payment_terms_days BETWEEN 0 AND 365),
    ADD COLUMN open_period_start timestamptz,
    ADD COLUMN next_close_at timestamptz;
UPDATE customers
   SET open_period_start = date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       next_close_at = (date_trunc('month', created_at AT TIME ZONE 'UTC') + interval '1 month')
                       AT TIME ZONE 'UTC' + interval '1 hour';
-- A customer inserted without them (raw SQL) starts in the current UTC month.
ALTER TABLE customers
    ALTER COLUMN open_period_start SET NOT NULL,
    ALTER COLUMN open_period_start SET DEFAULT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
    ALTER COLUMN next_close_at SET NOT NULL,
    ALTER COLUMN next_close_at SET DEFAULT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')
                                          AT TIME ZONE 'UTC' + interval '1 hour';
CREATE INDEX customers_close_due ON customers (next_close_at);

-- The cycle never changes (periods already billed would move); periods close forward only.
{guard}
-- The billing period (local year-month it starts in) of an instant, by a customer's cycle: the
-- SQL twin of wallets.periods.period_of, for the audit's checks.
CREATE FUNCTION wallets_period_label(at timestamptz, tz text, anchor smallint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(CASE WHEN s.l < s.m + (least(coalesce(anchor, 1),
                                                 extract(day FROM s.m + interval '1 month' - interval '1 day')::int)
                                           - 1) * interval '1 day'
                        THEN s.m - interval '1 month' ELSE s.m END, 'YYYY-MM')
      FROM (SELECT at AT TIME ZONE tz AS l, date_trunc('month', at AT TIME ZONE tz) AS m) s
$$;

-- What each customer's entries added to a billing period (wallets/core/billing.py names the
-- items), written in the same statement as the entries' other rows. Rebuildable from the
-- postings (the period is in each entry's metadata); `audit verify` checks that they agree.
CREATE TABLE period_rollups (
    lane        smallint NOT NULL DEFAULT 0,
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    item        text NOT NULL CHECK (length(item) BETWEEN 1 AND 2000),
    quantity    numeric(38, 0) NOT NULL DEFAULT 0,
    amount      numeric(38, 0) NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, customer_id, period, item)
) PARTITION BY LIST (lane);

-- A finalized invoice: frozen. Its number is the next of its issuer and year, without gaps
-- (a trigger checks), and its content hash is the sha256 of its content as PostgreSQL prints it.
CREATE TABLE invoices (
    id            text PRIMARY KEY,
    lane          smallint NOT NULL,
    customer_id   text NOT NULL REFERENCES customers (id),
    period        text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL CHECK (period_end > period_start),
    issuer        text NOT NULL CHECK (issuer ~ '^[A-Z][A-Z0-9]{0,15}$'),
    year          int NOT NULL CHECK (year BETWEEN 2000 AND 9999),
    seq           bigint NOT NULL CHECK (seq > 0),
    number        text NOT NULL UNIQUE,
    currency      text NOT NULL REFERENCES assets (code),
    total         numeric(38, 0) NOT NULL,
    amount_due    numeric(38, 0) NOT NULL CHECK (amount_due >= 0),
    due_at        timestamptz NOT NULL,
    content       jsonb NOT NULL CHECK (jsonb_typeof(content) = 'object'),
    content_hash  bytea NOT NULL,
    true_up_entry_id bigint,
    finalized_at  timestamptz NOT NULL,
    UNIQUE (customer_id, period),
    UNIQUE (issuer, year, seq),
    CHECK (number = issuer || '-' || lpad(year::text, 4, '0') || '-' || lpad(seq::text, 6, '0')),
    CHECK (content_hash = sha256(convert_to(content::text, 'UTF8'))),
    CHECK (content ->> 'number' = number AND content ->> 'id' = id AND content ->> 'total' IS NOT NULL)
);
CREATE INDEX invoices_customer ON invoices (customer_id, period_start);
CREATE FUNCTION wallets_invoice_gapless() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    SELECT max(seq) INTO last FROM invoices WHERE issuer = NEW.issuer AND year = NEW.year;
    IF NEW.seq <> coalesce(last, 0) + 1 THEN
        RAISE EXCEPTION 'invoice %: number % of % % would leave a gap (last is %)', NEW.id, NEW.seq,
            NEW.issuer, NEW.year, coalesce(last, 0) USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_gapless BEFORE INSERT ON invoices
    FOR EACH ROW EXECUTE FUNCTION wallets_invoice_gapless();
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

CREATE TABLE invoice_payments (
    id          text PRIMARY KEY,
    lane        smallint NOT NULL,
    invoice_id  text NOT NULL REFERENCES invoices (id),
    customer_id text NOT NULL REFERENCES customers (id),
    amount      numeric(38, 0) NOT NULL CHECK (amount > 0),
    reference   text NOT NULL CHECK (length(reference) BETWEEN 1 AND 500),
    entry_id    bigint NOT NULL,
    created_at  timestamptz NOT NULL,
    UNIQUE (invoice_id, reference)
);
CREATE TRIGGER invoice_payments_immutable BEFORE UPDATE OR DELETE ON invoice_payments
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
-- No invoice is paid beyond its amount due.
CREATE FUNCTION wallets_invoice_paid_within_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT sum(p.amount) FROM invoice_payments p WHERE p.invoice_id = NEW.invoice_id)
       > (SELECT i.amount_due FROM invoices i WHERE i.id = NEW.invoice_id) THEN
        RAISE EXCEPTION 'invoice %: payments exceed its amount due', NEW.invoice_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_payments_within_due AFTER INSERT ON invoice_payments
    FOR EACH ROW EXECUTE FUNCTION wallets_invoice_paid_within_due();
"""

# Rollups are kept up with each entry and cannot be rebuilt from SQL alone (their lines come from
# the charges as rated, their funding from the lots' kinds then): going below this migration keeps
# them aside, and coming back restores them, each in its customer's lane (the lane count may
# differ). Invoices are documents issued to customers: going below this migration is refused
# while any exists.
KEEP = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM invoices) THEN
        RAISE EXCEPTION 'invoices were issued: a downgrade below 0017 would destroy them'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM period_rollups) THEN
        CREATE SCHEMA IF NOT EXISTS billing_kept;
        CREATE TABLE billing_kept.period_rollups AS
            SELECT customer_id, period, item, quantity, amount FROM period_rollups;
    END IF;
END $$;
"""
RESTORE_KEPT = r"""
DO $$
BEGIN
    IF to_regclass('billing_kept.period_rollups') IS NOT NULL THEN
        INSERT INTO period_rollups (lane, customer_id, period, item, quantity, amount)
        SELECT ledger_lane(customer_id), customer_id, period, item, quantity, amount
          FROM billing_kept.period_rollups;
        DROP SCHEMA billing_kept CASCADE;
    END IF;
END $$;
"""

DROP = r"""
DROP TABLE invoice_payments, invoices, period_rollups;
DROP FUNCTION wallets_invoice_gapless(), wallets_invoice_paid_within_due(),
    wallets_period_label(timestamptz, text, smallint);
DROP INDEX customers_close_due;
{guard}ALTER TABLE customers DROP COLUMN time_zone, DROP COLUMN billing_anchor_day, DROP COLUMN grace_seconds,
    DROP COLUMN payment_terms_days, DROP COLUMN open_period_start, DROP COLUMN next_close_at;
"""


def upgrade() -> None:
    op.execute(SCHEMA.replace("{guard}", GUARD.replace("{cycle}", CYCLE)))
    lanes = op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one()
    op.execute("".join(f"CREATE TABLE period_rollups_l{k} PARTITION OF period_rollups FOR VALUES IN ({k});\n"
                       for k in range(int(lanes))))
    op.execute(RESTORE_KEPT)


def downgrade() -> None:
    op.execute(KEEP)
    op.execute(DROP.replace("{guard}", GUARD.replace("{cycle}", "")))
