"""Cheaper journal writes: the statement checks of a posted batch read each thing once, and probe.

Profiled on PostgreSQL 15 with auto_explain (one lane batch of 256 usage entries, 2 postings
each; README, Performance): after `ledger_post`'s INSERT of the entries and their postings, the
entries' statement check, the postings' apply trigger and the row-by-row foreign key of the
postings' accounts cost more than the INSERTs themselves. Each is now cheaper, and checks as much:

- `ledger_check_statement_entries` (entries flagged `checked_in_statement`, migration 0021)
  checked two things at the end of the statement: that each entry has postings, and that they
  balance per asset. The second re-read every posting of the batch and its account. It is what
  the postings' apply trigger already proves: an entry inserted by a statement can have no
  posting from an earlier statement (a posting's entry must exist when the posting's statement
  ends), every statement's postings balance per entry and asset on their own (each table's
  apply trigger, the parent's and each partition's), and a sum of balanced sets is balanced. So
  only the first remains, as one primary-key-like probe per entry into its lane's partition of
  postings (by `postings_l<lane>`'s index on entry_id). The generic plan of the old probe
  (`p.lane = $1 AND p.entry_id = e.id` on the partitioned table) ANDed a bitmap of the whole
  lane out of the primary key for every entry: its cost grew with the lane (1.4 ms an entry at
  42,000 postings in a lane, on tables not yet analyzed, as every bench's are).
- The postings' foreign key to accounts (a query per posting, 512 for the batch) becomes part
  of the apply trigger, which read every posting's account twice (the balance check, then the
  balance rows' lanes): now each distinct account is read once, by its primary key, and a
  posting to no account is refused there as foreign_key_violation. As strong as the key was:
  postings cannot change (row trigger), and accounts cannot be deleted or renumbered (their
  guard) nor, now, truncated.
- `ledger_post`'s key check, bound check and balance locks, and the apply trigger's locks, probe
  by key (`LATERAL ... LIMIT 1`) instead of joining a lane's rows; `ledger_post_each` finds an
  entry already there by its unique key (IS NOT DISTINCT FROM on the customer was no index
  condition: a replay read the lane's every key).
- These four functions price sequential scans out (`enable_seqscan = off`): their generic plans
  are kept per session, and one made while a table was a page or two probed by a sequential scan
  for as long as the session lived. Every table they read, they read by key.
- The index of the entries' request ids holds only entries that have one (usage events' entries
  have an event id instead: one index entry fewer for each). Every query by request id compares
  it with `=`, which the partial index serves.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

# One branch per lane (lanes are fixed when the database is made): each probes its lane's
# partition of postings by entry id, a static statement whose plan is kept (EXECUTE of a
# formatted statement planned anew each batch: ~0.2 ms).
CHECK_ENTRIES = r"""
CREATE OR REPLACE FUNCTION ledger_check_statement_entries() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    r record;
    bad_entry bigint;
