"""Ledger core: assets, accounts, striped cached balances, journal entries, postings, idempotency
keys, seals, and the triggers that make PostgreSQL itself guard the invariants.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = r"""
CREATE TABLE assets (
    code  text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_]{1,15}$'),
    scale smallint NOT NULL CHECK (scale BETWEEN 0 AND 18)
);

-- lower_bound bounds the account's *normal* balance (debit-normal: debits - credits;
-- credit-normal: credits - debits). NULL means unbounded. Bounded accounts are never striped.
CREATE TABLE accounts (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (length(code) BETWEEN 1 AND 200),
    type        text NOT NULL CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense')),
    asset       text NOT NULL REFERENCES assets (code),
    customer_id text,
    lower_bound numeric(38, 0),
    stripes     smallint NOT NULL DEFAULT 1 CHECK (stripes BETWEEN 1 AND 256),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (lower_bound IS NULL OR stripes = 1)
);
CREATE INDEX accounts_customer ON accounts (customer_id) WHERE customer_id IS NOT NULL;

-- Cached balances, one row per stripe. Maintained only by the postings trigger; verify proves
-- they equal the posting sums. fillfactor leaves room for HOT updates.
CREATE TABLE account_balances (
    account_id  bigint NOT NULL REFERENCES accounts (id),
    stripe      smallint NOT NULL,
    debits      numeric(38, 0) NOT NULL DEFAULT 0 CHECK (debits >= 0),
    credits     numeric(38, 0) NOT NULL DEFAULT 0 CHECK (credits >= 0),
    normal_sign smallint NOT NULL CHECK (normal_sign IN (-1, 1)),
    lower_bound numeric(38, 0),
    PRIMARY KEY (account_id, stripe),
    CONSTRAINT balance_within_bound
        CHECK (lower_bound IS NULL OR normal_sign * (debits - credits) >= lower_bound)
) WITH (fillfactor = 50);

CREATE TABLE journal_entries (
    id           bigserial PRIMARY KEY,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
    request_hash bytea NOT NULL,
    kind         text NOT NULL,
    customer_id  text,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    txid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT journal_entries_key_unique UNIQUE (key)
);
CREATE INDEX journal_entries_txid ON journal_entries (txid);
CREATE INDEX journal_entries_customer ON journal_entries (customer_id, occurred_at)
    WHERE customer_id IS NOT NULL;

-- amount: signed atomic units, debit > 0, credit < 0.
CREATE TABLE postings (
    id         bigserial PRIMARY KEY,
    entry_id   bigint NOT NULL REFERENCES journal_entries (id),
    account_id bigint NOT NULL REFERENCES accounts (id),
    stripe     smallint NOT NULL DEFAULT 0,
    amount     bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id, entry_id);

-- Results of mutating commands, kept forever: same key + same request hash replays the result.
CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
    request_hash bytea NOT NULL,
    status       smallint NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Tamper evidence: seal k covers the entries whose txid lies in [from_txid, to_txid).
CREATE TABLE seals (
    id           bigserial PRIMARY KEY,
    from_txid    xid8 NOT NULL UNIQUE,
    to_txid      xid8 NOT NULL,
    entry_ids    bigint[] NOT NULL,
    entry_hashes bytea[] NOT NULL,
    prev_hash    bytea NOT NULL,
    chain_hash   bytea NOT NULL,
    sealed_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (to_txid > from_txid),
    CHECK (cardinality(entry_ids) = cardinality(entry_hashes))
);

------------------------------------------------------------------------------------------------
-- Immutability: history is corrected by new entries, never rewritten.
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER idempotency_keys_immutable BEFORE UPDATE OR DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER seals_immutable BEFORE UPDATE OR DELETE ON seals
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER assets_immutable BEFORE UPDATE OR DELETE ON assets
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

-- Accounts: only lower_bound may change; balances rows follow it and recheck the bound.
CREATE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.code IS DISTINCT FROM OLD.code OR NEW.type IS DISTINCT FROM OLD.type
       OR NEW.asset IS DISTINCT FROM OLD.asset OR NEW.stripes IS DISTINCT FROM OLD.stripes
       OR NEW.customer_id IS DISTINCT FROM OLD.customer_id OR NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'accounts: only lower_bound may change' USING ERRCODE = 'restrict_violation';
    END IF;
    UPDATE account_balances SET lower_bound = NEW.lower_bound WHERE account_id = NEW.id;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_guard BEFORE UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard();

CREATE FUNCTION ledger_account_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO account_balances (account_id, stripe, normal_sign, lower_bound)
    SELECT NEW.id, s, CASE WHEN NEW.type IN ('asset', 'expense') THEN 1 ELSE -1 END, NEW.lower_bound
    FROM generate_series(0, NEW.stripes - 1) AS s;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_created AFTER INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_account_created();

