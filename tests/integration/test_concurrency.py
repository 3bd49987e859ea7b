"""Real concurrency: OS processes and tasks against one PostgreSQL, with exact outcomes."""
from __future__ import annotations

import asyncio
import multiprocessing

from ledger.accounts import balance, open_account
from ledger.audit import verify
from ledger.db import RETRIES, connect, lock_key
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import GroupPoster, Outcome, post, post_entries, post_now

PROCESSES, PER_PROCESS = 8, 500
PAIRS = ((0, 1), (1, 2), (2, 0))


def amount_of(proc: int, n: int) -> int:
    return (proc * PER_PROCESS + n) % 97 + 1


def entry_of(tag: str, codes: list[str], proc: int, n: int) -> JournalEntry:
    debit, credit = PAIRS[(proc + n) % 3]
    amount = amount_of(proc, n)
    return JournalEntry(f"{tag}-{proc}-{n}", "transfer", (
        Posting(codes[debit], amount, "USD"), Posting(codes[credit], -amount, "USD")))


async def _process_main(url: str, tag: str, codes: list[str], proc: int) -> tuple[int, int]:
    """Half the entries through GroupPoster (4 tasks), half as single-entry transactions (2 tasks)."""
    db = connect(url, pool_size=3)
    poster = GroupPoster(db)
    posted = 0

    async def grouped(ns):
        nonlocal posted
        for n in ns:
            result = await poster.post(entry_of(tag, codes, proc, n))
            posted += result.outcome is Outcome.POSTED  # read posted only after the await

    async def single(ns):
        nonlocal posted
        for n in ns:
            result = await post_now(db, entry_of(tag, codes, proc, n))
            posted += result.outcome is Outcome.POSTED

    half = PER_PROCESS // 2
    await asyncio.gather(*(grouped(range(k, half, 4)) for k in range(4)),
                         *(single(range(half + k, PER_PROCESS, 2)) for k in range(2)))
    await db.dispose()
    retries = sum(s.value for m in RETRIES.collect() for s in m.samples if s.name.endswith("_total"))
    return posted, int(retries)


def _process(args) -> tuple[int, int]:
    return asyncio.run(_process_main(*args))


async def test_eight_processes_posting_onto_three_shared_accounts_end_exact_and_whole(db, database_url, tag):
    codes = [f"asset:shared:{tag}:{i}" for i in range(3)]

    async def setup(conn):
        for code in codes:
            await open_account(conn, AccountSpec(code, AccountType.ASSET, "USD"))

    await db.run(setup)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = pool.map(_process, [(database_url, tag, codes, p) for p in range(PROCESSES)])

    assert [posted for posted, _ in results] == [PER_PROCESS] * PROCESSES
    expected = [0, 0, 0]
    for proc in range(PROCESSES):
        for n in range(PER_PROCESS):
            debit, credit = PAIRS[(proc + n) % 3]
            expected[debit] += amount_of(proc, n)
            expected[credit] -= amount_of(proc, n)
    balances = await db.read(lambda conn: asyncio.gather(*(balance(conn, c) for c in codes)))
    assert [b.normal for b in balances] == expected
    assert sum(b.debits - b.credits for b in balances) == 0
    report = await db.read(verify)
    assert report.ok, report
    print(f"serialization retries absorbed: {sum(r for _, r in results)}")


async def test_ten_concurrent_debits_of_30_against_100_give_exactly_three(db, tag):
    cash, lot = f"asset:cash:{tag}", f"liability:lot:{tag}"

    async def setup(conn):
        await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD", lower_bound=0))
        await post(conn, JournalEntry(f"{tag}-fund", "topup", (Posting(cash, 100, "USD"), Posting(lot, -100, "USD"))))

    await db.run(setup)

    def spend(i):
        return JournalEntry(f"{tag}-spend-{i}", "spend", (Posting(lot, 30, "USD"), Posting(cash, -30, "USD")))

    poster = GroupPoster(db)
    grouped = await asyncio.gather(*(poster.post(spend(i)) for i in range(5)))
    single = await asyncio.gather(*(db.run(lambda c, i=i: post_entries(c, [spend(i)])) for i in range(5, 10)))
    outcomes = [r.outcome for r in grouped] + [r[0].outcome for r in single]
    assert outcomes.count(Outcome.POSTED) == 3
    assert outcomes.count(Outcome.BELOW_BOUND) == 7
    assert (await db.read(lambda c: balance(c, lot))).normal == 10


def _retries() -> float:
    return sum(s.value for m in RETRIES.collect() for s in m.samples if s.name.endswith("_total"))


