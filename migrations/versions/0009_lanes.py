"""Lanes: every table a wallet batch reads by index or writes is partitioned by a customer's lane.

Two SERIALIZABLE batches on disjoint customers that share tables collide on btree pages (issue
10: 20 of 20 overlapping pairs failed with 40001). A customer's lane is a fixed hash bucket of
its id, `ledger_lane(id)` (md5, modulo the lane count); every write-path table is LIST
partitioned by lane, platform accounts have a stripe per lane, and each lane has its own writer.

The lane count is fixed when the database is created: the `lanes` attribute of the Alembic
config (migrations.runner.upgrade(url, lanes=N)), or the environment
variable TOKENTILL_LANES, read by this migration only; by default the cores of the machine that
creates the database (at least 2, at most 16: `default_lanes`), at most 256.
`ledger_settings` keeps it, and `ledger_lane()` is created with it written in.

Rows keep their ids, keys, txids and stripes (the seals hash them): the migration copies each
table into its partitioned successor, computing the lane, then builds the triggers, so nothing
is re-applied. Entries without a customer (the ledger's own API, raw SQL) live in lane 0, and a
column `lane` left out of a raw INSERT is 0. Idempotency records of wallet commands move to the
partitioned `idempotency_records`; `idempotency_keys` keeps the records written before, which a
wallet command still finds (read only), and the records of other calls.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""
from __future__ import annotations

import os

from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

MAX_LANES = 256


def default_lanes() -> int:
    """The lane count of a database created without one: the cores this process may run on, at
    least 2 and at most 16 (the platform stripes). Lanes pay off only where there are cores to
    run their batches at once; each lane's batches are smaller than one lane's would be, and each
    batch pays its round trips, locks and commit. Measured on a 2-core machine (1,000 wallets, 64
    clients, load 8-9): 2 lanes gave 102-112 lifecycles/s, 16 lanes 36-76/s."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return min(16, max(2, cores))


def lane_count() -> int:
    config = context.config
    chosen = config.attributes.get("lanes") or os.environ.get("TOKENTILL_LANES") or default_lanes()
    lanes = int(chosen)
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"lanes must be between 1 and {MAX_LANES}, not {lanes}")
    return lanes


FUNCTIONS = r"""
CREATE TABLE ledger_settings (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    lanes smallint NOT NULL CHECK (lanes BETWEEN 1 AND 256)
);
INSERT INTO ledger_settings (lanes) VALUES ({lanes});
CREATE TRIGGER ledger_settings_immutable BEFORE UPDATE OR DELETE ON ledger_settings
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

CREATE FUNCTION ledger_lanes() RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS 'SELECT {lanes}::smallint';
-- A customer's lane: the first 32 bits of md5(id), unsigned, modulo the lane count
-- (ledger.lanes.lane_of computes the same in Python).
CREATE FUNCTION ledger_lane(id text) RETURNS smallint LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$SELECT (('x' || substr(md5(id), 1, 8))::bit(32)::bigint % {lanes})::smallint$$;
-- Where an account's balance row lives: a striped account's stripe s in lane s mod lanes, any
-- other account in its customer's lane (lane 0 without one).
CREATE FUNCTION ledger_balance_lane(customer_id text, stripes smallint, stripe smallint)
RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN stripes > 1 THEN (stripe % {lanes})::smallint
                WHEN customer_id IS NULL THEN 0::smallint ELSE ledger_lane(customer_id) END$$;
-- An entry's lane: its customer's, lane 0 without one.
CREATE FUNCTION ledger_entry_lane(customer_id text) RETURNS smallint LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT coalesce(ledger_lane(customer_id), 0::smallint)$$;

ALTER TABLE customers ADD COLUMN lane smallint GENERATED ALWAYS AS (ledger_lane(id)) STORED;
"""