BEGIN
    -- That the postings balance is the apply trigger's check of the same statement's postings.
    -- The lane's partition is named, so its only index on entry_id serves the probes, whatever
    -- the statistics (the partitioned table's lane condition led generic plans to the primary key).
    FOR r IN SELECT lane, array_agg(id) AS ids FROM new_entries WHERE checked_in_statement GROUP BY lane LOOP
        CASE r.lane
{branches}
        END CASE;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'journal entry % has no postings', bad_entry USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
"""

CHECK_ENTRIES_LANE = """            WHEN {k} THEN
                SELECT e.id INTO bad_entry FROM unnest(r.ids) AS e(id)
                  LEFT JOIN LATERAL (SELECT 1 AS hit FROM postings_l{k} p WHERE p.entry_id = e.id LIMIT 1) p ON true
                 WHERE p.hit IS NULL LIMIT 1;"""


def _check_entries() -> str:
    lanes = int(op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one())
    return CHECK_ENTRIES.replace("{branches}", "\n".join(CHECK_ENTRIES_LANE.replace("{k}", str(k))
                                                          for k in range(lanes)))


APPLY_POSTINGS = r"""
CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    r record;
    bad text;
    bad_entry bigint;
    missing boolean;
    ids bigint[];
    assets text[];
    customers text[];
    stripes smallint[];
    gap bigint;
BEGIN
    FOR r IN SELECT lane, array_agg(DISTINCT n.entry_id) AS entries FROM new_postings n GROUP BY lane LOOP
        SELECT e.id, j.txid IS NULL INTO bad_entry, missing FROM unnest(r.entries) AS e(id)
          LEFT JOIN LATERAL (SELECT j.txid FROM journal_entries j  -- primary-key probes, in one lane
                              WHERE j.lane = r.lane AND j.id = e.id LIMIT 1) j ON true
         WHERE j.txid IS DISTINCT FROM pg_current_xact_id()
         LIMIT 1;
        IF missing THEN
            RAISE EXCEPTION 'postings reference journal_entries: no entry (lane, id) = (%, %)',
                r.lane, bad_entry USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'entry % was written by an earlier transaction: its postings are final',
                bad_entry USING ERRCODE = 'restrict_violation';
        END IF;
    END LOOP;
    -- The statement's accounts, each read once (primary-key probes); a posting to none is refused.
    SELECT array_agg(d.account_id), array_agg(a.asset), array_agg(a.customer_id), array_agg(a.stripes),
           min(d.account_id) FILTER (WHERE a.asset IS NULL)
      INTO ids, assets, customers, stripes, bad_entry
      FROM (SELECT DISTINCT n.account_id FROM new_postings n) d
      LEFT JOIN LATERAL (SELECT x.asset, x.customer_id, x.stripes FROM accounts x
                          WHERE x.id = d.account_id LIMIT 1) a ON true;
    IF bad_entry IS NOT NULL THEN
        RAISE EXCEPTION 'postings reference accounts: no account %', bad_entry
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.entry_id, u.asset INTO bad_entry, bad
      FROM new_postings n JOIN unnest(ids, assets) AS u(id, asset) ON u.id = n.account_id
     GROUP BY n.entry_id, u.asset
    HAVING sum(n.amount) <> 0
     LIMIT 1;
    IF bad_entry IS NOT NULL THEN
        RAISE EXCEPTION 'these postings leave journal entry % unbalanced in %', bad_entry, bad
            USING ERRCODE = 'check_violation';
    END IF;
    -- One UPDATE per balance lane (usually one: a customer's rows and its lane's platform stripes),
    -- its rows locked first in (account, stripe) order.
    FOR r IN
        SELECT d.lane, array_agg(d.account_id ORDER BY d.account_id, d.stripe) AS accounts,
               array_agg(d.stripe ORDER BY d.account_id, d.stripe) AS stripes,
               array_agg(d.dr ORDER BY d.account_id, d.stripe) AS drs,
               array_agg(d.cr ORDER BY d.account_id, d.stripe) AS crs
          FROM (SELECT ledger_balance_lane(u.customer_id, u.stripes, n.stripe) AS lane, n.account_id, n.stripe,
                       coalesce(sum(n.amount) FILTER (WHERE n.amount > 0), 0) AS dr,
                       coalesce(-sum(n.amount) FILTER (WHERE n.amount < 0), 0) AS cr
                  FROM new_postings n JOIN unnest(ids, customers, stripes) AS u(id, customer_id, stripes)
                    ON u.id = n.account_id
                 GROUP BY 1, n.account_id, n.stripe) d
         GROUP BY d.lane ORDER BY d.lane
    LOOP
        -- Probes by the primary key, each row locked as it is found, in this order (a join would
        -- read the lane's every row when its statistics are missing, as a new database's are).
        SELECT min(u.o) FILTER (WHERE x.hit IS NULL) INTO gap
          FROM unnest(r.accounts, r.stripes) WITH ORDINALITY AS u(a, s, o)
          LEFT JOIN LATERAL (SELECT 1 AS hit FROM account_balances b
                              WHERE b.lane = r.lane AND b.account_id = u.a AND b.stripe = u.s FOR UPDATE) x ON true;
        IF gap IS NOT NULL THEN
            RAISE EXCEPTION 'posting to account % has no balance stripe %', r.accounts[gap], r.stripes[gap]
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        -- account_id = ANY: an index condition with the lane's (PostgreSQL 18 then probes each
        -- account even without statistics; 15 still reads the lane until they are gathered).
        UPDATE account_balances b SET debits = b.debits + u.dr, credits = b.credits + u.cr
          FROM unnest(r.accounts, r.stripes, r.drs, r.crs) AS u(a, s, dr, cr)
         WHERE b.lane = r.lane AND b.account_id = ANY (r.accounts) AND b.account_id = u.a AND b.stripe = u.s;
    END LOOP;
    RETURN NULL;