async def _twenty_posts_onto_one_row(db, tag, locks=()) -> float:
    """Twenty concurrent transactions posting onto the same account; the retries they cost."""
    cash, lot = f"asset:cash:{tag}", f"liability:lot:{tag}"

    async def setup(conn):
        await open_account(conn, AccountSpec(cash, AccountType.ASSET, "USD"))
        await open_account(conn, AccountSpec(lot, AccountType.LIABILITY, "USD"))

    await db.run(setup)
    before = _retries()

    def entry(i):
        return JournalEntry(f"{tag}-{i}", "t", (Posting(cash, i + 1, "USD"), Posting(lot, -(i + 1), "USD")))

    results = await asyncio.gather(*(db.run(lambda c, i=i: post(c, entry(i)), locks=locks) for i in range(20)))
    assert all(r.outcome is Outcome.POSTED for r in results)
    assert (await db.read(lambda c: balance(c, lot))).normal == sum(range(1, 21))
    return _retries() - before


async def test_serialization_failures_are_retried_and_never_reach_the_caller(db, tag):
    """Without advisory locks, concurrent transactions on one row collide (40001) and are retried."""
    retries = await _twenty_posts_onto_one_row(db, tag)
    assert retries > 0, "the test should have provoked at least one serialization failure"


async def test_the_same_work_under_an_advisory_lock_queues_without_a_single_retry(db, tag):
    """The lock is taken before the transaction's snapshot: twenty transactions on one row wait
    for each other and none fails with 40001 (taken after the snapshot, most would)."""
    lock = [lock_key(f"test:{tag}")]
    assert await _twenty_posts_onto_one_row(db, tag, lock) == 0
    async with db.engine.connect() as conn:  # and released: another session takes it at once
        free = (await conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (lock[0],))).scalar()
        await conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
    assert free is True


async def test_a_holder_that_hangs_inside_its_transaction_loses_its_locks(database_url, tag):
    """The server ends a session idle in a transaction too long, and its advisory locks with it,
    so one hung process cannot stop every wallet write for good."""
    hung = connect(database_url, pool_size=1, idle_in_transaction_ms=300)
    lock = lock_key(f"hang:{tag}")
    inside = asyncio.Event()

    async def hang(conn):
        await conn.exec_driver_sql("SELECT 1")
        inside.set()  # in its transaction: the lock, taken before it, is held
        await asyncio.sleep(3)  # a process frozen mid-transaction
        await conn.exec_driver_sql("SELECT 1")

    holder = asyncio.create_task(hung.run(hang, locks=[lock]))
    other = connect(database_url, pool_size=1)
    try:
        async with other.engine.connect() as conn:
            # Not a fixed wait then a try of the lock: under load the holder may not have taken it
            # yet (the try takes it, "held" fails), or the server may already have ended it.
            await asyncio.wait_for(inside.wait(), 60)
            for _ in range(600):  # a ceiling: the hung work's own end (3 s) frees it too, and fails below
                await asyncio.sleep(0.1)
                if (await conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s)", (lock,))).scalar():
                    break
            else:
                raise AssertionError("the hung session kept its lock")
            await conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
        try:
            await holder
        except Exception:
            pass  # its session is gone: the hung work fails, it does not commit
        else:
            raise AssertionError("work whose session was ended must not succeed")
    finally:
        await other.dispose()
        await hung.dispose()


async def test_a_writer_transaction_plans_its_statements_generically_and_only_itself(db, tag):
    """Under the default plan_cache_mode the foreign-key checks against partitioned tables were
    re-planned for every row: a transaction taken under advisory locks (a wallet batch) plans
    generically, and the setting ends with it."""
    async def mode(conn):
        return (await conn.exec_driver_sql("SHOW plan_cache_mode")).scalar()

    assert await db.run(mode, locks=[lock_key(f"plans:{tag}")]) == "force_generic_plan"
    assert await db.run(mode) == "auto"
    assert await db.run(mode, locks=[lock_key(f"plans:{tag}")]) == "force_generic_plan"


async def test_a_writer_transaction_leaves_no_warning_for_the_server_log(database_url, tag):
    """Taking the lane locks and opening the transaction is one round trip of several statements.
    A COMMIT that ended the query's implicit block drew a WARNING ("there is no transaction in
    progress") from PostgreSQL, which its log kept once a wallet batch: the batch sends none."""
    one = connect(database_url, pool_size=1)  # every run below uses the one pooled session
    notices: list[str] = []

    async def listen(conn):
        raw = await conn.get_raw_connection()
        raw.driver_connection.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))

    async def isolation(conn):
        return (await conn.exec_driver_sql("SHOW transaction_isolation")).scalar()

    try:
        await one.run(listen)
        for _ in range(3):
            assert await one.run(isolation, locks=[lock_key(f"quiet:{tag}")]) == "serializable"
        async with one.engine.connect() as conn:  # the locks went with each transaction
            held = (await conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")).scalar()
        assert held == 0
        assert notices == []
    finally:
        await one.dispose()
