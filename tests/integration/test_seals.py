"""Sealing runs beside live posting: every committed entry ends in exactly one seal."""
from __future__ import annotations

import asyncio
import gc
import io

import psycopg
import pytest
from sqlalchemy import text

from ledger import seal
from ledger.accounts import ensure_asset, open_account
from ledger.db import connect
from ledger.export import write_jsonl
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.offline import verify_lines
from ledger.posting import GroupPoster, post_now
from ledger.seal import SealsDatedAhead, seal_problems
from wallets.jobs import seal_journal


async def _sealed_and_entries(conn):
    """The entry ids the seals hold (an id twice: sealed twice), every entry's id, seal_problems."""
    sealed = (await conn.execute(text("SELECT unnest(entry_ids) FROM seals"))).scalars().all()
    entries = (await conn.execute(text("SELECT id FROM journal_entries"))).scalars().all()
    return sealed, entries, await seal_problems(conn)


async def test_concurrent_sealers_and_posters_seal_every_entry_exactly_once(scratch_url):
    db = connect(scratch_url, pool_size=8)

    async def setup(conn):
        await ensure_asset(conn, "USD", 9)
        for code in ("asset:a", "asset:b", "asset:c"):
            await open_account(conn, AccountSpec(code, AccountType.ASSET, "USD"))

    await db.run(setup)
    poster = GroupPoster(db)
    done = asyncio.Event()

    def entry(i):
        debit, credit = [("asset:a", "asset:b"), ("asset:b", "asset:c"), ("asset:c", "asset:a")][i % 3]
        return JournalEntry(f"e{i}", "t", (Posting(debit, i + 1, "USD"), Posting(credit, -(i + 1), "USD")))

    async def posting():
        await asyncio.gather(*(poster.post(entry(i)) for i in range(300)),
                             *(post_now(db, entry(i)) for i in range(300, 400)))
        done.set()

    async def sealing():
        while not done.is_set():
            await seal_journal(db)
            await asyncio.sleep(0.005)

    await asyncio.gather(posting(), sealing(), sealing())
    await seal_journal(db)

    sealed, entries, problems = await db.read(_sealed_and_entries)
    await db.dispose()
    assert len(entries) == 400
    assert sorted(sealed) == sorted(entries), "each entry sealed once, none missed"
    assert problems == []


async def test_a_sealing_run_ends_while_posting_goes_on(scratch_url, monkeypatch):
    """seal_journal sealed until a seal found nothing new: under steady posting every seal found
    the entries committed while it ran, so the job's run never ended, its last success never
    moved (the README's alert fired on a sealer at work) and each interval counted `skipped`. A
    run now seals what was committed when it began (in seals of at most MAX_TXIDS_PER_SEAL
    transactions) and ends; the next run seals the rest."""
    db = connect(scratch_url, pool_size=8)

    async def setup(conn):
        await ensure_asset(conn, "USD", 9)
        for code in ("asset:a", "asset:b"):
            await open_account(conn, AccountSpec(code, AccountType.ASSET, "USD"))

    await db.run(setup)
    stop, going = asyncio.Event(), asyncio.Event()
    posted = [0]
    hashing = seal.hashes_between

    async def slow_hashing(*args, **kwargs):  # a seal of a busy journal's batch takes a while
        await asyncio.sleep(0.1)
        return await hashing(*args, **kwargs)

    monkeypatch.setattr(seal, "hashes_between", slow_hashing)

    async def posting(lane: int):
        i = 0
        while not stop.is_set():
            i += 1
            await post_now(db, JournalEntry(f"p{lane}-{i}", "t", (Posting("asset:a", 1, "USD"),
                                                                  Posting("asset:b", -1, "USD"))))
            posted[0] += 1
            if posted[0] >= 20:
                going.set()

    posters = [asyncio.create_task(posting(n)) for n in range(3)]
    try:
        await asyncio.wait_for(going.wait(), 20)
        sealed = await asyncio.wait_for(seal_journal(db), 20)
        assert sealed > 0
    finally:
        stop.set()
        await asyncio.gather(*posters)
    await seal_journal(db)

    sealed_ids, entries, problems = await db.read(_sealed_and_entries)
    await db.dispose()
    assert sorted(sealed_ids) == sorted(entries) and problems == []


