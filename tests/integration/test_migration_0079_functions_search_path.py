"""Migration 0079: the database's checks and write functions find their tables in their own schema.

A plpgsql function resolves a table name through the caller's search_path when it runs, and the
session's temporary schema (`pg_temp`) is searched first unless listed: a session that created
`TEMP TABLE customers (id text)` holding an id could write a row naming a customer there is none of
past 0075's check; the same for 0025's and 0028's checks (`journal_entries`, `usage_events`), the
postings' statement check (`accounts`, `account_balances`: a temporary `account_balances` took the
postings' balance updates, the real balances unmoved) and the deferred balance check (`postings`).
Each such function now runs with `search_path = <its schema>, pg_temp` (pg_catalog first, pg_temp
last), so a temporary table no longer shadows the real one. Raw SQL fails as it would without the
temporary table."""
from __future__ import annotations

import re
import uuid
from urllib.parse import quote

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine

from api.bench.common import scratch_database
from api.runtime import sync_url
from migrations import runner
from tests.integration.migration_steps import a_lane_customer, gone_of_lane

# The functions that name a table (read by hand from their bodies, migrations 0009-0078, and
# 0081's seals_sealed_at_guard, created pinned): each is pinned. The guards that look only at NEW
# and OLD, raise, or notify (ledger_entry_txid, wallets_lot_guard, budgets_guard, ...) name none
# and stay unpinned (nothing to shadow).
NAMING_TABLES = {
    "budget_windows_guard", "ledger_account_created", "ledger_account_guard", "ledger_apply_postings",
    "ledger_check_entry_balanced", "ledger_check_statement_entries", "ledger_post", "ledger_post_each",
    "price_overrides_append", "wallets_check_charge_refs", "wallets_check_delta_customers",
    "wallets_check_true_up_charge_refs", "wallets_check_usage_event_refs", "wallets_credit_note_gapless",
    "wallets_credit_refund_guard", "wallets_customer_guard", "wallets_fold_usage", "wallets_invoice_gapless",
    "wallets_invoice_paid_within_due", "wallets_queue_usage", "seals_sealed_at_guard",
}

_LITERAL_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")