# The write-path tables, partitioned by lane. `lane` defaults to 0 for raw SQL that names none.
PARTITIONED = r"""
CREATE TABLE account_balances (
    lane        smallint NOT NULL DEFAULT 0,
    account_id  bigint NOT NULL REFERENCES accounts (id),
    stripe      smallint NOT NULL,
    debits      numeric(38, 0) NOT NULL DEFAULT 0 CHECK (debits >= 0),
    credits     numeric(38, 0) NOT NULL DEFAULT 0 CHECK (credits >= 0),
    normal_sign smallint NOT NULL CHECK (normal_sign IN (-1, 1)),
    lower_bound numeric(38, 0),
    PRIMARY KEY (lane, account_id, stripe),
    CONSTRAINT balance_within_bound
        CHECK (lower_bound IS NULL OR normal_sign * (debits - credits) >= lower_bound)
) PARTITION BY LIST (lane);
CREATE INDEX account_balances_account ON account_balances (account_id, stripe);

CREATE TABLE journal_entries (
    lane         smallint NOT NULL DEFAULT 0,
    id           bigserial,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
    request_hash bytea NOT NULL,
    kind         text NOT NULL,
    customer_id  text,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    txid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (lane, id),
    -- an entry key is unique per customer (and overall among entries without one)
    CONSTRAINT journal_entries_key_unique UNIQUE NULLS NOT DISTINCT (lane, customer_id, key)
) PARTITION BY LIST (lane);
CREATE INDEX journal_entries_txid ON journal_entries (txid);
CREATE INDEX journal_entries_customer ON journal_entries (customer_id, occurred_at)
    WHERE customer_id IS NOT NULL;
CREATE INDEX journal_entries_id ON journal_entries (id);

CREATE TABLE postings (
    lane       smallint NOT NULL DEFAULT 0,
    id         bigserial,
    entry_id   bigint NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts (id),
    stripe     smallint NOT NULL DEFAULT 0,
    amount     bigint NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (lane, id),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id)
) PARTITION BY LIST (lane);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id, entry_id);

CREATE TABLE idempotency_records (
    lane         smallint NOT NULL DEFAULT 0,
    scope        text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 300),
    request_hash bytea NOT NULL,
    status       smallint NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, scope, key)
) PARTITION BY LIST (lane);

CREATE TABLE lots (
    lane            smallint NOT NULL DEFAULT 0,
    id              text NOT NULL,
    customer_id     text NOT NULL REFERENCES customers (id),
    kind            text NOT NULL CHECK (kind IN ('topup', 'grant')),
    account_id      bigint NOT NULL REFERENCES accounts (id),
    account_code    text NOT NULL,
    granted         numeric(38, 0) NOT NULL CHECK (granted >= 0),
    priority        smallint NOT NULL CHECK (priority BETWEEN 0 AND 100),
    expires_at      timestamptz,
    reason          text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    reference       text NOT NULL DEFAULT '' CHECK (length(reference) <= 500),
    entry_id        bigint,
    created_at      timestamptz NOT NULL,
    expired_at      timestamptz,
    expired_amount  numeric(38, 0) CHECK (expired_amount >= 0),
    expiry_entry_id bigint,
    PRIMARY KEY (lane, id),
    UNIQUE (lane, account_id),
    UNIQUE (lane, account_code),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id),
    FOREIGN KEY (lane, expiry_entry_id) REFERENCES journal_entries (lane, id),
    CHECK ((expired_at IS NULL) = (expired_amount IS NULL)),
    CHECK (expired_at IS NULL OR expires_at IS NOT NULL)
) PARTITION BY LIST (lane);
CREATE INDEX lots_customer_live ON lots (customer_id) WHERE expired_at IS NULL;
CREATE INDEX lots_due ON lots (expires_at) WHERE expires_at IS NOT NULL AND expired_at IS NULL;
CREATE INDEX lots_id ON lots (id);

CREATE TABLE reservations (
    lane         smallint NOT NULL DEFAULT 0,
    id           text NOT NULL,
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
    entry_id     bigint,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    closed_at    timestamptz,
    PRIMARY KEY (lane, id),
    UNIQUE (lane, customer_id, request_id),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id),
    CHECK (captured + released <= amount),
    CHECK ((status IN ('held', 'capturing')) = (closed_at IS NULL)),
    CHECK (status IN ('held', 'capturing') OR captured + released = amount)
) PARTITION BY LIST (lane);
CREATE INDEX reservations_open ON reservations (expires_at) WHERE status IN ('held', 'capturing');
CREATE INDEX reservations_request ON reservations (request_id);
CREATE INDEX reservations_id ON reservations (id);

CREATE TABLE reservation_holds (
    lane           smallint NOT NULL DEFAULT 0,
    reservation_id text NOT NULL,
    seq            smallint NOT NULL CHECK (seq >= 0),
    account_code   text NOT NULL,
    amount         numeric(38, 0) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (lane, reservation_id, seq),
    FOREIGN KEY (lane, reservation_id) REFERENCES reservations (lane, id)
) PARTITION BY LIST (lane);

CREATE TABLE usage_events (
    lane         smallint NOT NULL DEFAULT 0,
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    customer_id  text NOT NULL REFERENCES customers (id),
    request_hash bytea NOT NULL,
    model        text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    usage        jsonb NOT NULL,
    dimensions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    entry_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_pkey PRIMARY KEY (lane, customer_id, event_id),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id)
) PARTITION BY LIST (lane);
CREATE INDEX usage_events_customer ON usage_events (customer_id, occurred_at);

CREATE TABLE charges (
    lane           smallint NOT NULL DEFAULT 0,
    id             bigserial,
    customer_id    text NOT NULL REFERENCES customers (id),
    reservation_id text,
    event_id       text,
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
    entry_id       bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lane, id),
    FOREIGN KEY (lane, reservation_id) REFERENCES reservations (lane, id),
    CONSTRAINT charges_event_key UNIQUE (lane, customer_id, event_id),
    CONSTRAINT charges_event_fkey FOREIGN KEY (lane, customer_id, event_id)
        REFERENCES usage_events (lane, customer_id, event_id),
    FOREIGN KEY (lane, entry_id) REFERENCES journal_entries (lane, id),
    CHECK ((reservation_id IS NULL) <> (event_id IS NULL)),
    CHECK (charged = from_hold + from_lots + from_receivable),
    UNIQUE (lane, reservation_id, seq),
    UNIQUE (lane, reservation_id, capture_id)
) PARTITION BY LIST (lane);
CREATE INDEX charges_customer ON charges (customer_id, occurred_at);
CREATE INDEX charges_request ON charges (request_id);
CREATE UNIQUE INDEX charges_one_final ON charges (lane, reservation_id)
    WHERE final AND reservation_id IS NOT NULL;

CREATE TABLE usage_counters (
    lane        smallint NOT NULL DEFAULT 0,
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    book_id     text NOT NULL,
    rule_id     text NOT NULL,
    quantity    numeric(38, 0) NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (lane, customer_id, period, book_id, rule_id)
) PARTITION BY LIST (lane);

CREATE TABLE outbox (
    lane         smallint NOT NULL DEFAULT 0,
    id           bigserial,
    topic        text NOT NULL,
    customer_id  text,
    dedup_key    text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    PRIMARY KEY (lane, id),
    UNIQUE (lane, dedup_key)
) PARTITION BY LIST (lane);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
"""