async def test_a_seal_covers_at_most_max_entries_per_seal_entries_unless_one_transaction_has_more(
        scratch_url, monkeypatch):
    """A seal was bounded by transactions only (5,000): after a backlog of bulk writes (up to 256
    entries a transaction, 20,000 in the synthetic builder) one seal hashed every entry of them in
    one transaction on the server's event loop: 200,000 entries took 9.0 s and 440 MB, so 5,000
    bulk transactions (~1.3 M entries) would take ~60 s, the sessions' idle-in-transaction
    timeout (a seal outlasting it fails, and the next run tries the same range), and ~2.8 GB.
    A seal now stops before the
    transaction that would take it past MAX_ENTRIES_PER_SEAL; a transaction bigger than that is
    sealed alone."""
    from api.bench.synthetic import build_ledger

    monkeypatch.setattr(seal, "MAX_ENTRIES_PER_SEAL", 2500)
    db = connect(scratch_url, pool_size=2)
    try:
        await build_ledger(db, 3000, customers=10, chunk=3000, seal=False)  # one transaction of 3,000
        await build_ledger(db, 4000, customers=10, first=3000, chunk=1000, seal=False)  # four of 1,000
        await seal_journal(db)

        async def read(conn):
            sizes = (await conn.execute(text("SELECT cardinality(entry_ids) FROM seals ORDER BY id"))).scalars().all()
            return list(sizes), await seal_problems(conn)

        sizes, problems = await db.read(read)
    finally:
        await db.dispose()
    assert sizes == [3000, 2000, 2000] and problems == []


async def test_a_seal_leaves_the_event_loop_to_the_requests_while_it_hashes(scratch_url):
    """The seal job runs in a serving process (worker 0 of `serve --workers N`, or the one
    process), and hashes_between read and hashed a whole seal's entries in one go on its event
    loop: a seal of 50,000 entries held the loop 1.06 s (every request of that process waited),
    ~0.75 s every 10 s at 3,600 events/s. It now reads them through a server-side cursor in
    pages of HASH_PAGE, the loop free between pages (the longest hold left: 0.12-0.17 s here, a
    tenth of the seal or less)."""
    from api.bench.synthetic import build_ledger

    db = connect(scratch_url, pool_size=2)
    try:
        await build_ledger(db, 50_000, customers=10, seal=False)
        gaps, stop = [], asyncio.Event()

        async def ticking():
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                gaps.append(loop.time() - last)
                last = loop.time()

        loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(ticking())
        # The collector off while measured: a full collection of the whole test process's heap
        # (CI runs ~3,600 tests in one) held the loop 1.56 s in one run, whatever the seal does.
        gc.collect()
        gc.disable()
        try:
            began = loop.time()
            sealed = await seal_journal(db)
            took = loop.time() - began
        finally:
            gc.enable()
        stop.set()
        await ticker

        async def problems(conn):
            return await seal_problems(conn)

        assert sealed == 50_000 and await db.read(problems) == []
    finally:
        await db.dispose()
    # Before, one hold was the whole seal; a page's is a small part of it, however loaded the
    # machine (a bound in seconds would be a timed test): 50 pages, so a quarter leaves room.
    assert max(gaps) < took / 4, f"the loop was held {max(gaps):.3f} s of the seal's {took:.3f} s"


def _entry(key: str) -> JournalEntry:
    return JournalEntry(key, "t", (Posting("asset:a", 7, "USD"), Posting("asset:b", -7, "USD")))


async def _two_accounts(conn) -> None:
    await ensure_asset(conn, "USD", 9)
    for code in ("asset:a", "asset:b"):
        await open_account(conn, AccountSpec(code, AccountType.ASSET, "USD"))


