"""PostgreSQL itself guards the ledger: raw SQL that tries to break an invariant fails."""
from __future__ import annotations

import psycopg
import pytest

from ledger.accounts import balance, open_account, open_accounts
from ledger.errors import AccountMismatchError, IdempotencyConflictError
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import Outcome, post, post_entries


async def _two_accounts(db, tag, *, bound=None):
    cash, lot = f"asset:cash:{tag}", f"liability:lot:{tag}"

    async def work(conn):
        await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD", lower_bound=bound))
        return await post(conn, JournalEntry(f"{tag}-fund", "topup", (
            Posting(cash, 100, "USD"), Posting(lot, -100, "USD"))))

    result = await db.run(work)
    return cash, lot, result.entry_id


def _ids(database_url, *codes):
    with psycopg.connect(database_url) as conn:
        return [conn.execute("SELECT id FROM accounts WHERE code = %s", (c,)).fetchone()[0] for c in codes]


async def test_a_posting_cannot_be_updated_or_deleted(db, database_url, tag):
    _, _, entry_id = await _two_accounts(db, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
            conn.execute("UPDATE postings SET amount = amount * 2 WHERE entry_id = %s", (entry_id,))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM postings WHERE entry_id = %s", (entry_id,))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("TRUNCATE postings CASCADE")
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE journal_entries SET kind = 'x' WHERE id = %s", (entry_id,))
    with psycopg.connect(database_url) as conn:
        amounts = conn.execute("SELECT amount FROM postings WHERE entry_id = %s ORDER BY amount",
                               (entry_id,)).fetchall()
    assert amounts == [(-100,), (100,)]


async def test_an_unbalanced_entry_cannot_be_committed(db, database_url, tag):
    cash_id, lot_id = _ids(database_url, *(await _two_accounts(db, tag))[:2])

    def unbalanced(conn, key):
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (key,)).fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 70), (%s, %s, -60)",
                     (entry, cash_id, entry, lot_id))

    with psycopg.connect(database_url) as conn:  # refused by the statement itself
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            unbalanced(conn, f"{tag}-raw")
    conn = psycopg.connect(database_url)
    try:  # and were that check switched off (a superuser can), the one at commit still refuses it
        conn.execute("ALTER TABLE postings DISABLE TRIGGER postings_apply")
        unbalanced(conn, f"{tag}-raw2")
        with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
            conn.commit()
    finally:
        conn.close()
    with psycopg.connect(database_url) as check:
        assert check.execute("SELECT count(*) FROM journal_entries WHERE key IN (%s, %s)",
                             (f"{tag}-raw", f"{tag}-raw2")).fetchone()[0] == 0


async def test_an_entry_may_be_written_in_steps_that_each_balance(db, database_url, tag):
    cash_id, lot_id = _ids(database_url, *(await _two_accounts(db, tag))[:2])
    with psycopg.connect(database_url) as conn:
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-steps",)).fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 5), (%s, %s, -5)",
                     (entry, cash_id, entry, lot_id))
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 2), (%s, %s, -2)",
                     (entry, cash_id, entry, lot_id))
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 5)", (entry, cash_id))
    assert (await db.read(lambda c: balance(c, f"asset:cash:{tag}"))).normal == 100  # nothing committed


@pytest.mark.parametrize("early", ["SET CONSTRAINTS ALL IMMEDIATE",
                                   "SET CONSTRAINTS journal_entries_balanced IMMEDIATE"])
async def test_running_the_check_early_does_not_let_later_postings_escape_it(db, database_url, tag, early):
    cash_id, lot_id = _ids(database_url, *(await _two_accounts(db, tag))[:2])
    conn = psycopg.connect(database_url)
    try:
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-early",)).fetchone()[0]
        conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 10), (%s, %s, -10)",
                     (entry, cash_id, entry, lot_id))
        conn.execute(early)  # the entry's deferred check runs now, and passes
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 1000000)",
                         (entry, cash_id))
    finally:
        conn.close()
    with psycopg.connect(database_url) as check:
        assert check.execute("SELECT count(*) FROM journal_entries WHERE key = %s",
                             (f"{tag}-early",)).fetchone()[0] == 0


async def test_a_committed_entry_cannot_gain_postings_even_balanced_ones(db, database_url, tag):
    cash, lot, entry_id = await _two_accounts(db, tag)
    cash_id, lot_id = _ids(database_url, cash, lot)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation, match="earlier transaction"):
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 9), (%s, %s, -9)",
                         (entry_id, cash_id, entry_id, lot_id))
    assert (await db.read(lambda c: balance(c, cash))).normal == 100