END $$;
"""

UPGRADE = r"""
ALTER TABLE postings DROP CONSTRAINT postings_account_id_fkey;
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
DROP INDEX journal_entries_request;
CREATE INDEX journal_entries_request ON journal_entries ((metadata ->> 'request_id'))
    WHERE (metadata ->> 'request_id') IS NOT NULL;
"""

# The definitions this migration replaces (0021's entries check; 0025's apply trigger), as
# pg_get_functiondef gave them at 0026.
CHECK_ENTRIES_0021 = r"""
CREATE OR REPLACE FUNCTION ledger_check_statement_entries() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r record;
    bad_entry bigint;
    bad text;
BEGIN
    FOR r IN SELECT lane, array_agg(id) AS ids FROM new_entries WHERE checked_in_statement GROUP BY lane LOOP
        SELECT e.id INTO bad_entry FROM unnest(r.ids) AS e(id)
         WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.lane = r.lane AND p.entry_id = e.id)
         LIMIT 1;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'journal entry % has no postings', bad_entry USING ERRCODE = 'check_violation';
        END IF;
        SELECT p.entry_id, a.asset INTO bad_entry, bad
          FROM postings p JOIN accounts a ON a.id = p.account_id
         WHERE p.lane = r.lane AND p.entry_id = ANY (r.ids)
         GROUP BY p.entry_id, a.asset
        HAVING sum(p.amount) <> 0
         LIMIT 1;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'journal entry % does not balance in %', bad_entry, bad
                USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
"""

APPLY_POSTINGS_0025 = r"""
CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r record;
    bad text;
    bad_entry bigint;
    missing boolean;
    changed int;