-- Cached balances follow every posting, in one fixed order (no deadlocks), in the same statement.
CREATE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT account_id, stripe,
               sum(amount) FILTER (WHERE amount > 0) AS dr,
               -sum(amount) FILTER (WHERE amount < 0) AS cr
        FROM new_postings GROUP BY account_id, stripe ORDER BY account_id, stripe
    LOOP
        UPDATE account_balances
           SET debits = debits + coalesce(r.dr, 0), credits = credits + coalesce(r.cr, 0)
         WHERE account_id = r.account_id AND stripe = r.stripe;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'posting to account % has no balance stripe %', r.account_id, r.stripe
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_postings();

-- Every entry balances per asset, checked at commit (so an entry may be written in steps).
CREATE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT a.asset INTO bad
      FROM postings p JOIN accounts a ON a.id = p.account_id
     WHERE p.entry_id = NEW.entry_id
     GROUP BY a.asset HAVING sum(p.amount) <> 0
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', NEW.entry_id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER postings_balanced AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();

------------------------------------------------------------------------------------------------
-- Post a batch of entries in one round trip. The caller resolves account codes to ids (they
-- never change) and picks stripes, so every lookup here is a primary-key probe.
--   batch: [{"k": key, "h": hex request hash, "kind", "c": customer or null, "at": occurred_at,
--            "m": metadata, "p": [[account_id, stripe, amount], ...]}, ...]
--   lock_accounts, lock_stripes: every (account, stripe) the batch touches, sorted; they are
--            locked first, in that order, so concurrent batches cannot deadlock.
-- One output row per input entry (1-based idx): posted | replayed (same key, same hash) |
--   conflict (same key, other hash) | below_bound (detail: the account id).
CREATE FUNCTION ledger_post(batch jsonb, lock_accounts bigint[], lock_stripes smallint[])
RETURNS TABLE (idx int, status text, entry_id bigint, detail text)
LANGUAGE plpgsql AS $$
DECLARE
    e jsonb;
    i int;
    leg jsonb;
    below bigint;
    new_id bigint;
    existing record;
BEGIN
    FOR j IN 1 .. coalesce(array_length(lock_accounts, 1), 0) LOOP
        PERFORM 1 FROM account_balances
          WHERE account_id = lock_accounts[j] AND stripe = lock_stripes[j] FOR UPDATE;
    END LOOP;

    FOR e, i IN SELECT value, ordinality FROM jsonb_array_elements(batch) WITH ORDINALITY LOOP
        -- Would a bounded account go below its bound? Then the entry is refused, whole.
        below := NULL;
        FOR leg IN SELECT value FROM jsonb_array_elements(e -> 'd') LOOP
            SELECT b.account_id INTO below FROM account_balances b
             WHERE b.account_id = (leg ->> 0)::bigint AND b.stripe = (leg ->> 1)::smallint
               AND b.lower_bound IS NOT NULL
               AND b.normal_sign * (b.debits - b.credits + (leg ->> 2)::bigint) < b.lower_bound;
            EXIT WHEN below IS NOT NULL;
        END LOOP;

        new_id := NULL;
        IF below IS NULL THEN
            INSERT INTO journal_entries (key, request_hash, kind, customer_id, occurred_at, metadata)
            VALUES (e ->> 'k', decode(e ->> 'h', 'hex'), e ->> 'kind', e ->> 'c',
                    (e ->> 'at')::timestamptz, coalesce(e -> 'm', '{}'::jsonb))
            ON CONFLICT ON CONSTRAINT journal_entries_key_unique DO NOTHING
            RETURNING id INTO new_id;
        END IF;
        IF new_id IS NULL THEN  -- refused or already there: key reads stay off the common path
            SELECT j.id, j.request_hash INTO existing FROM journal_entries j WHERE j.key = e ->> 'k';
            IF FOUND THEN
                RETURN QUERY SELECT i, CASE WHEN existing.request_hash = decode(e ->> 'h', 'hex')
                                            THEN 'replayed' ELSE 'conflict' END, existing.id, NULL::text;
            ELSE
                RETURN QUERY SELECT i, 'below_bound'::text, NULL::bigint, below::text;
            END IF;
            CONTINUE;
        END IF;

        INSERT INTO postings (entry_id, account_id, stripe, amount)
        SELECT new_id, (l.value ->> 0)::bigint, (l.value ->> 1)::smallint, (l.value ->> 2)::bigint
          FROM jsonb_array_elements(e -> 'p') l;
        RETURN QUERY SELECT i, 'posted'::text, new_id, NULL::text;
    END LOOP;
END $$;
"""

DROP = """
DROP FUNCTION IF EXISTS ledger_post(jsonb, bigint[], smallint[]);
-- The seals' later hash versions, kept aside by 0042's, 0076's and 0081's downgrades for their
-- upgrades: they go with the seals (their triggers use ledger_reject_change(), dropped below).
DROP TABLE IF EXISTS seal_hash_versions, seal_hash_versions_3, seal_hash_versions_4;
DROP TABLE IF EXISTS seals, idempotency_keys, postings, journal_entries, account_balances,
    accounts, assets CASCADE;
DROP FUNCTION IF EXISTS ledger_check_entry_balanced(), ledger_apply_postings(),
    ledger_account_created(), ledger_account_guard(), ledger_reject_change();
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute(DROP)
