"""Raw SQL, as a buggy caller or an attacker holding the application's role would write it (no
trigger switched off), against the invariants of migrations 0019-0028: entries checked per
statement (the `checked_in_statement` flag), the set-based ledger_post, cached balances, lanes,
references checked per statement."""
from __future__ import annotations

import json

import psycopg
import pytest

from ledger.accounts import balance, open_account
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post

FLAGGED = ("INSERT INTO journal_entries (key, request_hash, kind, occurred_at, checked_in_statement) "
           "VALUES (%s, '\\x00', 'raw', now(), true) RETURNING id")


async def _accounts(db, database_url, tag, *, bound=None):
    """A cash and a lot account of no customer (lane 0), the lot funded with 100; their ids."""
    cash, lot = f"asset:cash:{tag}", f"liability:lot:{tag}"

    async def work(conn):
        await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD", lower_bound=bound))
        await post(conn, JournalEntry(f"{tag}-fund", "topup", (Posting(cash, 100, "USD"), Posting(lot, -100, "USD"))))

    await db.run(work)
    with psycopg.connect(database_url) as conn:
        ids = [conn.execute("SELECT id FROM accounts WHERE code = %s", (c,)).fetchone()[0] for c in (cash, lot)]
    return cash, lot, ids[0], ids[1]


def _balances(database_url, *account_ids):
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT account_id, stripe, debits, credits, lower_bound FROM account_balances "
                            "WHERE account_id = ANY (%s) ORDER BY 1, 2", (list(account_ids),)).fetchall()


def _entries(database_url, key_prefix):
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM journal_entries WHERE key LIKE %s",
                            (key_prefix + "%",)).fetchone()[0]


# -- cached balances ---------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [
    "UPDATE account_balances SET debits = debits + 7, credits = credits + 7 WHERE account_id = {lot}",
    "UPDATE account_balances_l0 SET debits = debits + 7, credits = credits + 7 WHERE account_id = {lot}",
    "UPDATE account_balances SET lower_bound = -1000 WHERE account_id = {lot}",
    "DELETE FROM account_balances WHERE account_id = {lot}",
    "INSERT INTO account_balances (lane, account_id, stripe, debits, normal_sign) VALUES (0, {cash}, 7, 500, 1)",
    "TRUNCATE account_balances CASCADE",
    "TRUNCATE account_balances_l0",
])
async def test_cached_balances_cannot_be_written_around_the_postings(db, database_url, tag, attack):
    """Before 0023 each of these committed, and the cached balances no longer equalled the
    postings (or a bound the account does not have was lifted)."""
    _, lot, cash_id, lot_id = await _accounts(db, database_url, tag, bound=0)
    before = _balances(database_url, cash_id, lot_id)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="not allowed"):
            conn.execute(attack.format(cash=cash_id, lot=lot_id))
    assert _balances(database_url, cash_id, lot_id) == before
    assert (await db.read(lambda c: balance(c, lot))).normal == 100


async def test_the_ledgers_own_triggers_still_write_balances(db, database_url, tag):
    """Postings and a bound set on the account move the balance rows (the guard lets them)."""
    cash, lot, cash_id, lot_id = await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE accounts SET lower_bound = 40 WHERE id = %s", (lot_id,))
        with pytest.raises(psycopg.errors.CheckViolation, match="balance_within_bound"), conn.transaction():
            conn.execute("UPDATE accounts SET lower_bound = 101 WHERE id = %s", (lot_id,))
    assert [r[4] for r in _balances(database_url, lot_id)] == [40]
    await db.run(lambda conn: post(conn, JournalEntry(f"{tag}-spend", "spend", (
        Posting(lot, 60, "USD"), Posting(cash, -60, "USD")))))
    assert _balances(database_url, cash_id, lot_id) == [(cash_id, 0, 100, 60, None), (lot_id, 0, 60, 100, 40)]


# -- lanes -------------------------------------------------------------------------------------

