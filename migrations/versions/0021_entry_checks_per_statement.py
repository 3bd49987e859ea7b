"""Entries checked per statement: an entry inserted with `checked_in_statement` is checked (it has
postings, and they balance per asset) at the end of the very statement that inserted it, all of
the statement's entries at once; every other entry is checked at commit, one by one, as before.

The deferred constraint trigger ran once per entry at commit (~0.2-0.5 ms each on the shared
machine, the largest per-entry cost of PostgreSQL left after 0020). `ledger_post`'s set-based path
now inserts a batch's entries and their postings in one statement (data-modifying CTEs: the
statement's AFTER triggers see both), so one statement-level trigger checks the batch.

The flag cannot be used to skip a check: an entry flagged is checked when its statement ends,
whether or not its postings came in that statement (an entry flagged without postings in its own
statement is refused then); one not flagged is checked at commit. Later statements cannot unbalance
a checked entry: each statement's postings must balance per entry on their own (apply trigger),
and postings and entries (the flag included) are immutable.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE journal_entries ADD COLUMN checked_in_statement boolean NOT NULL DEFAULT false;

CREATE FUNCTION ledger_check_statement_entries() RETURNS trigger LANGUAGE plpgsql AS $$
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
ALTER FUNCTION ledger_check_statement_entries() SET plan_cache_mode = force_generic_plan;

CREATE TRIGGER journal_entries_checked AFTER INSERT ON journal_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_statement_entries();
DROP TRIGGER journal_entries_balanced ON journal_entries;
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NOT NEW.checked_in_statement) EXECUTE FUNCTION ledger_check_entry_balanced();
"""

# Statement triggers fire only for the table a statement names: each partition gets its own.
PARTITION = r"""
CREATE TRIGGER journal_entries_checked AFTER INSERT ON journal_entries_l{k}
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_check_statement_entries();
"""

DOWNGRADE = r"""
DROP TRIGGER journal_entries_balanced ON journal_entries;
CREATE CONSTRAINT TRIGGER journal_entries_balanced AFTER INSERT ON journal_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_entry_balanced();
DROP TRIGGER journal_entries_checked ON journal_entries;
"""


def _previous():
    """0020's module: its ledger_post, which inserts entries and postings in two statements."""
    path = Path(__file__).with_name("0020_set_based_posting.py")
    spec = importlib.util.spec_from_file_location("migration_0020_set_based_posting", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ledger_post(sql: str) -> str:
    start = sql.index("CREATE FUNCTION ledger_post(")
    end = sql.index("END $$;", start) + len("END $$;")
    return sql[start:end]


# 0020's set-based INSERTs of the entries and of their postings become one statement, and its
# entries are flagged, so the statement's trigger checks them all at once.
_ENTRIES_AND_POSTINGS_0020 = """    WITH e AS (SELECT v, o FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, o)),
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
"""
_ENTRIES_AND_POSTINGS = """    WITH e AS (SELECT v, o FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, o)),
    ins AS (
        INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at, metadata,
                                     checked_in_statement)
        SELECT lane_, v ->> 'k', decode(v ->> 'h', 'hex'), v ->> 'kind', v ->> 'c',
               (v ->> 'at')::timestamptz, coalesce(v -> 'm', '{}'::jsonb), true
          FROM e ORDER BY o
        ON CONFLICT ON CONSTRAINT journal_entries_key_unique DO NOTHING
        RETURNING id, customer_id, key),
    x AS (SELECT e.o, ins.id, e.v FROM e JOIN ins ON ins.key = e.v ->> 'k'
                                          AND ins.customer_id IS NOT DISTINCT FROM e.v ->> 'c'),
    legs AS (
        INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
        SELECT lane_, x.id, (l ->> 0)::bigint, (l ->> 1)::smallint, (l ->> 2)::bigint
          FROM x CROSS JOIN LATERAL jsonb_array_elements(x.v -> 'p') l
         ORDER BY x.o)
    SELECT array_agg(x.o ORDER BY x.o), array_agg(x.id ORDER BY x.o) INTO idxs, ids FROM x;
    IF coalesce(array_length(ids, 1), 0) <> n THEN
        RAISE EXCEPTION 'ledger_post: an entry key of the batch was written by a concurrent transaction'
            USING ERRCODE = 'serialization_failure';
    END IF;
"""


def upgrade() -> None:
    previous = _ledger_post(_previous().UPGRADE)
    assert _ENTRIES_AND_POSTINGS_0020 in previous, "0020's ledger_post is not the one this migration rewrites"
    op.execute(UPGRADE)
    lanes = op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one()
    op.execute("".join(PARTITION.replace("{k}", str(k)) for k in range(int(lanes))))
    op.execute("DROP FUNCTION ledger_post(jsonb, smallint[], bigint[], smallint[]);\n"
               + previous.replace(_ENTRIES_AND_POSTINGS_0020, _ENTRIES_AND_POSTINGS))


def downgrade() -> None:
    lanes = op.get_bind().exec_driver_sql("SELECT lanes FROM ledger_settings").scalar_one()
    op.execute("DROP FUNCTION ledger_post(jsonb, smallint[], bigint[], smallint[]);\n"
               + _ledger_post(_previous().UPGRADE))
    op.execute("".join(f"DROP TRIGGER journal_entries_checked ON journal_entries_l{k};\n" for k in range(int(lanes))))
    op.execute(DOWNGRADE)
    op.execute("DROP FUNCTION ledger_check_statement_entries();\n"
               "ALTER TABLE journal_entries DROP COLUMN checked_in_statement;")