async def test_a_seal_is_dated_after_every_entry_it_seals_and_after_the_seal_before_it(scratch_url):
    """sealed_at was the sealer's transaction start (the column's now(), set at BEGIN), while what
    it seals is what committed before its first statement: an entry written in between (one round
    trip in the job; held open here) was sealed dated before it was recorded, and a seal taken
    meanwhile by another sealer made the seals' dates go backwards. Both made "these entries
    existed by sealed_at" false. A seal is now dated when it is written (clock_timestamp())."""
    from ledger.seal import horizon

    db = connect(scratch_url, pool_size=3)
    try:
        await db.run(_two_accounts)
        await post_now(db, _entry("one"))
        until = await db.lookup(horizon)  # "one" is below it, "two" will not be
        async with db.engine.connect() as sealer:
            sealer = await sealer.execution_options(isolation_level="AUTOCOMMIT")
            await sealer.exec_driver_sql("BEGIN ISOLATION LEVEL SERIALIZABLE")  # as the job's: now() fixed here
            await post_now(db, _entry("two"))
            first = await db.run(lambda conn: seal.seal_once(conn, until))  # another sealer: seal 1, "one"
            second = await seal.seal_once(sealer)  # seal 2, "two"
            await sealer.exec_driver_sql("COMMIT")
        assert (first.entries, second.entries) == (1, 1)

        async def read(conn):
            recorded = (await conn.execute(text(
                "SELECT recorded_at FROM journal_entries WHERE key = 'two'"))).scalar_one()
            dates = (await conn.execute(text("SELECT sealed_at FROM seals ORDER BY id"))).scalars().all()
            return recorded, dates, await seal_problems(conn)

        recorded, (one, two), problems = await db.read(read)
    finally:
        await db.dispose()
    assert two >= recorded, f"seal 2 dated {two}, its entry recorded {recorded}"
    assert two >= one, f"seal 2 dated {two}, seal 1 {one}"
    assert problems == []


async def test_the_database_refuses_a_seal_dated_before_its_entries_the_seal_before_it_or_in_the_future(
        scratch_url):
    """A version 4 seal's date is checked when it is written, whoever writes it: not before the
    seal before it, not before any entry it covers was recorded, not after the database's clock."""
    from sqlalchemy.exc import DBAPIError

    db = connect(scratch_url, pool_size=2)
    try:
        await db.run(_two_accounts)
        await post_now(db, _entry("one"))
        assert (await db.run(seal.seal_once)).entries == 1
        await post_now(db, _entry("two"))

        async def insert(conn, at: str):
            last = (await conn.execute(text("SELECT to_txid::text FROM seals ORDER BY id DESC LIMIT 1"))).scalar_one()
            await conn.execute(text(
                f"""INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash,
                                       hash_version, sealed_at)
                    VALUES (CAST(:lo AS xid8), pg_snapshot_xmin(pg_current_snapshot()), '{{}}', '{{}}', :z, :z, 4,
                            {at})"""), {"lo": last, "z": bytes(32)})

        cases = {"(SELECT sealed_at - interval '1 second' FROM seals)": "before seal 1",
                 "(SELECT recorded_at - interval '1 microsecond' FROM journal_entries WHERE key = 'two')":
                     "before entry",
                 "clock_timestamp() + interval '1 hour'": "in the future"}
        for at, refusal in cases.items():
            with pytest.raises(DBAPIError, match=refusal):
                await db.run(lambda conn, at=at: insert(conn, at))
        await db.run(lambda conn: insert(conn, "clock_timestamp()"))  # dated now: taken
    finally:
        await db.dispose()


async def _plant_first_seal(conn, ahead: str, version: int = 4) -> str:
    """Seal 1, of every entry so far, dated `ahead` (an interval) past the clock at a whole second
    (its text ends .000000Z, which the chain covers from version 4), of hash `version`, written with
    the triggers off (as by a superuser, or a sealer before its clock stepped back); its date as the
    export writes it."""
    from ledger.chain import GENESIS, seal_chain
    from ledger.seal import SEALED_AT, hashes_between, horizon

    await conn.execute(text("SET LOCAL session_replication_role = replica"))
    hi = await horizon(conn)
    hashes = await hashes_between(conn, 0, hi, version)
    on = f"(date_trunc('second', clock_timestamp()) + interval '{ahead}')"
    at = (await conn.execute(text("SELECT " + SEALED_AT.format(on)))).scalar_one()
    ordered = [hashes[i] for i in sorted(hashes)]
    await conn.execute(text(
        """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash,
                              hash_version, sealed_at)
           VALUES (CAST('0' AS xid8), CAST(:hi AS xid8), :ids, :hashes, :prev, :chain, :version,
                   CAST(:at AS timestamptz))"""),
        {"hi": str(hi), "ids": sorted(hashes), "hashes": ordered, "prev": GENESIS, "at": at,
         "chain": seal_chain(GENESIS, ordered, version, at), "version": version})
    return at


