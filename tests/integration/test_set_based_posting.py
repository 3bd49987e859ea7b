"""ledger_post writes a batch of new, distinct keys that crosses no bound with a few set-based
statements (migration 0020), and any other batch entry by entry (ledger_post_each): the answers
are the same either way, and the database's checks still hold."""
from __future__ import annotations

import psycopg
import pytest

from ledger.accounts import balance, open_account
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import Outcome, array_text, post_entries, prepare_post


async def _accounts(conn, tag):
    cash, lot, revenue = f"asset:cash:{tag}", f"liability:lot:{tag}", f"income:revenue:{tag}"
    await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
    await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD", lower_bound=0))
    await open_account(conn, AccountSpec(revenue, AccountType.INCOME, "USD", stripes=4))
    return cash, lot, revenue


def _entry(tag, key, amount, frm, to):
    return JournalEntry(f"{tag}-{key}", "spend", (Posting(frm, amount, "USD"), Posting(to, -amount, "USD")))


async def _careful_calls(conn) -> int:
    """How often the entry-by-entry path was taken: the session's calls not yet flushed to the
    statistics (tests compare two readings)."""
    row = (await conn.exec_driver_sql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = 'ledger_post_each'")).one()
    return int(row[0])


@pytest.mark.parametrize("spends, careful", [
    ([30, 30, 40], 0),  # down to exactly the bound, on a running sum: set-based
    ([60, 60], 1),  # each fits alone, the second not after the first: entry by entry
])
async def test_a_batch_is_judged_on_a_running_sum_of_the_entries_before_it(db, tag, spends, careful):
    async def work(conn):
        await conn.exec_driver_sql("SET LOCAL track_functions = 'all'")
        cash, lot, revenue = await _accounts(conn, tag)
        funded = await post_entries(conn, [_entry(tag, "fund", -100, lot, cash)])
        before = await _careful_calls(conn)
        results = await post_entries(conn, [_entry(tag, f"s{i}", s, lot, revenue) for i, s in enumerate(spends)])
        return funded, results, await _careful_calls(conn) - before, lot, revenue

    funded, results, calls, lot, revenue = await db.run(work)
    assert funded[0].outcome is Outcome.POSTED
    assert calls == careful
    total = 0
    expected = []
    for s in spends:
        expected.append(Outcome.POSTED if total + s <= 100 else Outcome.BELOW_BOUND)
        total += s if total + s <= 100 else 0
    assert [r.outcome for r in results] == expected
    assert len({r.entry_id for r in results if r.outcome is Outcome.POSTED}) == expected.count(Outcome.POSTED)
    assert (await db.read(lambda c: balance(c, lot))).normal == 100 - total
    assert (await db.read(lambda c: balance(c, revenue))).normal == total


async def test_a_replay_in_a_batch_takes_the_careful_path_and_adds_nothing(db, tag):
    async def work(conn):
        await conn.exec_driver_sql("SET LOCAL track_functions = 'all'")
        cash, lot, revenue = await _accounts(conn, tag)
        a, b = _entry(tag, "a", 10, lot, revenue), _entry(tag, "b", 5, lot, revenue)
        before = await _careful_calls(conn)
        first = await post_entries(conn, [_entry(tag, "fund", -100, lot, cash), a])
        fast = await _careful_calls(conn) - before
        again = await post_entries(conn, [a, b, b])
        return first, fast, again, await _careful_calls(conn) - before, lot

    first, fast, again, careful, lot = await db.run(work)
    assert [r.outcome for r in first] == [Outcome.POSTED, Outcome.POSTED] and fast == 0
    assert [r.outcome for r in again] == [Outcome.REPLAYED, Outcome.POSTED, Outcome.REPLAYED] and careful == 1
    assert again[0].entry_id == first[1].entry_id and again[2].entry_id == again[1].entry_id
    assert (await db.read(lambda c: balance(c, lot))).normal == 100 - 10 - 5


async def test_one_raw_statement_of_postings_is_checked_entry_by_entry(db, database_url, tag):
    """The apply trigger runs once per statement: one entry's postings balancing in it does not
    cover another's that do not."""
    async def setup(conn):
        return await _accounts(conn, tag)

    cash, lot, _ = await db.run(setup)
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"):
        with conn.transaction():
            a, b = (conn.execute("SELECT id FROM accounts WHERE code = %s", (c,)).fetchone()[0] for c in (cash, lot))
            e1, e2 = (conn.execute("INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                                   "VALUES (%s, '\\x00', 'raw', now()) RETURNING id", (f"{tag}-{k}",)).fetchone()[0]
                      for k in ("one", "two"))
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES "
                         "(%s, %s, 5), (%s, %s, -5), (%s, %s, 7), (%s, %s, -6)", (e1, a, e1, b, e2, a, e2, b))


async def test_an_entry_flagged_as_checked_in_its_statement_is_checked_there(db, database_url, tag):
    """The flag ledger_post sets (migration 0021) skips no check: a flagged entry is checked when
    its statement ends, so one whose postings come later, or do not balance, is refused (since
    0028 the balance is the postings' own statement check, which names them unbalanced)."""
    async def setup(conn):
        return await _accounts(conn, tag)

    cash, lot, _ = await db.run(setup)
    flagged = ("INSERT INTO journal_entries (key, request_hash, kind, occurred_at, checked_in_statement) "
               "VALUES (%s, '\\x00', 'raw', now(), true) RETURNING id")
    with psycopg.connect(database_url) as conn:
        a, b = (conn.execute("SELECT id FROM accounts WHERE code = %s", (c,)).fetchone()[0] for c in (cash, lot))
        with pytest.raises(psycopg.errors.CheckViolation, match="no postings"), conn.transaction():
            entry = conn.execute(flagged, (f"{tag}-later",)).fetchone()[0]
            conn.execute("INSERT INTO postings (entry_id, account_id, amount) VALUES (%s, %s, 5), (%s, %s, -5)",
                         (entry, a, entry, b))
        with pytest.raises(psycopg.errors.CheckViolation, match="unbalanced"), conn.transaction():
            conn.execute(f"""WITH e AS ({flagged}),
                             p AS (INSERT INTO postings (entry_id, account_id, amount)
                                   SELECT e.id, %s, 5 FROM e)
                             SELECT 1""", (f"{tag}-alone", a))
        with conn.transaction():  # flagged with its balanced postings in the same statement: fine
            conn.execute(f"""WITH e AS ({flagged}),
                             p AS (INSERT INTO postings (entry_id, account_id, amount)
                                   SELECT e.id, x.account, x.amount
                                     FROM e, (VALUES (%s::bigint, 5), (%s::bigint, -5)) x(account, amount))
                             SELECT 1""", (f"{tag}-whole", a, b))


@pytest.mark.parametrize("spends, careful", [([30, 30], 0), ([60, 60], 1)])
async def test_an_entry_takes_the_id_its_batch_gives_on_either_path(db, tag, spends, careful):
    """Migration 0024: ids allocated by the caller from the entries' sequence are the entries' ids,
    set-based or entry by entry; an id given twice in a lane is refused by the primary key."""
    async def work(conn):
        await conn.exec_driver_sql("SET LOCAL track_functions = 'all'")
        cash, lot, revenue = await _accounts(conn, tag)
        await post_entries(conn, [_entry(tag, "fund", -100, lot, cash)])
        ids = [r[0] for r in await conn.exec_driver_sql(
            "SELECT nextval('journal_entries_id_seq') FROM generate_series(1, %s)", (len(spends),))]
        before = await _careful_calls(conn)
        prepared = await prepare_post(conn, [_entry(tag, f"s{i}", s, lot, revenue) for i, s in enumerate(spends)],
                                      ids)
        results = prepared.results((await conn.exec_driver_sql(prepared.sql, prepared.params)).all())
        return ids, results, await _careful_calls(conn) - before, cash, lot

    ids, results, calls, cash, lot = await db.run(work)
    assert calls == careful
    assert [r.outcome for r in results] == [Outcome.POSTED, Outcome.POSTED if careful == 0 else Outcome.BELOW_BOUND]
    assert results[0].entry_id == ids[0] and (careful or results[1].entry_id == ids[1])

    async def again(conn):
        prepared = await prepare_post(conn, [_entry(tag, "dup", 1, cash, lot)], [ids[0]])
        await conn.exec_driver_sql(prepared.sql, prepared.params)

    with pytest.raises(Exception, match=r"journal_entries_l[0-9]+_pkey|duplicate key"):
        await db.run(again)


@pytest.mark.parametrize("values", [[], [0], [3, 6, 12], [-1, 2**62, 7]])
async def test_the_lock_lists_are_sent_as_array_literals_postgresql_reads_back(db, values):
    text = array_text(iter(values))  # what prepare_post sends for each of ledger_post's lock lists
    assert text == "{" + ",".join(str(v) for v in values) + "}"
    row = (await db.read(lambda conn: conn.exec_driver_sql(
        "SELECT %s::bigint[], %s::smallint[]", (text, array_text(v % 100 for v in values))))).one()
    assert row[0] == values and row[1] == [v % 100 for v in values]


async def test_a_prepared_post_names_each_balance_row_it_locks_once_in_order(db, tag):
    async def work(conn):
        cash, lot, revenue = await _accounts(conn, tag)
        entries = [_entry(tag, n, 10, cash, revenue) for n in range(6)] + [_entry(tag, "l", 5, cash, lot)]
        prepared = await prepare_post(conn, entries)
        rows = (await conn.exec_driver_sql(
            "SELECT lane, account, stripe FROM unnest(%s::smallint[], %s::bigint[], %s::smallint[])"
            " AS t(lane, account, stripe)", prepared.params[1:])).all()
        ids = {code: (await conn.exec_driver_sql("SELECT id FROM accounts WHERE code = %s", (code,))).scalar_one()
               for code in (cash, lot, revenue)}
        results = (await conn.exec_driver_sql(prepared.sql, prepared.params)).all()
        return rows, ids, prepared.results(results)

    rows, ids, results = await db.run(work)
    assert rows == sorted(set(rows))  # once each, in lock order
    assert {a for _, a, _ in rows} == set(ids.values())
    assert all(r.outcome is Outcome.POSTED for r in results)