async def test_an_entry_lives_in_its_customers_lane(db, database_url, tag):
    """Before 0023 the same (customer, key) went in twice, once in another lane than the
    customer's (the unique key includes the lane), and the replay lookups never saw it."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    customer = f"c-{tag}"
    with psycopg.connect(database_url) as conn:
        lane = conn.execute("SELECT ledger_entry_lane(%s)", (customer,)).fetchone()[0]
        wrong = (lane + 1) % 16
        with pytest.raises(psycopg.errors.CheckViolation, match="lane_of_customer"), conn.transaction():
            conn.execute(f"""WITH e AS (INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id,
                                            occurred_at, checked_in_statement)
                                    VALUES (%s, %s, '\\x00', 'raw', %s, now(), true),
                                           (%s, %s, '\\x00', 'raw', %s, now(), true)
                                    RETURNING lane, id)
                             INSERT INTO postings (lane, entry_id, account_id, amount)
                             SELECT e.lane, e.id, x.a, x.m FROM e, (VALUES ({cash_id}, 5), ({lot_id}, -5)) x(a, m)""",
                         (lane, f"{tag}-dup", customer, wrong, f"{tag}-dup", customer))
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():  # twice in its own lane
            conn.execute("INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at) "
                         "VALUES (%s, %s, '\\x00', 'raw', %s, now()), (%s, %s, '\\x00', 'raw', %s, now())",
                         (lane, f"{tag}-dup", customer, lane, f"{tag}-dup", customer))
    assert _entries(database_url, f"{tag}-dup") == 0


# -- entries checked in their statement (0021) -------------------------------------------------

async def test_a_flagged_entry_is_checked_whatever_writes_it(db, database_url, tag):
    """COPY, MERGE and an INSERT naming a partition fire the statement check as INSERT does."""
    await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"), conn.transaction():
            with conn.cursor().copy("COPY journal_entries (key, request_hash, kind, occurred_at, checked_in_statement) "
                                    "FROM STDIN") as copy:
                copy.write_row((f"{tag}-copy", b"\x00", "raw", "2026-12-01T00:00:00Z", True))
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"), conn.transaction():
            conn.execute("""MERGE INTO journal_entries j USING (SELECT %s::text AS k) s ON j.lane = 0 AND j.key = s.k
                            WHEN NOT MATCHED THEN INSERT (key, request_hash, kind, occurred_at, checked_in_statement)
                                 VALUES (s.k, '\\x00', 'raw', now(), true)""", (f"{tag}-merge",))
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"), conn.transaction():
            conn.execute(FLAGGED.replace("journal_entries", "journal_entries_l0"), (f"{tag}-part",))
    assert _entries(database_url, f"{tag}-") == 1  # the funding entry only


async def test_a_flagged_entry_stays_balanced_after_its_statement(db, database_url, tag):
    """Checked at the end of its statement, a flagged entry cannot be unbalanced later in the
    transaction: later postings must balance on their own, and the flag cannot be cleared."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    whole = f"""WITH e AS ({FLAGGED}),
                p AS (INSERT INTO postings (entry_id, account_id, amount)
                      SELECT e.id, x.a, x.m FROM e, (VALUES ({cash_id}::bigint, 5), ({lot_id}::bigint, -5)) x(a, m))
                SELECT id FROM e"""
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"), conn.transaction():
            entry = conn.execute(whole, (f"{tag}-later",)).fetchone()[0]
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 9)", (entry, cash_id))
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"), conn.transaction():
            entry = conn.execute(whole, (f"{tag}-unflag",)).fetchone()[0]
            conn.execute("UPDATE journal_entries SET checked_in_statement = false WHERE id = %s", (entry,))
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"), conn.transaction():
            # two entries flagged in one statement, whose postings all go to the first
            conn.execute(f"""WITH e AS (INSERT INTO journal_entries (key, request_hash, kind, occurred_at,
                                                                  checked_in_statement)
                                         VALUES (%s, '\\x00', 'raw', now(), true), (%s, '\\x00', 'raw', now(), true)
                                         RETURNING id),
                             p AS (INSERT INTO postings (entry_id, account_id, amount)
                                   SELECT min(e.id), x.a, x.m FROM e, (VALUES ({cash_id}::bigint, 5),
                                                                             ({lot_id}::bigint, -5)) x(a, m)
                                    GROUP BY x.a, x.m)
                             SELECT 1""", (f"{tag}-two-a", f"{tag}-two-b"))
    assert _entries(database_url, f"{tag}-") == 1


# -- the set-based ledger_post (0020) ----------------------------------------------------------

def _wire(key, legs, deltas):
    return {"k": key, "h": "00", "kind": "raw", "c": None, "at": "2026-12-01T00:00:00+00:00", "m": {},
            "p": [[a, 0, amount] for a, amount in legs], "d": deltas}


async def test_a_batch_whose_deltas_lie_still_cannot_cross_a_bound(db, database_url, tag):
    """ledger_post trusts the caller's deltas to choose its path; were they wrong (here: none),
    the set-based path posts, and the balance's CHECK refuses the whole batch."""
    _, lot, cash_id, lot_id = await _accounts(db, database_url, tag, bound=0)
    batch = [_wire(f"{tag}-a", [(lot_id, 60), (cash_id, -60)], []),
             _wire(f"{tag}-b", [(lot_id, 60), (cash_id, -60)], [])]  # each fits alone, not both
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="balance_within_bound"):
            conn.execute("SELECT * FROM ledger_post(%s::jsonb, '{}', '{}', '{}')", (json.dumps(batch),))
    assert _entries(database_url, f"{tag}-") == 1
    assert (await db.read(lambda c: balance(c, lot))).normal == 100