async def _sealed_past_a_seal_a_year_ahead(db, version: int = 4) -> str:
    """"one" posted, seal 1 planted a year (365 days) ahead over it (`_plant_first_seal`, hash
    `version`), "two" posted: the sealing run that seals it is an error (SealsDatedAhead). Seal 1's
    date as the export writes it."""
    await db.run(_two_accounts)
    await post_now(db, _entry("one"))
    planted = await db.run(lambda conn: _plant_first_seal(conn, "365 days", version=version))
    await post_now(db, _entry("two"))
    with pytest.raises(SealsDatedAhead, match=f"seals are dated {planted}, more than a day past"):
        await seal_journal(db)  # before: sealed "two" and returned 1, nothing said
    return planted


def _exported(url: str) -> list[bytes]:
    """The journal as `tokentill export` writes it (write_jsonl, on a connection of its own), a line each."""
    out = io.StringIO()
    with psycopg.connect(url) as conn:
        write_jsonl(conn, out)
    return [line.encode() for line in out.getvalue().splitlines()]


async def test_a_seal_is_taken_when_the_clock_stepped_back_below_the_last_seal_and_an_entry(scratch_url):
    """A database clock stepped back (NTP) below the last seal's date, or below an entry recorded
    before the step, made every new seal refused ("before seal 1"): the job errored, nothing was
    sealed until the clock caught up. A seal is dated the latest of the clock, the seal before it
    and its entries' recorded_at, so it is taken, and the order rules still hold."""
    from sqlalchemy.exc import DBAPIError

    db = connect(scratch_url, pool_size=2)
    try:
        await db.run(_two_accounts)
        await post_now(db, _entry("one"))

        # seal 1 as a sealer wrote it before the clock stepped back an hour
        await db.run(lambda conn: _plant_first_seal(conn, "1 hour"))
        await post_now(db, _entry("two"))

        async def recorded_later(conn):  # "two" recorded 2 hours on, before the clock stepped back
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text("UPDATE journal_entries SET recorded_at = clock_timestamp() + interval '2 hours'"
                                    " WHERE key = 'two'"))

        await db.run(recorded_later)
        second = await db.run(seal.seal_once)  # before: DBAPIError "seal 2 is dated ..., before seal 1"
        await post_now(db, _entry("three"))  # recorded now: before seal 2's date
        third = await db.run(seal.seal_once)
        assert (second.entries, third.entries) == (1, 1)

        async def read(conn):
            two = (await conn.execute(text("SELECT recorded_at FROM journal_entries WHERE key = 'two'"))).scalar_one()
            dates = (await conn.execute(text("SELECT sealed_at FROM seals ORDER BY id"))).scalars().all()
            return two, dates, await seal_problems(conn)

        two, (first_at, second_at, third_at), problems = await db.read(read)
        # seal 2: max(now, now + 1 h, now + 2 h) = "two"'s recorded_at; seal 3: max(now, seal 2's, now) = seal 2's
        assert (second_at, third_at) == (two, two)
        assert first_at < two and first_at.microsecond == 0
        assert problems == []

        async def insert(conn, at: str):  # the trigger still refuses a date past all three
            last = (await conn.execute(text("SELECT to_txid::text FROM seals ORDER BY id DESC LIMIT 1"))).scalar_one()
            await conn.execute(text(
                f"""INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash,
                                       hash_version, sealed_at)
                    VALUES (CAST(:lo AS xid8), pg_snapshot_xmin(pg_current_snapshot()), '{{}}', '{{}}', :z, :z, 4,
                            {at})"""), {"lo": last, "z": bytes(32)})

        with pytest.raises(DBAPIError, match="in the future"):
            await db.run(lambda conn: insert(conn, "(SELECT max(sealed_at) + interval '1 microsecond' FROM seals)"))
        await db.run(lambda conn: insert(conn, "(SELECT max(sealed_at) FROM seals)"))  # the latest: taken
    finally:
        await db.dispose()


