"""Set-based posting: `ledger_post` writes a batch's entries with one INSERT and their postings with
one more, and the postings' statement trigger updates the balances with one UPDATE per lane.

Before, `ledger_post` looped over the entries (a bound probe per delta, an INSERT of the entry,
an INSERT of its postings, so the apply trigger ran once per entry, and updated the balances one
row at a time): ~0.6 ms of PostgreSQL per entry (issue 10, acceptance 5). Now the common batch, whose
keys are all new and distinct and which crosses no bound (each entry checked on top of the
ones before it, as the loop did: a running sum per balance row), is posted by a few statements;
any other batch takes the loop, kept as `ledger_post_each`, so replays, conflicts and bound
refusals answer exactly as before. A key written by a concurrent transaction meanwhile makes the
set-based INSERT skip it: the batch then fails as a serialization failure and is retried whole.

The checks stay in the database and are not weakened: postings only into entries of this
transaction, every statement's postings balanced per entry and asset (apply trigger), every
entry with postings and balanced at commit (the deferred constraint trigger, unchanged), balance
rows within their bounds (CHECK), postings and entries immutable (row triggers, unchanged).
Balance rows are locked in (account, stripe) order within each lane, lanes in order.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER FUNCTION ledger_post(jsonb, smallint[], bigint[], smallint[]) RENAME TO ledger_post_each;

-- batch, lock_* : as 0009's ledger_post. One outcome per entry, in order. Every statement names
-- one lane (a plpgsql variable: the other lanes' partitions are pruned), so a batch reads no page
-- of another lane's and SERIALIZABLE batches of different lanes never conflict.
CREATE FUNCTION ledger_post(batch jsonb, lock_lanes smallint[], lock_accounts bigint[],
                            lock_stripes smallint[])
RETURNS TABLE (idx int, status text, entry_id bigint, detail text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    n int := jsonb_array_length(batch);
    lane_ smallint;
    lanes smallint[];
    blane smallint;
    careful boolean := false;
    idxs bigint[];
    ids bigint[];
BEGIN
    -- Every balance row the batch touches, locked in the caller's (sorted) order, lane by lane.
    FOR blane IN SELECT DISTINCT l FROM unnest(lock_lanes) AS l ORDER BY 1 LOOP
        PERFORM 1 FROM account_balances b
          JOIN unnest(lock_lanes, lock_accounts, lock_stripes) WITH ORDINALITY AS u(l, a, s, o)
            ON u.l = blane AND b.account_id = u.a AND b.stripe = u.s
         WHERE b.lane = blane
         ORDER BY u.o FOR UPDATE OF b;
    END LOOP;
    IF n = 0 THEN
        RETURN;
    END IF;

    SELECT array_agg(DISTINCT ledger_entry_lane(e ->> 'c')) INTO lanes FROM jsonb_array_elements(batch) e;
    lane_ := lanes[1];
    careful := array_length(lanes, 1) > 1  -- entries of several lanes: one by one
        OR EXISTS (  -- a key twice in the batch
           SELECT 1 FROM jsonb_array_elements(batch) e GROUP BY e ->> 'c', e ->> 'k' HAVING count(*) > 1)
        OR EXISTS (  -- a key already in the journal (a replay or a conflict)
           SELECT 1 FROM jsonb_array_elements(batch) e
             JOIN journal_entries j ON j.customer_id = e ->> 'c' AND j.key = e ->> 'k'
            WHERE j.lane = lane_)
        OR EXISTS (
           SELECT 1 FROM jsonb_array_elements(batch) e
             JOIN journal_entries j ON j.customer_id IS NULL AND j.key = e ->> 'k'
            WHERE j.lane = lane_ AND e ->> 'c' IS NULL);
    -- a bound crossed by an entry on top of the ones before it (a running sum per balance row)
    FOR blane IN SELECT DISTINCT (d ->> 3)::smallint FROM jsonb_array_elements(batch) e,
                        jsonb_array_elements(e -> 'd') d ORDER BY 1 LOOP
        EXIT WHEN careful;
        careful := EXISTS (
           SELECT 1
             FROM (SELECT (d ->> 0)::bigint AS account, (d ->> 1)::smallint AS stripe,
                          sum((d ->> 2)::bigint) OVER (PARTITION BY d ->> 0, d ->> 1 ORDER BY e.o) AS upto
                     FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, o)
                    CROSS JOIN LATERAL jsonb_array_elements(e.v -> 'd') d
                    WHERE (d ->> 3)::smallint = blane) x
             JOIN account_balances b ON b.account_id = x.account AND b.stripe = x.stripe
            WHERE b.lane = blane AND b.lower_bound IS NOT NULL
              AND b.normal_sign * (b.debits - b.credits + x.upto) < b.lower_bound);
    END LOOP;
    IF careful THEN  -- entry by entry, as before (the rows are locked already)
        RETURN QUERY SELECT * FROM ledger_post_each(batch, '{}', '{}', '{}');
        RETURN;
    END IF;

    WITH e AS (SELECT v, o FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, o)),
    ins AS (
        INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata)
        SELECT lane_, v ->> 'k', decode(v ->> 'h', 'hex'), v ->> 'kind', v ->> 'c',
               (v ->> 'at')::timestamptz, coalesce(v -> 'm', '{}'::jsonb)
          FROM e ORDER BY o
        ON CONFLICT ON CONSTRAINT journal_entries_key_unique DO NOTHING
        RETURNING id, customer_id, key)
    SELECT array_agg(e.o ORDER BY e.o), array_agg(ins.id ORDER BY e.o) INTO idxs, ids
      FROM e JOIN ins ON ins.key = e.v ->> 'k' AND ins.customer_id IS NOT DISTINCT FROM e.v ->> 'c';
    IF coalesce(array_length(ids, 1), 0) <> n THEN
        RAISE EXCEPTION 'ledger_post: an entry key of the batch was written by a concurrent transaction'
            USING ERRCODE = 'serialization_failure';
    END IF;

    INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
    SELECT lane_, x.id, (l ->> 0)::bigint, (l ->> 1)::smallint, (l ->> 2)::bigint
      FROM unnest(idxs, ids) AS x(o, id)
      JOIN jsonb_array_elements(batch) WITH ORDINALITY AS e(v, o) ON e.o = x.o
     CROSS JOIN LATERAL jsonb_array_elements(e.v -> 'p') l
     ORDER BY x.o;

    RETURN QUERY SELECT x.o::int, 'posted'::text, x.id, NULL::text FROM unnest(idxs, ids) AS x(o, id);
END $$;

-- Postings go only into entries of this transaction and balance per entry and asset in each
-- statement; the balances follow in the same statement. Each lookup names its lane.
CREATE OR REPLACE FUNCTION ledger_apply_postings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    bad text;
    bad_entry bigint;
    changed int;
BEGIN
    FOR r IN SELECT lane, array_agg(DISTINCT n.entry_id) AS entries FROM new_postings n GROUP BY lane LOOP
        SELECT j.id INTO bad_entry FROM journal_entries j  -- primary-key probes, in one lane
         WHERE j.lane = r.lane AND j.id = ANY (r.entries) AND j.txid <> pg_current_xact_id()
         LIMIT 1;
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
ALTER FUNCTION ledger_apply_postings() SET plan_cache_mode = force_generic_plan;
"""


def _lanes_migration():
    """0009's module, whose ledger_apply_postings the downgrade restores."""
    path = Path(__file__).with_name("0009_lanes.py")
    spec = importlib.util.spec_from_file_location("migration_0009_lanes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    apply = re.search(r"CREATE OR REPLACE FUNCTION ledger_apply_postings\(\).*?END \$\$;",
                      _lanes_migration().TRIGGERS, re.S)
    assert apply is not None
    op.execute("DROP FUNCTION ledger_post(jsonb, smallint[], bigint[], smallint[]);\n"
               "ALTER FUNCTION ledger_post_each(jsonb, smallint[], bigint[], smallint[]) RENAME TO ledger_post;\n"
               + apply.group(0) + "\nALTER FUNCTION ledger_apply_postings() SET plan_cache_mode = force_generic_plan;")