async def test_a_raw_batch_with_a_key_twice_or_two_lanes_posts_each_entry_once_in_its_lane(db, database_url, tag):
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    one = _wire(f"{tag}-x", [(cash_id, 3), (lot_id, -3)], [])
    other = _wire(f"{tag}-y", [(cash_id, 4), (lot_id, -4)], [])
    with psycopg.connect(database_url) as conn:  # a customer of another lane than lane 0 (no customer's)
        other["c"] = conn.execute("SELECT c FROM (SELECT %s || '-' || i AS c FROM generate_series(1, 100) i) x "
                                  "WHERE ledger_entry_lane(c) <> 0 LIMIT 1", (f"c-{tag}",)).fetchone()[0]
        rows = conn.execute("SELECT idx, status, entry_id FROM ledger_post(%s::jsonb, '{}', '{}', '{}') ORDER BY idx",
                            (json.dumps([one, other, one]),)).fetchall()
        assert [r[1] for r in rows] == ["posted", "posted", "replayed"] and rows[2][2] == rows[0][2]
        lanes = conn.execute("SELECT customer_id, lane = ledger_entry_lane(customer_id) FROM journal_entries "
                             "WHERE key LIKE %s ORDER BY key", (f"{tag}-%",)).fetchall()
    assert lanes == [(None, True), (None, True), (other["c"], True)]


async def test_postings_written_into_a_partition_by_name_are_checked_and_counted(db, database_url, tag):
    """The apply trigger is a statement trigger: each partition has its own, so postings named
    into postings_l0 are checked per entry and move the cached balances as through the parent."""
    cash, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        entry = conn.execute(FLAGGED.replace("INSERT INTO journal_entries", "INSERT INTO journal_entries_l0")
                             .replace(", true)", ", false)"), (f"{tag}-part",)).fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"), conn.transaction():
            conn.execute("INSERT INTO postings_l0 (entry_id, account_id, amount) VALUES (%s, %s, 8), (%s, %s, -7)",
                         (entry, cash_id, entry, lot_id))
        conn.execute("INSERT INTO postings_l0 (entry_id, account_id, amount) VALUES (%s, %s, 8), (%s, %s, -8)",
                     (entry, cash_id, entry, lot_id))
    assert (await db.read(lambda c: balance(c, cash))).normal == 108
    assert _balances(database_url, cash_id, lot_id) == [(cash_id, 0, 108, 0, None), (lot_id, 0, 0, 108, None)]


