"""Sealing runs beside live posting: every committed entry ends in exactly one seal."""
from __future__ import annotations

import asyncio

from sqlalchemy import text

from ledger import seal
from ledger.accounts import ensure_asset, open_account
from ledger.db import connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import GroupPoster, post_now
from ledger.seal import seal_problems
from wallets.jobs import seal_journal


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

    async def read(conn):
        sealed = (await conn.execute(text("SELECT unnest(entry_ids) FROM seals"))).scalars().all()
        entries = (await conn.execute(text("SELECT id FROM journal_entries"))).scalars().all()
        return sealed, entries, await seal_problems(conn)

    sealed, entries, problems = await db.read(read)
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

    async def read(conn):
        sealed = (await conn.execute(text("SELECT unnest(entry_ids) FROM seals"))).scalars().all()
        entries = (await conn.execute(text("SELECT id FROM journal_entries"))).scalars().all()
        return sealed, entries, await seal_problems(conn)

    sealed_ids, entries, problems = await db.read(read)
    await db.dispose()
    assert sorted(sealed_ids) == sorted(entries) and problems == []