TABLES = ("account_balances", "journal_entries", "postings", "idempotency_records", "lots",
          "reservations", "reservation_holds", "usage_events", "charges", "usage_counters", "outbox")
MOVED = tuple(t for t in TABLES if t != "idempotency_records")  # tables 0008 already had
SEQUENCES = (("journal_entries", "id"), ("postings", "id"), ("charges", "id"), ("outbox", "id"))
_CUSTOMER_LANE = "ledger_lane(customer_id)"

# What each moved table's rows become (columns of 0008, then the lane), from lanes_old.<table>.
COPY = {
    "account_balances": """INSERT INTO account_balances (lane, account_id, stripe, debits, credits,
                                         normal_sign, lower_bound)
        SELECT ledger_balance_lane(a.customer_id, a.stripes, b.stripe), b.account_id, b.stripe, b.debits,
               b.credits, b.normal_sign, b.lower_bound
          FROM lanes_old.account_balances b JOIN accounts a ON a.id = b.account_id""",
    "journal_entries": """INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at,
                                        recorded_at, metadata, txid)
        SELECT ledger_entry_lane(customer_id), id, key, request_hash, kind, customer_id, occurred_at, recorded_at,
               metadata, txid FROM lanes_old.journal_entries""",
    "postings": """INSERT INTO postings (lane, id, entry_id, account_id, stripe, amount)
        SELECT ledger_entry_lane(j.customer_id), p.id, p.entry_id, p.account_id, p.stripe, p.amount
          FROM lanes_old.postings p JOIN lanes_old.journal_entries j ON j.id = p.entry_id""",
    "lots": f"INSERT INTO lots SELECT {_CUSTOMER_LANE}, * FROM lanes_old.lots",
    "reservations": f"INSERT INTO reservations SELECT {_CUSTOMER_LANE}, * FROM lanes_old.reservations",
    "reservation_holds": """INSERT INTO reservation_holds (lane, reservation_id, seq, account_code, amount)
        SELECT ledger_lane(r.customer_id), h.reservation_id, h.seq, h.account_code, h.amount
          FROM lanes_old.reservation_holds h JOIN lanes_old.reservations r ON r.id = h.reservation_id""",
    "usage_events": f"INSERT INTO usage_events SELECT {_CUSTOMER_LANE}, * FROM lanes_old.usage_events",
    "charges": f"INSERT INTO charges SELECT {_CUSTOMER_LANE}, * FROM lanes_old.charges",
    "usage_counters": f"INSERT INTO usage_counters SELECT {_CUSTOMER_LANE}, * FROM lanes_old.usage_counters",
    "outbox": """INSERT INTO outbox SELECT ledger_entry_lane(customer_id), * FROM lanes_old.outbox""",
}