async def test_the_seal_date_check_reads_the_entries_the_seal_covers_not_the_journal(scratch_url):
    """seals_sealed_at looked for a covered entry recorded after the seal ORDER BY id LIMIT 1: once
    PL/pgSQL switched the trigger to its generic plan (the 6th seal of a session), it walked the
    journal's id index from its first entry, filtering on txid: every entry ever written was read
    by each seal (1,000,000 old entries and 50,000 sealed: 600-830 ms a seal, 30 ms before the
    switch). The range is now read by the txid index (0083)."""
    old, new, seals = 200_000, 10, 8
    db = connect(scratch_url, pool_size=1)
    try:
        async def fill(conn, n: int, prefix: str) -> None:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(
                "INSERT INTO journal_entries (key, request_hash, kind, occurred_at) "
                "SELECT :p || g, '\\x00', 't', now() FROM generate_series(1, :n) g"), {"n": n, "p": prefix})

        async def seal_row(conn, version: int) -> None:
            last = (await conn.execute(text("SELECT coalesce(max(to_txid), '0')::text FROM seals"))).scalar_one()
            await conn.execute(text(
                """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash,
                                      hash_version, sealed_at)
                   VALUES (CAST(:lo AS xid8), pg_snapshot_xmin(pg_current_snapshot()), '{}', '{}', :z, :z, :v,
                           clock_timestamp())"""), {"lo": last, "z": bytes(32), "v": version})

        await db.run(lambda conn: fill(conn, old, "old"))
        await db.run(lambda conn: seal_row(conn, 3))  # the old entries, sealed (no date check: version 3)
        await db.run(lambda conn: fill(conn, new, "new"))
        await db.read(lambda conn: conn.execute(text("ANALYZE journal_entries")))

        async def read_by_seals(conn) -> int:
            read = 0
            for _ in range(seals):  # one session: the trigger's plans are cached, generic from the 6th
                await conn.execute(text("SAVEPOINT s"))
                before = await _entry_rows_read(conn)
                await seal_row(conn, 4)
                read += await _entry_rows_read(conn) - before
                await conn.execute(text("ROLLBACK TO SAVEPOINT s"))
            return read

        read = await db.run(read_by_seals)
    finally:
        await db.dispose()
    # each seal reads its 10 entries (and a few index pages): 8 seals, 80 rows; never the 200,000 old ones
    assert read <= seals * new * 2, f"{seals} seals read {read} journal rows"


async def _entry_rows_read(conn) -> int:
    """Rows of journal_entries' partitions this transaction has read so far, by index or scan."""
    return (await conn.execute(text(
        """SELECT coalesce(sum(coalesce(idx_tup_fetch, 0) + seq_tup_read), 0)::bigint FROM pg_stat_xact_user_tables
            WHERE relname LIKE 'journal_entries%'"""))).scalar_one()


async def test_audit_verify_reads_each_seals_entries_not_the_journal_to_check_its_date(scratch_url):
    """seal_problems (audit verify) asked, for each version 4 seal, for its first entry recorded
    after it, ORDER BY id LIMIT 1: the connection prepares queries, and from the 6th seal the
    server's generic plan walked the journal's id index from its first entry, each seal. Entries
    with low ids and no seal yet (txid past every seal's range) were read by every such seal."""
    old, seals = 100_000, 8
    db = connect(scratch_url, pool_size=1)
    try:
        await db.run(_two_accounts)

        async def unsealed(conn) -> None:  # low ids, txid past every seal here: no seal covers them
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(
                "INSERT INTO journal_entries (key, request_hash, kind, occurred_at, txid) "
                "SELECT 'old' || g, '\\x00', 't', now(), CAST((pg_current_xact_id()::text::bigint + 1000000)::text "
                "AS xid8) FROM generate_series(1, :n) g"), {"n": old})

        await db.run(unsealed)
        for n in range(seals):
            await post_now(db, _entry(f"e{n}"))
            assert (await db.run(seal.seal_once)).entries == 1
        await db.read(lambda conn: conn.execute(text("ANALYZE journal_entries")))

        async def verify(conn):
            before = await _entry_rows_read(conn)
            problems = await seal_problems(conn)
            return problems, await _entry_rows_read(conn) - before

        problems, read = await db.read(verify)
    finally:
        await db.dispose()
    assert problems == []
    # each seal: its 1 entry hashed, and read again for the date: ~16 rows; never the 100,000 unsealed
    assert read <= seals * 10, f"verifying {seals} seals read {read} journal rows"


