"""Wallets: price books, customers, grant lots, reservations and their holds, charges, usage
events and the outbox. PostgreSQL guards what is cheap to guard: value ranges, uniqueness,
append-only history, and the reservation state machine.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = r"""
-- Price books: a book is an id and a currency; versions are immutable once written.
CREATE TABLE price_books (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE price_book_versions (
    book_id        text NOT NULL REFERENCES price_books (id),
    version        text NOT NULL CHECK (length(version) BETWEEN 1 AND 100),
    effective_from timestamptz NOT NULL,
    rules          jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array'),  -- as posted
    body_hash      bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (book_id, version),
    UNIQUE (book_id, effective_from)
);
CREATE TRIGGER price_books_immutable BEFORE UPDATE OR DELETE ON price_books
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER price_book_versions_immutable BEFORE UPDATE OR DELETE ON price_book_versions
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- Customers. overdraft_limit NULL: unlimited credit (the postpaid default). The two flags
-- remember the last alert sent, so balance.low / wallet.blocked fire once per crossing.
CREATE TABLE customers (
    id                    text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    name                  text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    currency              text NOT NULL REFERENCES assets (code),
    billing               text NOT NULL DEFAULT 'prepaid' CHECK (billing IN ('prepaid', 'postpaid')),
    price_book            text CHECK (price_book IS NULL OR length(price_book) BETWEEN 1 AND 100),
    overdraft_limit       numeric(38, 0) CHECK (overdraft_limit >= 0),
    low_balance_threshold numeric(38, 0) CHECK (low_balance_threshold >= 0),
    low_balance_alerted   boolean NOT NULL DEFAULT false,
    blocked               boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION wallets_customer_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.id IS DISTINCT FROM OLD.id OR NEW.currency IS DISTINCT FROM OLD.currency
       OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
        RAISE EXCEPTION 'customers: id, currency and created_at never change'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_guard BEFORE UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION wallets_customer_guard();

-- A lot is one top-up or grant: its own liability account (bound 0) holds what remains of it.
-- Only the expiry columns may be written, once, from NULL (by the grant expiry job).
CREATE TABLE lots (
    id              text PRIMARY KEY,
    customer_id     text NOT NULL REFERENCES customers (id),
    kind            text NOT NULL CHECK (kind IN ('topup', 'grant')),
    account_id      bigint NOT NULL UNIQUE REFERENCES accounts (id),
    account_code    text NOT NULL UNIQUE,
    granted         numeric(38, 0) NOT NULL CHECK (granted >= 0),
    priority        smallint NOT NULL CHECK (priority BETWEEN 0 AND 100),
    expires_at      timestamptz,
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    reference       text NOT NULL DEFAULT '' CHECK (length(reference) <= 500),
    entry_id        bigint REFERENCES journal_entries (id),
    created_at      timestamptz NOT NULL,
    expired_at      timestamptz,
    expired_amount  numeric(38, 0) CHECK (expired_amount >= 0),
    expiry_entry_id bigint REFERENCES journal_entries (id),
    CHECK ((expired_at IS NULL) = (expired_amount IS NULL)),
    CHECK (expired_at IS NULL OR expires_at IS NOT NULL)
);
CREATE INDEX lots_customer_live ON lots (customer_id) WHERE expired_at IS NULL;
CREATE INDEX lots_due ON lots (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;
CREATE FUNCTION wallets_lot_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
END $$;
CREATE TRIGGER lots_guard BEFORE UPDATE OR DELETE ON lots
    FOR EACH ROW EXECUTE FUNCTION wallets_lot_guard();

-- Reservations. amount: the hold; captured: taken from the hold by captures; released: given
-- back from it. A closed reservation has accounted for its whole hold.
CREATE TABLE reservations (
    id           text PRIMARY KEY,
    customer_id  text NOT NULL REFERENCES customers (id),
    request_id   text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 200),
    request_hash bytea NOT NULL,
    model        text NOT NULL,
    amount       numeric(38, 0) NOT NULL CHECK (amount >= 0),
    captured     numeric(38, 0) NOT NULL DEFAULT 0 CHECK (captured >= 0),
    released     numeric(38, 0) NOT NULL DEFAULT 0 CHECK (released >= 0),
    charged      numeric(38, 0) NOT NULL DEFAULT 0 CHECK (charged >= 0),
    captures     int NOT NULL DEFAULT 0 CHECK (captures >= 0),
    status       text NOT NULL CHECK (status IN ('held', 'capturing', 'settled', 'released', 'expired')),
    dimensions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    estimate     jsonb,
    entry_id     bigint REFERENCES journal_entries (id),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    closed_at    timestamptz,
    UNIQUE (customer_id, request_id),
    CHECK (captured + released <= amount),
    CHECK ((status IN ('held', 'capturing')) = (closed_at IS NULL)),
    CHECK (status IN ('held', 'capturing') OR captured + released = amount)
);
CREATE INDEX reservations_open ON reservations (expires_at) WHERE status IN ('held', 'capturing');
CREATE INDEX reservations_request ON reservations (request_id);

-- The state machine: closed is final, except that an expired reservation takes a late settle.
CREATE FUNCTION wallets_reservation_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.id, NEW.customer_id, NEW.request_id, NEW.request_hash, NEW.model, NEW.amount,
           NEW.dimensions, NEW.estimate, NEW.entry_id, NEW.created_at, NEW.expires_at)
          IS DISTINCT FROM
          (OLD.id, OLD.customer_id, OLD.request_id, OLD.request_hash, OLD.model, OLD.amount,
           OLD.dimensions, OLD.estimate, OLD.entry_id, OLD.created_at, OLD.expires_at)
       OR NEW.captured < OLD.captured OR NEW.released < OLD.released OR NEW.charged < OLD.charged
       OR NEW.captures < OLD.captures THEN
        RAISE EXCEPTION 'reservations: only status and running totals change, forward'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF NOT (OLD.status = NEW.status AND OLD.status IN ('held', 'capturing', 'expired')
            OR OLD.status IN ('held', 'capturing')
               AND NEW.status IN ('capturing', 'settled', 'released', 'expired')
            OR OLD.status = 'expired' AND NEW.status = 'settled') THEN
        RAISE EXCEPTION 'reservation %: % -> % is not allowed', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reservations_guard BEFORE UPDATE OR DELETE ON reservations
    FOR EACH ROW EXECUTE FUNCTION wallets_reservation_guard();

-- Where a hold came from, in consumption order (seq): lot accounts, then the receivable.
CREATE TABLE reservation_holds (
    reservation_id text NOT NULL REFERENCES reservations (id),
    seq            smallint NOT NULL CHECK (seq >= 0),
    account_code   text NOT NULL,
    amount         numeric(38, 0) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (reservation_id, seq)
);
CREATE TRIGGER reservation_holds_immutable BEFORE UPDATE OR DELETE ON reservation_holds
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- Post-hoc usage, idempotent by event id.
CREATE TABLE usage_events (
    event_id     text PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 200),
    customer_id  text NOT NULL REFERENCES customers (id),
    request_hash bytea NOT NULL,
    model        text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    usage        jsonb NOT NULL,
    dimensions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    entry_id     bigint REFERENCES journal_entries (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_customer ON usage_events (customer_id, occurred_at);
CREATE TRIGGER usage_events_immutable BEFORE UPDATE OR DELETE ON usage_events
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- One row per rated capture or usage event: what is needed to recompute the charge.
CREATE TABLE charges (
    id             bigserial PRIMARY KEY,
    customer_id    text NOT NULL REFERENCES customers (id),
    reservation_id text REFERENCES reservations (id),
    event_id       text UNIQUE REFERENCES usage_events (event_id),
    request_id     text NOT NULL,
    seq            int NOT NULL DEFAULT 0,
    capture_id     text,
    final          boolean NOT NULL,
    request_hash   bytea NOT NULL,
    model          text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    usage          jsonb NOT NULL,
    dimensions     jsonb NOT NULL DEFAULT '{}'::jsonb,
    price_book     text NOT NULL,
    price_version  text NOT NULL,
    lines          jsonb NOT NULL CHECK (jsonb_typeof(lines) = 'array'),
    charged        numeric(38, 0) NOT NULL CHECK (charged >= 0),
    from_hold      numeric(38, 0) NOT NULL CHECK (from_hold >= 0),
    from_lots      numeric(38, 0) NOT NULL CHECK (from_lots >= 0),
    from_receivable numeric(38, 0) NOT NULL CHECK (from_receivable >= 0),
    released       numeric(38, 0) NOT NULL DEFAULT 0 CHECK (released >= 0),
    entry_id       bigint REFERENCES journal_entries (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((reservation_id IS NULL) <> (event_id IS NULL)),
    CHECK (charged = from_hold + from_lots + from_receivable),
    UNIQUE (reservation_id, seq),
    UNIQUE (reservation_id, capture_id)
);
CREATE INDEX charges_customer ON charges (customer_id, occurred_at);
CREATE INDEX charges_request ON charges (request_id);
CREATE UNIQUE INDEX charges_one_final ON charges (reservation_id) WHERE final AND reservation_id IS NOT NULL;
CREATE TRIGGER charges_immutable BEFORE UPDATE OR DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- Events out, written in the same transaction as the change they announce.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    customer_id  text,
    dedup_key    text NOT NULL UNIQUE,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
"""

DROP = """
DROP TABLE IF EXISTS outbox, charges, usage_events, reservation_holds, reservations, lots, customers,
    price_book_versions, price_books CASCADE;
DROP FUNCTION IF EXISTS wallets_reservation_guard(), wallets_lot_guard(), wallets_customer_guard();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