# Cached balances follow every posting, in one fixed order (no deadlocks), in the same statement;
# postings go only into entries of this transaction, and every INSERT balances on its own (0005).
# Each lookup names its lane, so the statement reads one lane's pages.
TRIGGERS = r"""
CREATE OR REPLACE FUNCTION ledger_account_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO account_balances (lane, account_id, stripe, normal_sign, lower_bound)
    SELECT ledger_balance_lane(NEW.customer_id, NEW.stripes, s::smallint), NEW.id, s,
           CASE WHEN NEW.type IN ('asset', 'expense') THEN 1 ELSE -1 END, NEW.lower_bound
    FROM generate_series(0, NEW.stripes - 1) AS s;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.code IS DISTINCT FROM OLD.code OR NEW.type IS DISTINCT FROM OLD.type
       OR NEW.asset IS DISTINCT FROM OLD.asset OR NEW.stripes IS DISTINCT FROM OLD.stripes
       OR NEW.customer_id IS DISTINCT FROM OLD.customer_id OR NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'accounts: only lower_bound may change' USING ERRCODE = 'restrict_violation';
    END IF;
    IF NEW.stripes = 1 THEN  -- a bounded account: one row, in its customer's lane
        UPDATE account_balances SET lower_bound = NEW.lower_bound
         WHERE lane = ledger_balance_lane(NEW.customer_id, 1::smallint, 0::smallint) AND account_id = NEW.id;
    ELSE
        UPDATE account_balances SET lower_bound = NEW.lower_bound WHERE account_id = NEW.id;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    entry record;
    bad text;
    bad_entry bigint;
BEGIN
    FOR entry IN SELECT DISTINCT lane, entry_id FROM new_postings LOOP  -- a primary-key probe each
        IF (SELECT j.txid FROM journal_entries j WHERE j.lane = entry.lane AND j.id = entry.entry_id)
           <> pg_current_xact_id() THEN
            RAISE EXCEPTION 'entry % was written by an earlier transaction: its postings are final',
                entry.entry_id USING ERRCODE = 'restrict_violation';
        END IF;
    END LOOP;
    SELECT n.entry_id, a.asset INTO bad_entry, bad
      FROM new_postings n
      CROSS JOIN LATERAL (SELECT asset FROM accounts WHERE id = n.account_id) a  -- primary-key probes
     GROUP BY n.entry_id, a.asset
    HAVING sum(n.amount) <> 0
     LIMIT 1;
    IF bad_entry IS NOT NULL AND bad IS NOT NULL THEN
        RAISE EXCEPTION 'these postings leave journal entry % unbalanced in %', bad_entry, bad
            USING ERRCODE = 'check_violation';
    END IF;
    FOR r IN
        SELECT ledger_balance_lane(a.customer_id, a.stripes, n.stripe) AS lane, n.account_id, n.stripe,
               sum(n.amount) FILTER (WHERE n.amount > 0) AS dr,
               -sum(n.amount) FILTER (WHERE n.amount < 0) AS cr
          FROM new_postings n JOIN accounts a ON a.id = n.account_id
         GROUP BY 1, n.account_id, n.stripe ORDER BY n.account_id, n.stripe
    LOOP
        UPDATE account_balances
           SET debits = debits + coalesce(r.dr, 0), credits = credits + coalesce(r.cr, 0)
         WHERE lane = r.lane AND account_id = r.account_id AND stripe = r.stripe;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'posting to account % has no balance stripe %', r.account_id, r.stripe
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Every entry has postings and balances per asset, checked at commit, once per entry.
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs int;
    bad text;
BEGIN
    SELECT count(*), (array_agg(t.asset) FILTER (WHERE t.total <> 0))[1] INTO legs, bad
      FROM (SELECT a.asset, sum(p.amount) AS total
              FROM postings p JOIN accounts a ON a.id = p.account_id
             WHERE p.lane = NEW.lane AND p.entry_id = NEW.id
             GROUP BY a.asset) t;
    IF legs = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', NEW.id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_postings();
CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_txid BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_txid();
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE TRIGGER idempotency_records_immutable BEFORE UPDATE OR DELETE ON idempotency_records
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER lots_guard BEFORE UPDATE OR DELETE ON lots
    FOR EACH ROW EXECUTE FUNCTION wallets_lot_guard();
CREATE TRIGGER reservations_guard BEFORE UPDATE OR DELETE ON reservations
    FOR EACH ROW EXECUTE FUNCTION wallets_reservation_guard();
CREATE TRIGGER reservation_holds_immutable BEFORE UPDATE OR DELETE ON reservation_holds
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER usage_events_immutable BEFORE UPDATE OR DELETE ON usage_events
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER charges_immutable BEFORE UPDATE OR DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
"""