async def test_an_entry_cannot_claim_another_transactions_id(db, database_url, tag):
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="txid is set by the database"):
            conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at, txid) "
                         "VALUES (%s, '\\x00', 'raw', now(), '3')", (f"{tag}-forged",))


async def test_an_entry_without_postings_cannot_be_committed(database_url, tag):
    conn = psycopg.connect(database_url)
    try:
        conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                     "VALUES (%s, '\\x00', 'raw', now())", (f"{tag}-empty",))
        with pytest.raises(psycopg.errors.CheckViolation, match="has no postings"):
            conn.commit()
    finally:
        conn.close()


async def test_a_bounded_account_cannot_go_below_its_bound(db, database_url, tag):
    cash, lot, _ = await _two_accounts(db, tag, bound=0)
    cash_id, lot_id = _ids(database_url, cash, lot)
    with psycopg.connect(database_url) as conn:
        entry = conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                             "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-over",)).fetchone()[0]
        with pytest.raises(psycopg.errors.CheckViolation, match="balance_within_bound"):
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 101), (%s, %s, -101)",
                         (entry, lot_id, entry, cash_id))
    with psycopg.connect(database_url) as conn:  # balances are written by the ledger's triggers only (0023)
        with pytest.raises(psycopg.errors.RestrictViolation, match="not allowed"):
            conn.execute("UPDATE account_balances SET debits = debits + 1000 WHERE account_id = %s", (lot_id,))
    # Through the ledger API the same overdraw is refused as an outcome, and nothing is written.
    refused = await db.run(lambda conn: post_entries(conn, [JournalEntry(f"{tag}-api", "refund", (
        Posting(lot, 101, "USD"), Posting(cash, -101, "USD")))]))
    assert refused[0].outcome is Outcome.BELOW_BOUND and refused[0].detail == lot
    assert (await db.read(lambda c: balance(c, lot))).normal == 100


async def test_an_idempotency_key_cannot_be_reused_for_a_different_body(db, database_url, tag):
    cash, lot, _ = await _two_accounts(db, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                         "VALUES (%s, '\\x01', 'other', now())", (f"{tag}-fund",))
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO idempotency_keys (scope, key, request_hash, status, response) "
                     "VALUES ('test', %s, '\\x01', 201, '{}')", (tag,))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO idempotency_keys (scope, key, request_hash, status, response) "
                         "VALUES ('test', %s, '\\x02', 201, '{}')", (tag,))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("INSERT INTO idempotency_keys (scope, key, request_hash, status, response) "
                         "VALUES ('test', %s, '\\x02', 201, '{}') ON CONFLICT (scope, key) "
                         "DO UPDATE SET request_hash = excluded.request_hash", (tag,))
    # Through the ledger API: the same key and body replays, another body is a conflict.
    same = JournalEntry(f"{tag}-k", "topup", (Posting(cash, 7, "USD"), Posting(lot, -7, "USD")))
    first = await db.run(lambda conn: post(conn, same))
    again = await db.run(lambda conn: post(conn, same))
    assert (first.outcome, again.outcome, again.entry_id) == (Outcome.POSTED, Outcome.REPLAYED, first.entry_id)
    other = JournalEntry(f"{tag}-k", "topup", (Posting(cash, 8, "USD"), Posting(lot, -8, "USD")))
    with pytest.raises(IdempotencyConflictError):
        await db.run(lambda conn: post(conn, other))
    assert (await db.read(lambda c: balance(c, cash))).normal == 107


async def test_account_identity_is_immutable(db, database_url, tag):
    cash, _, _ = await _two_accounts(db, tag)
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("UPDATE accounts SET asset = 'USD', type = 'income' WHERE code = %s", (cash,))
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("DELETE FROM accounts WHERE code = %s", (cash,))