@pytest.mark.parametrize("first", ["journal_entries", "journal_entries_l0"])
async def test_flagged_entries_from_two_inserts_of_one_statement_are_all_checked(db, database_url, tag, first):
    """Two data-modifying CTEs inserting entries in one statement: the statement check sees the
    rows of both (one transition table per table and statement), so the entry without postings
    is refused even when the other one, written after it, has its postings."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"):
            conn.execute(f"""WITH a AS ({FLAGGED.replace("journal_entries", first)}),
                              b AS ({FLAGGED}),
                              p AS (INSERT INTO postings (entry_id, account_id, amount)
                                    SELECT b.id, x.a, x.m FROM b, (VALUES ({cash_id}::bigint, 5),
                                                                        ({lot_id}::bigint, -5)) x(a, m))
                              SELECT 1""", (f"{tag}-bare", f"{tag}-whole"))
    assert _entries(database_url, f"{tag}-") == 1


# -- references into the journal and to usage events, checked per statement (0024) --------------

_JOURNAL_ENTRY = ("INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at) "
                  "VALUES (%s, %s, '\\x00', 'usage', %s, now()) RETURNING id")
_EVENT = ("INSERT INTO {table} (lane, event_id, customer_id, request_hash, model, occurred_at, usage, entry_id) "
          "VALUES (%s, %s, %s, '\\x01', 'm', now(), '{{}}', %s)")
_CHARGE = ("INSERT INTO {table} (lane, customer_id, event_id, request_id, final, request_hash, model, occurred_at, "
           "usage, price_book, price_version, lines, charged, from_hold, from_lots, from_receivable, entry_id) "
           "VALUES (%s, %s, %s, %s, true, '\\x01', 'm', now(), '{{}}', 'b', 'v1', '[]', 0, 0, 0, 0, %s)")


@pytest.mark.parametrize("named", ["parent", "partition"])
async def test_usage_events_and_charges_cannot_name_a_missing_entry_or_event(database_url, tag, named):
    """Before 0024 foreign keys refused these rows one by one; now a statement check per table (and
    per partition, for rows named into one) refuses them as foreign_key_violation, and the rows
    that name what exists, in the same statement or an earlier one, go in."""
    customer = f"c-{tag}"
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO customers (id, currency) VALUES (%s, 'USD')", (customer,))
        lane = conn.execute("SELECT ledger_entry_lane(%s)", (customer,)).fetchone()[0]
        other = (lane + 1) % 16
        entry = conn.execute(_JOURNAL_ENTRY, (lane, f"{tag}-e", customer)).fetchone()[0]
        events = _EVENT.format(table="usage_events" if named == "parent" else f"usage_events_l{lane}")
        charges = _CHARGE.format(table="charges" if named == "parent" else f"charges_l{lane}")

        def refused(sql: str, params: tuple) -> None:
            with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
                conn.execute(sql, params)

        refused(events, (lane, "e0", customer, entry + 1_000_000_000))  # no such entry
        if named == "parent":  # an entry of this id, but in another lane
            refused(events.replace("%s, %s, %s, '", f"{other}, %s, %s, '", 1), ("e0", customer, entry))
        conn.execute(events, (lane, "e1", customer, entry))
        refused(charges, (lane, customer, "nope", "nope", entry))  # no such usage event
        refused(charges, (lane, customer, "e1", "e1", entry + 1_000_000_000))  # no such entry
        conn.execute(charges, (lane, customer, "e1", "e1", entry))
        # the event and its charge in one statement; then a charge whose event comes in none
        conn.execute(f"WITH e AS ({events}) {charges}",
                     (lane, "e2", customer, entry, lane, customer, "e2", "e2", entry))
        refused(f"WITH e AS ({events}) {charges}", (lane, "e3", customer, entry, lane, customer, "e4", "e4", entry))
        assert conn.execute("SELECT count(*) FROM charges WHERE customer_id = %s", (customer,)).fetchone()[0] == 2
        conn.rollback()


@pytest.mark.parametrize("table", ["postings", "postings_l0"])
async def test_postings_cannot_name_a_missing_entry(db, database_url, tag, table):
    """Balanced postings into an entry that does not exist: refused by the apply trigger's probe of
    the entries (before 0024, by the foreign key)."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="journal_entries"):
            conn.execute(f"INSERT INTO {table} (lane, entry_id, account_id, amount) "
                         "VALUES (0, -7, %s, 5), (0, -7, %s, -5)", (cash_id, lot_id))


@pytest.mark.parametrize("attack", ["TRUNCATE usage_events", "TRUNCATE usage_events_l0",
                                    "TRUNCATE usage_events CASCADE"])
def test_usage_events_cannot_be_truncated_from_under_their_charges(scratch_url, attack):
    """Their foreign key refused a TRUNCATE without CASCADE (a CASCADE emptied the charges too);
    the guard of 0024 refuses all three."""
    with psycopg.connect(scratch_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="not allowed"):
            conn.execute(attack)


# -- the postings' accounts, checked per statement (0028) ----------------------------------------