BEGIN
    FOR r IN SELECT lane, array_agg(DISTINCT n.entry_id) AS entries FROM new_postings n GROUP BY lane LOOP
        SELECT e.id, j.txid IS NULL INTO bad_entry, missing FROM unnest(r.entries) AS e(id)
          LEFT JOIN LATERAL (SELECT j.txid FROM journal_entries j  -- primary-key probes, in one lane
                              WHERE j.lane = r.lane AND j.id = e.id LIMIT 1) j ON true
         WHERE j.txid IS DISTINCT FROM pg_current_xact_id()
         LIMIT 1;
        IF missing THEN
            RAISE EXCEPTION 'postings reference journal_entries: no entry (lane, id) = (%, %)',
                r.lane, bad_entry USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF bad_entry IS NOT NULL THEN
            RAISE EXCEPTION 'entry % was written by an earlier transaction: its postings are final',
                bad_entry USING ERRCODE = 'restrict_violation';
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
    -- One UPDATE per balance lane (usually one: a customer's rows and its lane's platform stripes),
    -- its rows locked first in (account, stripe) order.
    FOR r IN
        SELECT d.lane, array_agg(d.account_id ORDER BY d.account_id, d.stripe) AS accounts,
               array_agg(d.stripe ORDER BY d.account_id, d.stripe) AS stripes,
               array_agg(d.dr ORDER BY d.account_id, d.stripe) AS drs,
               array_agg(d.cr ORDER BY d.account_id, d.stripe) AS crs
          FROM (SELECT ledger_balance_lane(a.customer_id, a.stripes, n.stripe) AS lane, n.account_id, n.stripe,
                       coalesce(sum(n.amount) FILTER (WHERE n.amount > 0), 0) AS dr,
                       coalesce(-sum(n.amount) FILTER (WHERE n.amount < 0), 0) AS cr
                  FROM new_postings n JOIN accounts a ON a.id = n.account_id
                 GROUP BY 1, n.account_id, n.stripe) d
         GROUP BY d.lane ORDER BY d.lane
    LOOP
        PERFORM 1 FROM account_balances b
          JOIN unnest(r.accounts, r.stripes) WITH ORDINALITY AS u(a, s, o) ON b.account_id = u.a AND b.stripe = u.s
         WHERE b.lane = r.lane
         ORDER BY u.o FOR UPDATE OF b;
        UPDATE account_balances b SET debits = b.debits + u.dr, credits = b.credits + u.cr
          FROM unnest(r.accounts, r.stripes, r.drs, r.crs) AS u(a, s, dr, cr)
         WHERE b.lane = r.lane AND b.account_id = u.a AND b.stripe = u.s;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed <> array_length(r.accounts, 1) THEN
            SELECT u.a, u.s INTO bad_entry, bad FROM unnest(r.accounts, r.stripes) AS u(a, s)
             WHERE NOT EXISTS (SELECT 1 FROM account_balances b
                                WHERE b.lane = r.lane AND b.account_id = u.a AND b.stripe = u.s)
             LIMIT 1;
            RAISE EXCEPTION 'posting to account % has no balance stripe %', bad_entry, bad
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
"""

# ledger_post (0020, as 0021 and 0024 left it): the statements that meet a batch with a lane's
# balance rows or entries become probes by their keys. Joined, they were planned (generically,
# once per session) from the tables' statistics, and on a table not yet analyzed a lane
# condition looks selective: the lane's every row was read, once per batch.
SIGNATURE = "(jsonb, smallint[], bigint[], smallint[])"
LEDGER_POST_FRAGMENTS = [
    ("""        PERFORM 1 FROM account_balances b
          JOIN unnest(lock_lanes, lock_accounts, lock_stripes) WITH ORDINALITY AS u(l, a, s, o)
            ON u.l = blane AND b.account_id = u.a AND b.stripe = u.s
         WHERE b.lane = blane
         ORDER BY u.o FOR UPDATE OF b;
""", """        PERFORM 1 FROM unnest(lock_lanes, lock_accounts, lock_stripes) WITH ORDINALITY AS u(l, a, s, o)
          CROSS JOIN LATERAL (SELECT 1 FROM account_balances b  -- primary-key probes, locked in this order
                               WHERE b.lane = blane AND b.account_id = u.a AND b.stripe = u.s FOR UPDATE) b
         WHERE u.l = blane;
"""),
    ("""        OR EXISTS (  -- a key already in the journal (a replay or a conflict)
           SELECT 1 FROM jsonb_array_elements(batch) e
             JOIN journal_entries j ON j.customer_id = e ->> 'c' AND j.key = e ->> 'k'
            WHERE j.lane = lane_)
        OR EXISTS (
           SELECT 1 FROM jsonb_array_elements(batch) e
             JOIN journal_entries j ON j.customer_id IS NULL AND j.key = e ->> 'k'
            WHERE j.lane = lane_ AND e ->> 'c' IS NULL);
""", """        OR EXISTS (  -- a key already in the journal (a replay or a conflict): a probe of the key each
           SELECT 1 FROM jsonb_array_elements(batch) e
            CROSS JOIN LATERAL (SELECT 1 FROM journal_entries j
                                 WHERE j.lane = lane_ AND j.customer_id = e ->> 'c' AND j.key = e ->> 'k'
                                 LIMIT 1) j)
        OR EXISTS (
           SELECT 1 FROM jsonb_array_elements(batch) e
            CROSS JOIN LATERAL (SELECT 1 FROM journal_entries j
                                 WHERE j.lane = lane_ AND j.customer_id IS NULL AND j.key = e ->> 'k'
                                 LIMIT 1) j
            WHERE e ->> 'c' IS NULL);