async def test_opening_accounts_in_one_statement_creates_the_new_ones_and_checks_the_existing(db, database_url, tag):
    cash = AccountSpec(f"asset:cash:{tag}", AccountType.ASSET, "USD", stripes=4)
    lot = AccountSpec(f"liability:lot:{tag}", AccountType.LIABILITY, "USD", customer_id=f"c-{tag}", lower_bound=0)
    await db.run(lambda conn: open_account(conn, cash))
    await db.run(lambda conn: open_accounts(conn, [cash, lot]))
    await db.run(lambda conn: open_accounts(conn, [cash, lot]))  # again: nothing new, nothing refused
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("""SELECT a.code, a.customer_id, a.lower_bound, count(b.*) FROM accounts a
                                 JOIN account_balances b ON b.account_id = a.id
                                WHERE a.code IN (%s, %s) GROUP BY a.id ORDER BY a.id""",
                            (cash.code, lot.code)).fetchall()
    assert rows == [(cash.code, None, None, 4), (lot.code, f"c-{tag}", 0, 1)]
    other = AccountSpec(f"liability:other:{tag}", AccountType.LIABILITY, "USD")
    income = AccountSpec(cash.code, AccountType.INCOME, "USD", stripes=4)
    with pytest.raises(AccountMismatchError):
        await db.run(lambda conn: open_accounts(conn, [other, income]))
    assert _count(database_url, other.code) == 0  # refused as a whole


def _count(database_url, code):
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM accounts WHERE code = %s", (code,)).fetchone()[0]


async def test_verify_names_an_entry_written_around_the_api_onto_another_customers_account(scratch_url):
    """The ledger API refuses it; raw SQL can write it, and the audit then names the entry."""
    from ledger.accounts import ensure_asset
    from ledger.audit import verify
    from ledger.db import connect

    db = connect(scratch_url, pool_size=1)

    async def setup(conn):
        await ensure_asset(conn, "USD", 9)
        await open_account(conn, AccountSpec("asset:cash", AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec("liability:b:lot", AccountType.LIABILITY, "USD", customer_id="b"))

    await db.run(setup)
    cash_id, lot_id = _ids(scratch_url, "asset:cash", "liability:b:lot")
    with psycopg.connect(scratch_url) as conn:
        lane, entry = conn.execute(  # in its customer's lane (0023), as any entry
            "INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at) "
            "VALUES (ledger_entry_lane('a'), 'x', '\\x00', 'raw', 'a', now()) RETURNING lane, id").fetchone()
        conn.execute("INSERT INTO postings (lane, entry_id, account_id, amount) "
                     "VALUES (%s, %s, %s, 5), (%s, %s, %s, -5)", (lane, entry, cash_id, lane, entry, lot_id))
    report = await db.read(verify)
    await db.dispose()
    check = {c.name: c for c in report.checks}["one_customer_per_entry"]
    assert not report.ok and not check.ok
    assert check.problems == (f"entry {entry} (customer a) posts to account liability:b:lot of customer b",)


async def test_one_batch_is_judged_entry_by_entry_in_order(db, tag):
    """Within one ledger_post batch each entry sees the ones before it: bounds count only what
    was really posted before it (a replay or a conflict adds nothing), and refusals are whole."""
    cash, lot = f"asset:cash:{tag}", f"liability:lot:{tag}"
    striped = f"income:revenue:{tag}"

    def entry(key, kind, amount, *, to=cash):
        return JournalEntry(f"{tag}-{key}", kind, (Posting(lot, amount, "USD"), Posting(to, -amount, "USD")))

    async def setup(conn):
        await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD", lower_bound=0))
        await open_account(conn, AccountSpec(striped, AccountType.INCOME, "USD", stripes=4))
        return await post_entries(conn, [entry("fund", "topup", -100), spend_a])

    spend_a = entry("spend-a", "spend", 30)
    assert [r.outcome for r in await db.run(setup)] == [Outcome.POSTED, Outcome.POSTED]  # lot: 70
    batch = [
        spend_a,  # a replay (same key, same body): posts nothing
        entry("fund", "topup", -500),  # same key, another body: a conflict, posts nothing
        entry("spend-b", "spend", 60, to=striped),  # 70 -> 10
        entry("spend-c", "spend", 20),  # would leave -10: refused, whole
        entry("refund", "refund", -15),  # 10 -> 25
        entry("spend-d", "spend", 25, to=striped),  # 25 -> 0: allowed
        entry("spend-e", "spend", 1),  # refused
    ]
    results = await db.run(lambda conn: post_entries(conn, batch))
    assert [r.outcome for r in results] == [
        Outcome.REPLAYED, Outcome.CONFLICT, Outcome.POSTED, Outcome.BELOW_BOUND, Outcome.POSTED,
        Outcome.POSTED, Outcome.BELOW_BOUND]
    assert results[3].detail == lot and results[6].detail == lot
    assert results[0].entry_id is not None and results[1].entry_id is not None
    assert (await db.read(lambda c: balance(c, lot))).normal == 0
    assert (await db.read(lambda c: balance(c, cash))).normal == 100 - 30 + 15
    assert (await db.read(lambda c: balance(c, striped))).normal == 85