# Row triggers of a partitioned table fire for its partitions too; statement triggers fire only
# for the table a statement names, so each partition gets its own.
PARTITION_TRIGGERS = r"""
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_apply AFTER INSERT ON postings_l{k}
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_postings();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries_l{k}
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
"""

# Post a batch of entries in one round trip (0001's contract), lane by lane: an entry goes to
# its customer's lane, and the caller names the lane of every balance row it locks or bounds.
#   batch: [{"k", "h", "kind", "c", "at", "m", "p": [[account, stripe, amount], ...],
#            "d": [[account, stripe, delta, balance lane], ...]}, ...]
#   lock_lanes, lock_accounts, lock_stripes: every balance row the batch touches, sorted.
LEDGER_POST = r"""
DROP FUNCTION ledger_post(jsonb, bigint[], smallint[]);
CREATE FUNCTION ledger_post(batch jsonb, lock_lanes smallint[], lock_accounts bigint[],
                            lock_stripes smallint[])
RETURNS TABLE (idx int, status text, entry_id bigint, detail text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    e jsonb;
    i int;
    leg jsonb;
    below bigint;
    new_id bigint;
    lane_ smallint;
    existing record;
BEGIN
    FOR j IN 1 .. coalesce(array_length(lock_accounts, 1), 0) LOOP
        PERFORM 1 FROM account_balances
          WHERE lane = lock_lanes[j] AND account_id = lock_accounts[j] AND stripe = lock_stripes[j] FOR UPDATE;
    END LOOP;

    FOR e, i IN SELECT value, ordinality FROM jsonb_array_elements(batch) WITH ORDINALITY LOOP
        lane_ := ledger_entry_lane(e ->> 'c');
        below := NULL;
        FOR leg IN SELECT value FROM jsonb_array_elements(e -> 'd') LOOP
            SELECT b.account_id INTO below FROM account_balances b
             WHERE b.lane = (leg ->> 3)::smallint
               AND b.account_id = (leg ->> 0)::bigint AND b.stripe = (leg ->> 1)::smallint
               AND b.lower_bound IS NOT NULL
               AND b.normal_sign * (b.debits - b.credits + (leg ->> 2)::bigint) < b.lower_bound;
            EXIT WHEN below IS NOT NULL;
        END LOOP;

        new_id := NULL;
        IF below IS NULL THEN
            INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata)
            VALUES (lane_, e ->> 'k', decode(e ->> 'h', 'hex'), e ->> 'kind', e ->> 'c',
                    (e ->> 'at')::timestamptz, coalesce(e -> 'm', '{}'::jsonb))
            ON CONFLICT ON CONSTRAINT journal_entries_key_unique DO NOTHING
            RETURNING id INTO new_id;
        END IF;
        IF new_id IS NULL THEN  -- refused or already there: key reads stay off the common path
            SELECT j.id, j.request_hash INTO existing FROM journal_entries j
             WHERE j.lane = lane_ AND j.customer_id IS NOT DISTINCT FROM e ->> 'c' AND j.key = e ->> 'k';
            IF FOUND THEN
                RETURN QUERY SELECT i, CASE WHEN existing.request_hash = decode(e ->> 'h', 'hex')
                                            THEN 'replayed' ELSE 'conflict' END, existing.id, NULL::text;
            ELSE
                RETURN QUERY SELECT i, 'below_bound'::text, NULL::bigint, below::text;
            END IF;
            CONTINUE;
        END IF;

        INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
        SELECT lane_, new_id, (l.value ->> 0)::bigint, (l.value ->> 1)::smallint, (l.value ->> 2)::bigint
          FROM jsonb_array_elements(e -> 'p') l;
        RETURN QUERY SELECT i, 'posted'::text, new_id, NULL::text;
    END LOOP;
END $$;
ALTER FUNCTION ledger_apply_postings() SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ledger_check_entry_balanced() SET plan_cache_mode = force_generic_plan;
"""

