"""Migration 0042: seals carry the version of their entry hashes. A seal written before it (hash
version 1: recorded_at not covered) still verifies after the upgrade; new seals (version 4 since
0081, which covers what 2 does) cover recorded_at; hash_version is as immutable as the rest of a
seal; and down to 0041 and up again, every seal keeps its version (the downgrade keeps them aside for the upgrade)."""
from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from api.runtime import sync_url
from ledger.accounts import ensure_asset, open_account
from ledger.chain import GENESIS, chain
from ledger.db import connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from ledger.seal import hashes_between, seal_once, seal_problems
from migrations import runner


def _migrate(url: str, *steps: tuple[str, str]) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            for direction, revision in steps:
                getattr(command, direction)(config, revision)
                conn.commit()
    finally:
        engine.dispose()


async def _post(db, first: int, n: int) -> list[int]:
    async def work(conn):
        await ensure_asset(conn, "USD", 9)
        for code, type_ in (("asset:cash", AccountType.ASSET), ("liability:lot", AccountType.LIABILITY)):
            if not (await conn.execute(text("SELECT 1 FROM accounts WHERE code = :c"), {"c": code})).first():
                await open_account(conn, AccountSpec(code, type_, "USD"))
        entries = [JournalEntry(f"e{i}", "topup", (Posting("asset:cash", 100 + i, "USD"),
                                                   Posting("liability:lot", -(100 + i), "USD")))
                   for i in range(first, first + n)]
        return [r.entry_id for r in await post_entries(conn, entries)]
    return await db.run(work)


async def _seal_as_0041(conn) -> None:
    """What the sealer of 0041 wrote: version 1 hashes, and no hash_version column to name it."""
    last = (await conn.execute(text("SELECT to_txid::text, chain_hash FROM seals ORDER BY id DESC LIMIT 1"))).first()
    lo, prev = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
    hi = int((await conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))).scalar_one())
    hashes = await hashes_between(conn, lo, hi, version=1)
    ids = sorted(hashes)
    ordered = [hashes[i] for i in ids]
    await conn.execute(text(
        """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash)
           VALUES (CAST(:lo AS xid8), CAST(:hi AS xid8), :ids, :hashes, :prev, :chain)"""),
        {"lo": str(lo), "hi": str(hi), "ids": ids, "hashes": ordered, "prev": prev, "chain": chain(prev, ordered)})


async def _tampered(db, sql: str, entry: int) -> list[str]:
    async with db.engine.connect() as conn:
        await conn.execute(text("SET session_replication_role = replica"))
        await conn.execute(text(sql), {"e": entry})
        problems = await seal_problems(conn)
        await conn.rollback()
    return problems


async def _versions(db) -> list[tuple[int, int]]:
    return await db.read(lambda conn: _rows(conn, "SELECT id, hash_version FROM seals ORDER BY id"))


async def _rows(conn, sql: str) -> list[tuple]:
    return [tuple(r) for r in (await conn.execute(text(sql))).all()]


async def test_a_version_1_seal_verifies_after_the_upgrade_and_versions_survive_down_and_up(scratch_url):
    _migrate(scratch_url, ("downgrade", "0041"))
    db = connect(scratch_url, pool_size=1)
    try:
        old = await _post(db, 0, 3)
        await db.run(_seal_as_0041)
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 1)]
        assert await db.read(seal_problems) == []

        new = await _post(db, 3, 3)
        assert (await db.run(seal_once)).entries == 3
        assert await _versions(db) == [(1, 1), (2, 4)]
        assert await db.read(seal_problems) == []

        moved = "UPDATE journal_entries SET recorded_at = recorded_at - interval '1 day' WHERE id = :e"
        assert await _tampered(db, moved, new[1]) == [f"entry {new[1]} was altered after seal 2"]
        assert await _tampered(db, moved, old[1]) == []  # version 1 never covered recorded_at
        backdated = "UPDATE journal_entries SET occurred_at = occurred_at - interval '1 day' WHERE id = :e"
        assert await _tampered(db, backdated, old[1]) == [f"entry {old[1]} was altered after seal 1"]

        async def relabel(conn):
            await conn.execute(text("UPDATE seals SET hash_version = 1 WHERE id = 2"))
        with pytest.raises(DBAPIError, match="append-only"):
            await db.run(relabel)
        await db.dispose()

        _migrate(scratch_url, ("downgrade", "0041"))
        db = connect(scratch_url, pool_size=1)
        columns = await db.read(lambda conn: _rows(conn, "SELECT column_name FROM information_schema.columns WHERE "
                                                          "table_name = 'seals' AND column_name = 'hash_version'"))
        assert columns == []
        await _post(db, 6, 2)
        await db.run(_seal_as_0041)  # a seal written while at 0041: version 1
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 1), (2, 4), (3, 1)]
        assert await db.read(seal_problems) == []
        left = await db.read(lambda conn: _rows(conn, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'seal%'"))
        assert left == [("seals",)]
    finally:
        await db.dispose()
