"""`audit verify` names two entries of different lanes that share an id. An entry's primary key is
(lane, id): ids come from one sequence, so no writer gives two entries one id, but nothing refuses
it short of a constraint per lane. A superuser (triggers off) who copies a sealed entry into
another lane under its id made the checks, which named an entry by its id alone, read the two as
one: "entry N was altered after seal 1" (the seal's hash compared with the copy's), "posting P of
entry N is in lane A, its entry in lane B" (the original's postings joined to the copy)."""
from __future__ import annotations

import psycopg

from ledger.accounts import ensure_asset, open_account
from ledger.audit import verify
from ledger.db import connect
from ledger.lanes import lane_count, lane_of
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from ledger.seal import seal_once


def _customers_of_two_lanes(lanes: int) -> tuple[str, str]:
    """The first customer names c0, c1, ... of two different lanes."""
    first = "c0"
    other = next(f"c{i}" for i in range(1, 1000) if lane_of(f"c{i}", lanes) != lane_of(first, lanes))
    return first, other


def _count_in_cached_balances(conn: psycopg.Connection, entry: int, lane: int) -> None:
    """Move the cached balances by the postings of `entry` in `lane`, as the forger does."""
    conn.execute("""UPDATE account_balances b SET debits = b.debits + greatest(p.amount, 0),
                                                  credits = b.credits + greatest(-p.amount, 0)
                      FROM postings p WHERE p.entry_id = %s AND p.lane = %s
                       AND b.account_id = p.account_id AND b.stripe = p.stripe""", (entry, lane))


async def _failed(db) -> dict[str, tuple[str, ...]]:
    """The checks `audit verify` fails, by name, with their problems (the database let go)."""
    report = await db.read(verify)
    await db.dispose()
    return {c.name: c.problems for c in report.checks if not c.ok}


def _shared_id(lane_a: int, lane_b: int, entry: int) -> tuple[str]:
    """entry_ids' problem for two entries of lanes `lane_a` and `lane_b` that share id `entry`."""
    low, high = sorted((lane_a, lane_b))
    return (f"entries of lanes {low} and {high} share id {entry}: an entry's id names one entry "
            "(the seals, the export and these checks name entries by it)",)