# Going down: the tables as 0008 left them (0001, 0003, 0004, 0007), and 0005's functions.
PLAIN = r"""
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
CREATE TABLE postings (
    id         bigserial PRIMARY KEY,
    entry_id   bigint NOT NULL REFERENCES journal_entries (id),
    account_id bigint NOT NULL REFERENCES accounts (id),
    stripe     smallint NOT NULL DEFAULT 0,
    amount     bigint NOT NULL CHECK (amount <> 0)
);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id, entry_id);
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
CREATE TABLE reservation_holds (
    reservation_id text NOT NULL REFERENCES reservations (id),
    seq            smallint NOT NULL CHECK (seq >= 0),
    account_code   text NOT NULL,
    amount         numeric(38, 0) NOT NULL CHECK (amount > 0),
    PRIMARY KEY (reservation_id, seq)
);
CREATE TABLE usage_events (
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    customer_id  text NOT NULL REFERENCES customers (id),
    request_hash bytea NOT NULL,
    model        text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    usage        jsonb NOT NULL,
    dimensions   jsonb NOT NULL DEFAULT '{}'::jsonb,
    entry_id     bigint REFERENCES journal_entries (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_pkey PRIMARY KEY (customer_id, event_id)
);
CREATE INDEX usage_events_customer ON usage_events (customer_id, occurred_at);
CREATE TABLE charges (
    id             bigserial PRIMARY KEY,
    customer_id    text NOT NULL REFERENCES customers (id),
    reservation_id text REFERENCES reservations (id),
    event_id       text,
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
    UNIQUE (reservation_id, capture_id),
    CONSTRAINT charges_event_key UNIQUE (customer_id, event_id),
    CONSTRAINT charges_event_fkey FOREIGN KEY (customer_id, event_id)
        REFERENCES usage_events (customer_id, event_id)
);
CREATE INDEX charges_customer ON charges (customer_id, occurred_at);
CREATE INDEX charges_request ON charges (request_id);
CREATE UNIQUE INDEX charges_one_final ON charges (reservation_id) WHERE final AND reservation_id IS NOT NULL;
CREATE TABLE usage_counters (
    customer_id text NOT NULL REFERENCES customers (id),
    period      text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
    book_id     text NOT NULL,
    rule_id     text NOT NULL,
    quantity    numeric(38, 0) NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (customer_id, period, book_id, rule_id)
);
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

COPY_BACK = r"""
INSERT INTO account_balances SELECT account_id, stripe, debits, credits, normal_sign, lower_bound
  FROM lanes_new.account_balances;