async def test_a_seal_planted_a_year_ahead_is_named_and_the_seals_dated_by_it_are_not_silent(scratch_url):
    """A superuser with the triggers off plants seal 1 dated a year (365 days) past the clock. The
    sealer dates each later seal GREATEST(its clock, the seal before it, its entries) = that date,
    which 0083's guard takes (ahead of the clock only as far as the seal before it forces), and the
    chain and the order stay consistent: verify and the offline verifier found nothing, and every
    seal after it claimed a date a year off, in silence. Now seal 2 is still taken (dated as seal 1:
    the order holds), but the sealing run is an error (SealsDatedAhead: the job's last success
    stops), and both verifications name seal 1, 365 days past the database's clock (a day, 86,400 s,
    is what they allow a clock that stepped back), and not seal 2, whose date seal 1 explains."""
    db = connect(scratch_url, pool_size=2)
    try:
        planted = await _sealed_past_a_seal_a_year_ahead(db)

        async def read(conn):
            dates = (await conn.execute(text(f"SELECT {seal.SEALED_AT.format('sealed_at')} FROM seals ORDER BY id"
                                             ))).scalars().all()
            return dates, await seal_problems(conn)

        dates, problems = await db.read(read)
    finally:
        await db.dispose()
    assert dates == [planted, planted]  # seal 2 taken, dated as seal 1
    assert len(problems) == 1, problems  # before: []
    assert problems[0].startswith(f"seal 1 is dated {planted}, more than a day past the database's clock (")
    assert "and past the seal before it and its entries" in problems[0]

    report = verify_lines(_exported(scratch_url))
    assert (report.seals, report.problem_count) == (2, 1), report.problems  # before: 0 problems
    assert report.problems[0].startswith(f"seal 1 is dated {planted}, more than a day past the export (")


async def test_an_entry_recorded_a_year_ahead_is_named_as_what_dates_the_seals(scratch_url):
    """The same with the entry: "two"'s recorded_at moved a year (365 days) on with the triggers off
    before it was sealed. Seal 2 is dated by it (the latest of the clock, seal 1, its entry), the run
    is an error, and verify names the entry (its seal's date is its own), not a seal."""
    db = connect(scratch_url, pool_size=2)
    try:
        await db.run(_two_accounts)
        await post_now(db, _entry("one"))
        await seal_journal(db)
        await post_now(db, _entry("two"))

        async def recorded_ahead(conn):
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            return (await conn.execute(text(
                "UPDATE journal_entries SET recorded_at = clock_timestamp() + interval '365 days' WHERE key = 'two' "
                "RETURNING id"))).scalar_one()

        two = await db.run(recorded_ahead)
        with pytest.raises(SealsDatedAhead):
            await seal_journal(db)
        problems = await db.read(seal_problems)
    finally:
        await db.dispose()
    assert len(problems) == 1 and problems[0].startswith(f"entry {two} was recorded at "), problems
    assert "more than a day past the database's clock (" in problems[0] and "seal 2 is dated by it" in problems[0]


async def test_a_version_3_seal_dated_a_year_ahead_does_not_explain_the_version_4_seal_after_it(scratch_url):
    """A database upgraded from version 3 seals: its last version 3 seal's sealed_at, which no hash
    covers, moved a year (365 days) on with the triggers off. The sealer dates the first version 4
    seal GREATEST(its clock, that date, its entry) = that date, a year ahead, and chains it. verify
    took the seal before it as the date's explanation (equal to it: "past the seal before it" false)
    and named nothing, though the sealing run was an error; and a version 3 seal's date is not
    checked, so nothing was named at all. A date no hash covers explains nothing: seal 2, whose
    chained date is 365 days past the database's clock (more than a day), is named, offline too
    (the export's exported_at is the database's clock when written: 365 days before it too)."""
    db = connect(scratch_url, pool_size=2)
    try:
        planted = await _sealed_past_a_seal_a_year_ahead(db, version=3)
        problems = await db.read(seal_problems)
    finally:
        await db.dispose()
    assert len(problems) == 1, problems  # before: []
    assert problems[0].startswith(f"seal 2 is dated {planted}, more than a day past the database's clock ("), problems
    assert "as seal 1 before it is, whose date (hash version 3) no hash covers" in problems[0]

    report = verify_lines(_exported(scratch_url))
    assert (report.seals, report.problem_count) == (2, 1), report.problems  # before: 0 problems
    assert report.problems[0].startswith(f"seal 2 is dated {planted}, more than a day past the export (")
    assert "as seal 1 before it is, whose date (hash version 3) no hash covers" in report.problems[0]