@pytest.mark.parametrize("table", ["postings", "postings_l0"])
async def test_postings_cannot_name_a_missing_account(db, database_url, tag, table):
    """Balanced postings of which one names no account: refused by the apply trigger's read of
    the statement's accounts (before 0028, by the foreign key), and nothing moves."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    before = _balances(database_url, cash_id, lot_id)
    with psycopg.connect(database_url) as conn:
        missing = conn.execute("SELECT max(id) + 1000 FROM accounts").fetchone()[0]
        entry = conn.execute(FLAGGED.replace(", true)", ", false)"), (f"{tag}-ghost",)).fetchone()[0]
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match=f"no account {missing}"), conn.transaction():
            conn.execute(f"INSERT INTO {table} (entry_id, account_id, amount) VALUES (%s, %s, 5), (%s, %s, -5)",
                         (entry, cash_id, entry, missing))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="no balance stripe 3"), conn.transaction():
            conn.execute(f"INSERT INTO {table} (entry_id, account_id, stripe, amount) "
                         "VALUES (%s, %s, 3, 5), (%s, %s, 0, -5)", (entry, cash_id, entry, lot_id))
        conn.rollback()
    assert _balances(database_url, cash_id, lot_id) == before


@pytest.mark.parametrize("attack, refusal", [
    ("TRUNCATE accounts", psycopg.errors.FeatureNotSupported),  # the balances' foreign key
    ("TRUNCATE accounts CASCADE", psycopg.errors.RestrictViolation),
    ("DELETE FROM accounts", psycopg.errors.RestrictViolation),
    ("UPDATE accounts SET id = id + 1000000", psycopg.errors.RestrictViolation),
])
def test_accounts_cannot_go_from_under_their_postings(scratch_url, attack, refusal):
    """What the postings name cannot be taken away: accounts refuse DELETE and a new id (their
    guard) and, since 0028 dropped the postings' foreign key, TRUNCATE even with CASCADE (which
    would have emptied the balances and left the postings naming nothing)."""
    with psycopg.connect(scratch_url) as conn:
        conn.execute("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING")
        conn.execute("INSERT INTO accounts (code, type, asset) VALUES ('asset:cash', 'asset', 'USD')")
        conn.commit()
        with pytest.raises(refusal):
            conn.execute(attack)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1


async def test_a_flagged_entry_balances_only_with_its_statements_postings(db, database_url, tag):
    """Since 0028 the entries' statement check no longer re-reads the postings to balance them:
    that is the postings' check. Postings split across two of the statement's INSERTs (the parent
    and a partition by name, each its own transition table) that only balance together are
    refused, and so are a flagged entry's legs that balance in count but not in amount."""
    _, _, cash_id, lot_id = await _accounts(db, database_url, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"), conn.transaction():
            conn.execute(f"""WITH e AS ({FLAGGED}),
                              p AS (INSERT INTO postings (entry_id, account_id, amount)
                                    SELECT e.id, {cash_id}, 5 FROM e),
                              q AS (INSERT INTO postings_l0 (entry_id, account_id, amount)
                                    SELECT e.id, {lot_id}, -5 FROM e)
                              SELECT 1""", (f"{tag}-split",))
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"), conn.transaction():
            conn.execute(f"""WITH e AS ({FLAGGED}),
                              p AS (INSERT INTO postings (entry_id, account_id, amount)
                                    SELECT e.id, x.a, x.m FROM e, (VALUES ({cash_id}::bigint, 5),
                                                                        ({lot_id}::bigint, -4)) x(a, m))
                              SELECT 1""", (f"{tag}-short",))
    assert _entries(database_url, f"{tag}-") == 1


@pytest.mark.parametrize("table", ["idempotency_keys", "idempotency_records", "idempotency_records_l0", "seals",
                                   "invoice_payments", "price_book_versions", "reservation_holds",
                                   "reservation_holds_l3", "lots", "lots_l0"])
def test_append_only_tables_cannot_be_truncated(scratch_url, table):
    """Their rows refuse UPDATE and DELETE, yet before 0043 the application's role emptied them
    with a plain TRUNCATE (a replayed request posted again, the seals were gone, invoices read
    unpaid); now refused, with or without CASCADE, on the table and on a lane partition by name."""
    with psycopg.connect(scratch_url) as conn:
        for attack in (f"TRUNCATE {table}", f"TRUNCATE {table} CASCADE"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="not allowed"), conn.transaction():
                conn.execute(attack)