INSERT INTO journal_entries SELECT id, key, request_hash, kind, customer_id, occurred_at, recorded_at,
       metadata, txid FROM lanes_new.journal_entries;
INSERT INTO postings SELECT id, entry_id, account_id, stripe, amount FROM lanes_new.postings;
INSERT INTO lots SELECT id, customer_id, kind, account_id, account_code, granted, priority, expires_at,
       reason, reference, entry_id, created_at, expired_at, expired_amount, expiry_entry_id FROM lanes_new.lots;
INSERT INTO reservations SELECT id, customer_id, request_id, request_hash, model, amount, captured, released,
       charged, captures, status, dimensions, estimate, entry_id, created_at, expires_at, closed_at
  FROM lanes_new.reservations;
INSERT INTO reservation_holds SELECT reservation_id, seq, account_code, amount FROM lanes_new.reservation_holds;
INSERT INTO usage_events SELECT event_id, customer_id, request_hash, model, occurred_at, usage, dimensions,
       entry_id, created_at FROM lanes_new.usage_events;
INSERT INTO charges SELECT id, customer_id, reservation_id, event_id, request_id, seq, capture_id, final,
       request_hash, model, occurred_at, usage, dimensions, price_book, price_version, lines, charged,
       from_hold, from_lots, from_receivable, released, entry_id, created_at FROM lanes_new.charges;
INSERT INTO usage_counters SELECT customer_id, period, book_id, rule_id, quantity FROM lanes_new.usage_counters;
INSERT INTO outbox SELECT id, topic, customer_id, dedup_key, payload, created_at, delivered_at FROM lanes_new.outbox;
INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
SELECT scope, key, request_hash, status, response, created_at FROM lanes_new.idempotency_records
    ON CONFLICT (scope, key) DO NOTHING;
"""

PLAIN_TRIGGERS = r"""
CREATE OR REPLACE FUNCTION ledger_account_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO account_balances (account_id, stripe, normal_sign, lower_bound)
    SELECT NEW.id, s, CASE WHEN NEW.type IN ('asset', 'expense') THEN 1 ELSE -1 END, NEW.lower_bound
    FROM generate_series(0, NEW.stripes - 1) AS s;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.code IS DISTINCT FROM OLD.code OR NEW.type IS DISTINCT FROM OLD.type
       OR NEW.asset IS DISTINCT FROM OLD.asset OR NEW.stripes IS DISTINCT FROM OLD.stripes
       OR NEW.customer_id IS DISTINCT FROM OLD.customer_id OR NEW.id IS DISTINCT FROM OLD.id THEN
        RAISE EXCEPTION 'accounts: only lower_bound may change' USING ERRCODE = 'restrict_violation';
    END IF;
    UPDATE account_balances SET lower_bound = NEW.lower_bound WHERE account_id = NEW.id;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    entry bigint;
    bad text;