def _functions_naming_tables(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Each function of the schema with a body in a string, that names a relation of the schema
    outside its string literals and comments: its configuration (proconfig)."""
    relations = {name for (name,) in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace")}
    found = {}
    for name, source, config in conn.execute(
            "SELECT proname, prosrc, coalesce(proconfig, '{}') FROM pg_proc "
            "WHERE pronamespace = current_schema()::regnamespace AND prosqlbody IS NULL "
            "AND prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('plpgsql', 'sql'))"):
        words = set(re.findall(r"[a-z_][a-z0-9_]*", _LITERAL_OR_COMMENT.sub(" ", source).lower()))
        if words & relations:
            found[name] = config
    return found


def test_every_function_naming_a_table_searches_its_schema_before_pg_temp(scratch_url):
    with psycopg.connect(scratch_url) as conn:
        found = _functions_naming_tables(conn)
        assert NAMING_TABLES <= set(found)  # the scan finds what reading the bodies found
        unpinned = {name for name, config in found.items() if "search_path=public, pg_temp" not in config}
        assert unpinned == set()


_TRUE_UP = ("INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, rerate_id, units) "
            "VALUES (%s, %s, '2026-11', 'r1', 1, %s, 5)")
_CHARGE = ("INSERT INTO charges (lane, customer_id, event_id, request_id, final, request_hash, model, occurred_at, "
           "usage, price_book, price_version, lines, charged, from_hold, from_lots, from_receivable, entry_id) "
           "VALUES (%s, 'c76', %s, 'req1', true, '\\x00', 'm', now(), '{}', 'b', 'v1', '[]', 0, 0, 0, 0, %s)")
_EVENT = ("INSERT INTO usage_events (lane, event_id, customer_id, request_hash, model, occurred_at, usage, entry_id) "
          "VALUES (%s, %s, 'c76', '\\x00', 'm', now(), '{}', %s)")
_MISSING_ENTRY = 987_654_321  # no journal entry has this id: the scratch database's ids count from 1


def _attack(conn: psycopg.Connection, check: str) -> None:
    """Shadow the table `check` reads with a temporary one holding what the row names, then write
    the row naming what the real table lacks."""
    lane = a_lane_customer(conn, "c76")
    if check == "true_up_charges customer":
        gone = gone_of_lane(conn, lane)
        conn.execute("CREATE TEMP TABLE customers (id text)")
        conn.execute("INSERT INTO customers VALUES (%s)", (gone,))
        conn.execute(_TRUE_UP, (lane, gone, None))
    elif check == "true_up_charges re-rate":
        conn.execute("CREATE TEMP TABLE rerates (id text)")
        conn.execute("INSERT INTO rerates VALUES ('no-such-rerate')")
        conn.execute(_TRUE_UP, (lane, "c76", "no-such-rerate"))
    elif check == "period_deltas customer":
        gone = gone_of_lane(conn, lane)
        conn.execute("CREATE TEMP TABLE customers (id text)")
        conn.execute("INSERT INTO customers VALUES (%s)", (gone,))
        conn.execute("INSERT INTO period_deltas (lane, customer_id, period, items, quantities, amounts) "
                     "VALUES (%s, %s, '2026-11', ARRAY['x']::wallets_rollup_item[], ARRAY[0]::wallets_units[], "
                     "ARRAY[1]::wallets_units[])", (lane, gone))
    elif check == "charges entry":
        conn.execute("CREATE TEMP TABLE journal_entries (lane smallint, id bigint)")
        conn.execute("INSERT INTO journal_entries VALUES (%s, %s)", (lane, _MISSING_ENTRY))
        conn.execute(_EVENT, (lane, "ev1", None))
        conn.execute(_CHARGE, (lane, "ev1", _MISSING_ENTRY))
    elif check == "charges event":
        conn.execute("CREATE TEMP TABLE usage_events (lane smallint, customer_id text, event_id text)")
        conn.execute("INSERT INTO usage_events VALUES (%s, 'c76', 'no-such-event')", (lane,))
        conn.execute(_CHARGE, (lane, "no-such-event", None))
    elif check == "usage_events entry":
        conn.execute("CREATE TEMP TABLE journal_entries (lane smallint, id bigint)")
        conn.execute("INSERT INTO journal_entries VALUES (%s, %s)", (lane, _MISSING_ENTRY))
        conn.execute(_EVENT, (lane, "ev1", _MISSING_ENTRY))
    elif check == "postings account":
        # an account id there is none of, with a balance row: both in temporary tables
        conn.execute("CREATE TEMP TABLE accounts (id bigint, asset text, customer_id text, stripes smallint)")
        conn.execute("INSERT INTO accounts VALUES (%s, 'USD', NULL, 1), (%s, 'USD', NULL, 1)",
                     (_MISSING_ENTRY, _MISSING_ENTRY + 1))
        conn.execute("CREATE TEMP TABLE account_balances (lane smallint, account_id bigint, stripe smallint, "
                     "debits bigint DEFAULT 0, credits bigint DEFAULT 0)")
        conn.execute("INSERT INTO account_balances (lane, account_id, stripe) VALUES (0, %s, 0), (0, %s, 0)",
                     (_MISSING_ENTRY, _MISSING_ENTRY + 1))
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES ('k76', '\\x00', 'raw', now()) RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 7), (%s, %s, -7)",
                     (entry, _MISSING_ENTRY, entry, _MISSING_ENTRY + 1))
    elif check == "entry without postings":
        # the deferred check of an entry written alone reads `postings`: a temporary one holds
        # two balanced legs of the entry, the real one none
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES ('k76', '\\x00', 'raw', now()) RETURNING id").fetchone()[0]
        real = conn.execute("SELECT id FROM accounts LIMIT 1").fetchone()
        assert real is None  # a fresh database: no account yet, so the temporary legs name none
        conn.execute("CREATE TEMP TABLE postings (lane smallint, entry_id bigint, account_id bigint, amount bigint)")
        conn.execute("CREATE TEMP TABLE accounts (id bigint, asset text)")
        conn.execute("INSERT INTO accounts VALUES (1, 'USD'), (2, 'USD')")
        conn.execute("INSERT INTO postings VALUES (0, %s, 1, 7), (0, %s, 2, -7)", (entry, entry))
    conn.commit()


ERRORS = {  # what each check raises when no temporary table is in its way, and its words
    "true_up_charges customer": (psycopg.errors.ForeignKeyViolation, "no customer gone"),
    "true_up_charges re-rate": (psycopg.errors.ForeignKeyViolation, "no re-rate no-such-rerate"),
    "period_deltas customer": (psycopg.errors.ForeignKeyViolation, "no customer gone"),
    "charges entry": (psycopg.errors.ForeignKeyViolation, f"charges reference journal_entries: .* {_MISSING_ENTRY}"),
    "charges event": (psycopg.errors.ForeignKeyViolation, "charges reference usage_events: .*no-such-event"),
    "usage_events entry": (psycopg.errors.ForeignKeyViolation, f"usage_events reference .* {_MISSING_ENTRY}"),
    "postings account": (psycopg.errors.ForeignKeyViolation, f"no account {_MISSING_ENTRY}"),
    "entry without postings": (psycopg.errors.CheckViolation, "has no postings"),
}


@pytest.mark.parametrize("check", list(ERRORS))
def test_a_temporary_table_does_not_shadow_what_a_check_reads(scratch_url, check):
    with psycopg.connect(scratch_url) as conn:
        error, words = ERRORS[check]
        with pytest.raises(error, match=words):
            _attack(conn, check)
        conn.rollback()
        # nothing of the attack stays: 0 rows in each table it wrote to (the customer's own
        # insert went back with it)
        counts = conn.execute("SELECT (SELECT count(*) FROM true_up_charges), (SELECT count(*) FROM period_deltas), "
                              "(SELECT count(*) FROM charges), (SELECT count(*) FROM usage_events), "
                              "(SELECT count(*) FROM journal_entries), (SELECT count(*) FROM postings)").fetchone()
        assert counts == (0, 0, 0, 0, 0, 0)


def test_a_temporary_account_balances_does_not_take_the_postings_balance_updates(scratch_url):
    """Two accounts of the real table, a temporary `account_balances` holding rows for them: an
    entry of +70/-70 moves the real balances (cash debits 0 + 70 = 70, revenue credits 0 + 70 = 70),
    not the temporary ones (which stay 0 and 0)."""
    with psycopg.connect(scratch_url) as conn:
        conn.execute("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING")
        cash, revenue = (conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, %s, 'USD') RETURNING id",
                                      (code, kind)).fetchone()[0]
                         for code, kind in (("asset:cash:76", "asset"), ("income:76", "income")))
        conn.commit()
        conn.execute("CREATE TEMP TABLE account_balances (lane smallint, account_id bigint, stripe smallint, "
                     "debits bigint DEFAULT 0, credits bigint DEFAULT 0)")
        conn.execute("INSERT INTO account_balances (lane, account_id, stripe) VALUES (0, %s, 0), (0, %s, 0)",
                     (cash, revenue))
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES ('k76', '\\x00', 'raw', now()) RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 70), (%s, %s, -70)",
                     (entry, cash, entry, revenue))
        conn.commit()
        shadow = conn.execute("SELECT sum(debits), sum(credits) FROM account_balances").fetchone()
        real = conn.execute("SELECT account_id, sum(debits), sum(credits) FROM public.account_balances "
                            "WHERE account_id IN (%s, %s) GROUP BY 1 ORDER BY 1", (cash, revenue)).fetchall()
        assert shadow == (0, 0)
        assert real == [(cash, 70, 0), (revenue, 0, 70)]


def test_every_partition_has_its_parents_statement_checks(scratch_url):
    """A statement trigger on a partitioned table fires only for statements naming it: each lane
    partition carries its own (0025, 0028, 0075 made them per partition; lanes are fixed when the
    database is created, and only migrations make partitions). The one statement trigger a
    partition lacks is the outbox's wake-up (a NOTIFY, not a check)."""
    with psycopg.connect(scratch_url) as conn:
        lacking = conn.execute(
            "SELECT DISTINCT p.relname, t.tgname FROM pg_trigger t JOIN pg_class p ON p.oid = t.tgrelid "
            "JOIN pg_inherits i ON i.inhparent = p.oid "
            "WHERE t.tgtype & 1 = 0 AND NOT t.tgisinternal AND NOT EXISTS ("
            "  SELECT FROM pg_trigger c WHERE c.tgrelid = i.inhrelid AND c.tgfoid = t.tgfoid AND c.tgtype = t.tgtype)"
        ).fetchall()
        assert lacking == [("outbox", "outbox_announced")]


def test_the_downgrade_unpins_the_functions_and_the_upgrade_pins_them_again(scratch_url):
    engine = create_engine(sync_url(scratch_url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0078")
            conn.commit()
            pinned = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "AND array_to_string(proconfig, ',') LIKE '%%search_path%%'").scalar_one()
            assert pinned == 0
            command.upgrade(config, "head")
            conn.commit()
            assert runner.current_revision(conn) == runner.head_revision()
            pinned = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "AND 'search_path=public, pg_temp' = ANY (proconfig)").scalar_one()
            assert pinned == len(NAMING_TABLES)
    finally:
        engine.dispose()


def test_a_database_in_a_schema_of_its_own_pins_that_schema(server_url):
    """The migration pins the schema it runs in (the URL's search_path), not `public`."""
    with scratch_database(server_url, f"tokentill_schema_{uuid.uuid4().hex[:10]}") as plain:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA billing")
        options = quote("-csearch_path=billing", safe="")
        url = f"{plain}{'&' if '?' in plain else '?'}options={options}"
        runner.upgrade(sync_url(url), lanes=4)
        with psycopg.connect(url) as conn:
            found = _functions_naming_tables(conn)
            assert NAMING_TABLES <= set(found)
            assert {name for name, config in found.items() if "search_path=billing, pg_temp" not in config} == set()
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match="no customer gone"):
                _attack(conn, "true_up_charges customer")