async def test_every_sealing_run_is_an_error_while_the_last_seal_is_dated_ahead(scratch_url):
    """Seal 1 planted a year (365 days) ahead, "two" posted: the run that seals it raises
    SealsDatedAhead. The next run finds nothing new to seal and returned 0, a success: the job's
    last success moved on (and the failure was logged again, with its traceback, at the next run
    that sealed), so on a ledger posted to less often than it is sealed the alert on the last
    success never fired. The last seal is still dated a year ahead: every run is an error until
    the clock is within a day of it, whatever it sealed."""
    db = connect(scratch_url, pool_size=2)
    try:
        await db.run(_two_accounts)
        await post_now(db, _entry("one"))
        planted = await db.run(lambda conn: _plant_first_seal(conn, "365 days"))
        with pytest.raises(SealsDatedAhead, match=f"seals are dated {planted}, more than a day past"):
            await seal_journal(db)  # nothing to seal: before, 0 (a success)
        await post_now(db, _entry("two"))
        with pytest.raises(SealsDatedAhead, match=f"seals are dated {planted}"):
            await seal_journal(db)  # sealed "two"
        with pytest.raises(SealsDatedAhead, match=f"seals are dated {planted}"):
            await seal_journal(db)  # nothing new: before, 0
        count = await db.read(lambda conn: _count_seals(conn))
    finally:
        await db.dispose()
    assert count == 2  # seal 2 (of "two") taken all the same


async def _count_seals(conn) -> int:
    return (await conn.execute(text("SELECT count(*) FROM seals"))).scalar_one()


async def test_a_seal_planted_a_year_ahead_is_named_offline_whatever_the_header_says(scratch_url):
    """The export's exported_at, which no hash covers, was all the offline verifier checked a seal's
    date against: seal 1 planted a year (365 days) ahead, the header's exported_at removed, or moved
    ten years on, and the file verified with 0 problems (the auditor told nothing). The file was
    written before it is verified: a seal dated more than a day past the verifying machine's clock
    is named whatever the header says. Seal 1 is dated P (a whole second); against a clock at
    P - 1 day exactly it is not more than a day past (not named), at P - 1 day - 1 us it is."""
    import json
    from datetime import UTC, datetime, timedelta

    db = connect(scratch_url, pool_size=2)
    try:
        planted = await _sealed_past_a_seal_a_year_ahead(db)
    finally:
        await db.dispose()
    lines = _exported(scratch_url)
    header = json.loads(lines[0])
    assert header["type"] == "export"

    def with_header(**changes):
        edited = {k: v for k, v in {**header, **changes}.items() if v is not None}
        return [json.dumps(edited).encode(), *lines[1:]]

    for edited in (with_header(exported_at=None), with_header(exported_at="2036-12-06T00:00:00.000000Z")):
        report = verify_lines(edited)
        assert (report.seals, report.problem_count) == (2, 1), report.problems  # before: 0 problems
        assert report.problems[0].startswith(f"seal 1 is dated {planted}, more than a day past this machine's "
                                             "clock ("), report.problems
    p = datetime.strptime(planted, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    moved = with_header(exported_at="2036-12-06T00:00:00.000000Z")
    assert verify_lines(moved, now=p - timedelta(days=1)).problem_count == 0
    report = verify_lines(moved, now=p - timedelta(days=1, microseconds=1))
    assert report.problem_count == 1 and report.problems[0].startswith(
        f"seal 1 is dated {planted}, more than a day past this machine's clock ("
        f"{(p - timedelta(days=1, microseconds=1)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')})"), report.problems