BEGIN
    FOR entry IN SELECT DISTINCT entry_id FROM new_postings LOOP
        IF (SELECT j.txid FROM journal_entries j WHERE j.id = entry) <> pg_current_xact_id() THEN
            RAISE EXCEPTION 'entry % was written by an earlier transaction: its postings are final', entry
                USING ERRCODE = 'restrict_violation';
        END IF;
    END LOOP;
    SELECT n.entry_id, a.asset INTO entry, bad
      FROM new_postings n
      CROSS JOIN LATERAL (SELECT asset FROM accounts WHERE id = n.account_id) a
     GROUP BY n.entry_id, a.asset
    HAVING sum(n.amount) <> 0
     LIMIT 1;
    IF entry IS NOT NULL AND bad IS NOT NULL THEN
        RAISE EXCEPTION 'these postings leave journal entry % unbalanced in %', entry, bad
            USING ERRCODE = 'check_violation';
    END IF;
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
ALTER FUNCTION ledger_apply_postings() RESET plan_cache_mode;
CREATE OR REPLACE FUNCTION ledger_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    legs int;
    bad text;
BEGIN
    SELECT count(*), (array_agg(t.asset) FILTER (WHERE t.total <> 0))[1] INTO legs, bad
      FROM (SELECT a.asset, sum(p.amount) AS total
              FROM postings p JOIN accounts a ON a.id = p.account_id
             WHERE p.entry_id = NEW.id
             GROUP BY a.asset) t;
    IF legs = 0 THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal entry % does not balance in %', NEW.id, bad
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION ledger_check_entry_balanced() RESET plan_cache_mode;
CREATE TRIGGER postings_immutable BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER postings_apply AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply_postings();
CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER journal_entries_txid BEFORE INSERT ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_txid();
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
CREATE TRIGGER lots_guard BEFORE UPDATE OR DELETE ON lots
    FOR EACH ROW EXECUTE FUNCTION wallets_lot_guard();
CREATE TRIGGER reservations_guard BEFORE UPDATE OR DELETE ON reservations
    FOR EACH ROW EXECUTE FUNCTION wallets_reservation_guard();
CREATE TRIGGER reservation_holds_immutable BEFORE UPDATE OR DELETE ON reservation_holds
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER usage_events_immutable BEFORE UPDATE OR DELETE ON usage_events
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER charges_immutable BEFORE UPDATE OR DELETE ON charges
    FOR EACH ROW EXECUTE FUNCTION ledger_reject_change();

DROP FUNCTION ledger_post(jsonb, smallint[], bigint[], smallint[]);
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
        IF new_id IS NULL THEN
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


def upgrade() -> None:
    lanes = lane_count()
    op.execute(FUNCTIONS.replace("{lanes}", str(lanes)))
    op.execute("CREATE SCHEMA lanes_old;\n" + "".join(
        f"ALTER TABLE {t} SET SCHEMA lanes_old;\n" for t in MOVED))
    op.execute(PARTITIONED)
    for table in TABLES:
        fill = " WITH (fillfactor = 50)" if table == "account_balances" else ""
        op.execute("".join(f"CREATE TABLE {table}_l{k} PARTITION OF {table} FOR VALUES IN ({k}){fill};\n"
                           for k in range(lanes)))
    for table in MOVED:
        op.execute(COPY[table])
    for table, column in SEQUENCES:
        op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                   f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
    op.execute("DROP SCHEMA lanes_old CASCADE")
    op.execute(TRIGGERS)
    op.execute("".join(PARTITION_TRIGGERS.replace("{k}", str(k)) for k in range(lanes)))
    op.execute(LEDGER_POST)


def downgrade() -> None:
    op.execute("CREATE SCHEMA lanes_new;\n" + "".join(
        f"ALTER TABLE {t} SET SCHEMA lanes_new;\n" for t in TABLES))
    op.execute(PLAIN)
    op.execute(COPY_BACK)
    for table, column in SEQUENCES:
        op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                   f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
    op.execute("DROP SCHEMA lanes_new CASCADE")
    op.execute(PLAIN_TRIGGERS)
    op.execute("""
ALTER TABLE customers DROP COLUMN lane;
DROP FUNCTION ledger_entry_lane(text), ledger_balance_lane(text, smallint, smallint), ledger_lane(text),
    ledger_lanes();
DROP TABLE ledger_settings;
""")