"""),
    ("""             JOIN account_balances b ON b.account_id = x.account AND b.stripe = x.stripe
            WHERE b.lane = blane AND b.lower_bound IS NOT NULL
""", """            CROSS JOIN LATERAL (SELECT b.normal_sign, b.debits, b.credits, b.lower_bound
                                  FROM account_balances b  -- a primary-key probe each
                                 WHERE b.lane = blane AND b.account_id = x.account AND b.stripe = x.stripe
                                 LIMIT 1) b
            WHERE b.lower_bound IS NOT NULL
"""),
]


# ledger_post_each (the entry-by-entry path: replays, conflicts, refusals): its read of an entry
# already there named the customer with IS NOT DISTINCT FROM, which is no index condition: the
# lane's every key was read for each replayed entry (5 ms at 10,000 entries in a lane).
LEDGER_POST_EACH_FRAGMENTS = [
    ("""            SELECT j.id, j.request_hash INTO existing FROM journal_entries j
             WHERE j.lane = lane_ AND j.customer_id IS NOT DISTINCT FROM e ->> 'c' AND j.key = e ->> 'k';
""", """            IF e ->> 'c' IS NULL THEN  -- a probe of the unique key either way
                SELECT j.id, j.request_hash INTO existing FROM journal_entries j
                 WHERE j.lane = lane_ AND j.customer_id IS NULL AND j.key = e ->> 'k';
            ELSE
                SELECT j.id, j.request_hash INTO existing FROM journal_entries j
                 WHERE j.lane = lane_ AND j.customer_id = e ->> 'c' AND j.key = e ->> 'k';
            END IF;
"""),
]


# The plans of these functions are generic and kept for the session; made while a table is still
# small, a probe by key was planned as a sequential scan (cheapest on a page or two) and stayed
# one as the table grew (a seq scan for each entry: ingest's PostgreSQL CPU an event doubled in
# a 10 s bench). Every table they read is read by key, so sequential scans are priced out.
NO_SEQSCAN = ("ledger_post", "ledger_post_each")


def _rewrite(old_index: int, new_index: int) -> None:
    conn = op.get_bind()
    if new_index == 0:
        op.execute("".join(f"ALTER FUNCTION {name}{SIGNATURE} RESET enable_seqscan;\n" for name in NO_SEQSCAN))
    for name, fragments in (("ledger_post", LEDGER_POST_FRAGMENTS), ("ledger_post_each", LEDGER_POST_EACH_FRAGMENTS)):
        definition = conn.exec_driver_sql(f"SELECT pg_get_functiondef('{name}{SIGNATURE}'::regprocedure)").scalar_one()
        for fragment in fragments:
            old, new = fragment[old_index], fragment[new_index]
            assert definition.count(old) == 1, f"{name} is not the function this migration rewrites: {old}"
            definition = definition.replace(old, new)
        op.execute(definition)
    if new_index == 1:
        op.execute("".join(f"ALTER FUNCTION {name}{SIGNATURE} SET enable_seqscan = off;\n" for name in NO_SEQSCAN))


DOWNGRADE = r"""
DROP INDEX journal_entries_request;
CREATE INDEX journal_entries_request ON journal_entries ((metadata ->> 'request_id'));
DROP TRIGGER accounts_no_truncate ON accounts;
ALTER TABLE postings ADD CONSTRAINT postings_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (id);
"""


def upgrade() -> None:
    _rewrite(0, 1)
    op.execute(_check_entries())
    op.execute(APPLY_POSTINGS)
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
    op.execute(APPLY_POSTINGS_0025)
    op.execute(CHECK_ENTRIES_0021)
    _rewrite(1, 0)
