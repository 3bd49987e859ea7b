"""Re-rating: a re-rate (a price book, its corrected version, a time range, a customer filter),
the adjustment of each charge it corrected (at most one per charge and corrected version), each
linked to the balanced entry that moved the money, and the credit (or debit) notes of finalized
invoices, numbered without gaps per issuer and year in a sequence of their own, immutable.
Charges now keep what paid them (`funding`), so a decrease goes back where the money came from.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02
"""
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- What paid each charge: [[lot or receivable account, amount], ...] (NULL for older charges).
ALTER TABLE charges ADD COLUMN funding jsonb CHECK (funding IS NULL OR jsonb_typeof(funding) = 'array');

-- One re-rate request: the same book, version, range and customer filter is the same re-rate
-- (applying it again answers the first result); an Idempotency-Key names it too.
CREATE TABLE rerates (
    id              text PRIMARY KEY,
    book_id         text NOT NULL,
    version         text NOT NULL,
    range_from      timestamptz NOT NULL,
    range_to        timestamptz NOT NULL CHECK (range_to > range_from),
    customer_filter text NOT NULL DEFAULT '',  -- '' : every customer
    idempotency_key text UNIQUE CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 255),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (book_id, version, range_from, range_to, customer_filter)
);
CREATE TRIGGER rerates_immutable BEFORE UPDATE OR DELETE ON rerates
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- A credit note (total < 0: money back to the customer) or debit note (total > 0) correcting a
-- finalized invoice: frozen, numbered like invoices but in its own sequence per issuer and year.
CREATE TABLE credit_notes (
    id           text PRIMARY KEY,
    lane         smallint NOT NULL,
    customer_id  text NOT NULL REFERENCES customers (id),
    invoice_id   text NOT NULL REFERENCES invoices (id),
    rerate_id    text NOT NULL REFERENCES rerates (id),
    kind         text NOT NULL CHECK (kind IN ('credit', 'debit')),
    issuer       text NOT NULL CHECK (issuer ~ '^[A-Z][A-Z0-9]{0,15}$'),
    year         int NOT NULL CHECK (year BETWEEN 2000 AND 9999),
    seq          bigint NOT NULL CHECK (seq > 0),
    number       text NOT NULL UNIQUE,
    currency     text NOT NULL REFERENCES assets (code),
    total        numeric(38, 0) NOT NULL CHECK (total <> 0),
    entry_id     bigint NOT NULL,
    content      jsonb NOT NULL CHECK (jsonb_typeof(content) = 'object'),
    content_hash bytea NOT NULL,
    issued_at    timestamptz NOT NULL,
    UNIQUE (issuer, year, seq),
    UNIQUE (rerate_id, invoice_id),
    CHECK (kind = CASE WHEN total < 0 THEN 'credit' ELSE 'debit' END),
    CHECK (number = issuer || '-' || lpad(year::text, 4, '0') || '-' || lpad(seq::text, 6, '0')),
    CHECK (content_hash = sha256(convert_to(content::text, 'UTF8'))),
    CHECK (content ->> 'number' = number AND content ->> 'id' = id AND content ->> 'total' IS NOT NULL)
);
CREATE INDEX credit_notes_customer ON credit_notes (customer_id, issued_at);
CREATE FUNCTION wallets_credit_note_gapless() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    SELECT max(seq) INTO last FROM credit_notes WHERE issuer = NEW.issuer AND year = NEW.year;
    IF NEW.seq <> coalesce(last, 0) + 1 THEN
        RAISE EXCEPTION 'credit note %: number % of % % would leave a gap (last is %)', NEW.id, NEW.seq,
            NEW.issuer, NEW.year, coalesce(last, 0) USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER credit_notes_gapless BEFORE INSERT ON credit_notes
    FOR EACH ROW EXECUTE FUNCTION wallets_credit_note_gapless();
CREATE TRIGGER credit_notes_immutable BEFORE UPDATE OR DELETE ON credit_notes
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER credit_notes_no_truncate BEFORE TRUNCATE ON credit_notes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- What a re-rate changed of one charge: its amounts by model and token type before and after
-- (`old_lines`, `new_lines`: [[model, token type, amount], ...]), the entry that moved the
-- difference, and the credit note that documents it when the charge's invoice was finalized.
-- A charge is re-rated to a version at most once.
CREATE TABLE charge_adjustments (
    id                bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the order re-rates came in
    lane              smallint NOT NULL,
    charge_id         bigint NOT NULL,
    corrected_version text NOT NULL,
    rerate_id         text NOT NULL REFERENCES rerates (id),
    customer_id       text NOT NULL REFERENCES customers (id),
    period            text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    old_amount        numeric(38, 0) NOT NULL,
    new_amount        numeric(38, 0) NOT NULL CHECK (new_amount >= 0),
    old_lines         jsonb NOT NULL CHECK (jsonb_typeof(old_lines) = 'array'),
    new_lines         jsonb NOT NULL CHECK (jsonb_typeof(new_lines) = 'array'),
    entry_id          bigint,
    credit_note_id    text REFERENCES credit_notes (id),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (charge_id, corrected_version),
    FOREIGN KEY (lane, charge_id) REFERENCES charges (lane, id),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id),
    CHECK (new_amount <> old_amount)
);
CREATE INDEX charge_adjustments_rerate ON charge_adjustments (rerate_id, customer_id);
CREATE INDEX charge_adjustments_entry ON charge_adjustments (entry_id);
CREATE TRIGGER charge_adjustments_immutable BEFORE UPDATE OR DELETE ON charge_adjustments
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER charge_adjustments_no_truncate BEFORE TRUNCATE ON charge_adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

# Credit notes are documents issued to customers, and adjustments record money that moved:
# going below this migration is refused while any exists (as 0017 refuses for invoices). Without
# them it drops `charges.funding`: charges are then re-rated as older ones are (money back to the
# receivable first, then to a paid lot, not to the lots that paid).
DROP = r"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM credit_notes) OR EXISTS (SELECT 1 FROM charge_adjustments) THEN
        RAISE EXCEPTION 're-rates were applied: a downgrade below 0019 would destroy their adjustments'
            USING ERRCODE = 'restrict_violation';
    END IF;
END $$;
DROP TABLE charge_adjustments, credit_notes, rerates;
DROP FUNCTION wallets_credit_note_gapless();
ALTER TABLE charges DROP COLUMN funding;
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