async def test_verify_names_two_entries_of_two_lanes_that_share_an_id(scratch_url):
    """Customer c0 tops up 100 and 101 units (entries e0 and e1, sealed by seal 1). The forger
    inserts into c's lane a copy of e0 for another customer (of another lane), id and txid kept,
    with its two postings (cash +100, lot -100; the cached balances moved alike: cash 100 + 101 +
    100 = 301). Before, the seals check said e0 was altered, and the lanes check that e0's postings
    were in the wrong lane; now a check `entry_ids` names the id and its two lanes, the seals check
    names the copy as an entry that appeared in the sealed range (e0 itself is as sealed), and every
    other check passes (each entry balances, posts to its own customer's accounts, in its lane)."""
    db = connect(scratch_url, pool_size=2)
    lanes = await db.read(lane_count)
    first, other = _customers_of_two_lanes(lanes)
    lane_a, lane_b = lane_of(first, lanes), lane_of(other, lanes)

    async def work(conn):
        await ensure_asset(conn, "USD", 9)
        await open_account(conn, AccountSpec("asset:cash", AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec("liability:lot", AccountType.LIABILITY, "USD", lower_bound=0))
        entries = [JournalEntry(f"e{i}", "topup", (Posting("asset:cash", 100 + i, "USD"),
                                                   Posting("liability:lot", -(100 + i), "USD")), customer_id=first)
                   for i in range(2)]
        return [r.entry_id for r in await post_entries(conn, entries)]

    ids = await db.run(work)
    assert await db.run(seal_once) is not None
    with psycopg.connect(scratch_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("""INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at,
                                                     recorded_at, metadata, txid)
                        SELECT %s, id, 'forged', request_hash, kind, %s, occurred_at, recorded_at, metadata, txid
                          FROM journal_entries WHERE id = %s""", (lane_b, other, ids[0]))
        conn.execute("""INSERT INTO postings (lane, entry_id, account_id, stripe, amount)
                        SELECT %s, entry_id, account_id, stripe, amount FROM postings WHERE entry_id = %s""",
                     (lane_b, ids[0]))
        _count_in_cached_balances(conn, ids[0], lane_b)
        cash = conn.execute("""SELECT sum(b.debits - b.credits) FROM account_balances b
                                 JOIN accounts a ON a.id = b.account_id WHERE a.code = 'asset:cash'""").fetchone()[0]
    assert cash == 301
    failed = await _failed(db)
    assert failed == {
        "entry_ids": _shared_id(lane_a, lane_b, ids[0]),
        "seals": (f"entry {ids[0]} of lane {lane_b} appeared inside sealed range of seal 1, beside the entry "
                  f"{ids[0]} of lane {lane_a} it sealed",),
    }, failed


async def _one_topup_each_lane_known(scratch_url):
    """c0's top-up of 100 units (cash +100, c0's lot -100), the accounts of c0 and of a customer of
    another lane, and the two lanes."""
    db = connect(scratch_url, pool_size=2)
    lanes = await db.read(lane_count)
    first, other = _customers_of_two_lanes(lanes)

    async def work(conn):
        await ensure_asset(conn, "USD", 9)
        await open_account(conn, AccountSpec("asset:cash", AccountType.ASSET, "USD"))
        for customer in (first, other):
            await open_account(conn, AccountSpec(f"liability:customer:{customer}:lot", AccountType.LIABILITY, "USD",
                                                 customer_id=customer))
        entry = JournalEntry("e0", "topup", (Posting("asset:cash", 100, "USD"),
                                             Posting(f"liability:customer:{first}:lot", -100, "USD")),
                             customer_id=first)
        return (await post_entries(conn, [entry]))[0].entry_id

    return db, first, other, lane_of(first, lanes), lane_of(other, lanes), await db.run(work)


async def test_a_copy_of_an_entry_id_in_another_lane_is_not_read_as_posting_to_another_customer(scratch_url):
    """c0 tops up 100 units (entry e0 in c0's lane A: cash +100, c0's lot -100). The forger inserts
    into lane B an entry of e0's id for customer `other` of lane B, with postings of its own (cash
    +100, other's lot -100; cached balances moved alike: cash 200, each lot 100 in credit). Each of
    the two entries balances and posts only to its own customer's accounts: `entry_ids` names the
    shared id, and nothing else is wrong. Before, one_customer_per_entry joined postings to entries
    by id alone, so it read each entry with the other's postings and named two made-up problems:
    'entry e0 (customer c0) posts to account liability:customer:<other>:lot of customer <other>'
    and the same of the copy and c0's lot."""
    db, _, other, lane_a, lane_b, entry = await _one_topup_each_lane_known(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("""INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at,
                                                     recorded_at, metadata, txid)
                        SELECT %s, id, 'forged', request_hash, kind, %s, occurred_at, recorded_at, metadata, txid
                          FROM journal_entries WHERE id = %s""", (lane_b, other, entry))
        conn.execute("""INSERT INTO postings (lane, entry_id, account_id, amount)
                        SELECT %s, %s, a.id, x.amount FROM accounts a
                          JOIN (VALUES ('asset:cash', 100), (%s, -100)) x (code, amount) ON x.code = a.code""",
                     (lane_b, entry, f"liability:customer:{other}:lot"))
        _count_in_cached_balances(conn, entry, lane_b)
    failed = await _failed(db)
    assert failed == {"entry_ids": _shared_id(lane_a, lane_b, entry)}, failed


async def test_an_entry_whose_posting_was_moved_to_another_lane_is_named_as_not_balancing(scratch_url):
    """c0 tops up 100 units (entry e0 in lane A: cash +100, c0's lot -100). The forger moves the lot
    posting to lane B (no entry e0 there). The export and the seals read an entry's postings in its
    lane, so e0 reads as cash +100 alone: it does not balance by 100 and has one posting. Before,
    entries_balanced summed e0's postings by id in every lane (+100 - 100 = 0, two postings) and
    passed; only the lanes check named the moved posting."""
    db, _, _, lane_a, lane_b, entry = await _one_topup_each_lane_known(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        conn.execute("SET session_replication_role = replica")
        moved = conn.execute("""UPDATE postings SET lane = %s WHERE entry_id = %s AND amount = -100
                                RETURNING id""", (lane_b, entry)).fetchone()[0]
    failed = await _failed(db)
    assert failed == {
        "entries_balanced": (f"entry {entry} does not balance in USD by 100",
                             f"entry {entry} has fewer than two postings"),
        "lanes": (f"posting {moved} of entry {entry} is in lane {lane_b}, its entry in lane {lane_a}",),
    }, failed
