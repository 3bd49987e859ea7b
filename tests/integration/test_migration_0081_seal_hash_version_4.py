"""Migration 0081: hash version 4 chains a seal's sealed_at. A version 3 seal written at 0080
still verifies after the upgrade, and still does not vouch for its date; new seals are version 4
and name a moved sealed_at; down to 0080 and up again, every seal keeps its version (the downgrade
keeps the 4s aside for the upgrade), and down to base and up again works with them."""
from __future__ import annotations

from sqlalchemy import text

from ledger.chain import GENESIS, chain
from ledger.db import connect
from ledger.seal import hashes_between, seal_once, seal_problems
from tests.integration.test_migration_0042_seal_hash_versions import _migrate, _post, _rows, _versions


async def _seal_as_0080(conn) -> None:
    """What the sealer of 0080 wrote: version 3 hashes, the chain without sealed_at (its now())."""
    last = (await conn.execute(text("SELECT to_txid::text, chain_hash FROM seals ORDER BY id DESC LIMIT 1"))).first()
    lo, prev = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
    hi = int((await conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))).scalar_one())
    hashes = await hashes_between(conn, lo, hi, version=3)
    ids = sorted(hashes)
    ordered = [hashes[i] for i in ids]
    await conn.execute(text(
        """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash, hash_version)
           VALUES (CAST(:lo AS xid8), CAST(:hi AS xid8), :ids, :hashes, :prev, :chain, 3)"""),
        {"lo": str(lo), "hi": str(hi), "ids": ids, "hashes": ordered, "prev": prev, "chain": chain(prev, ordered)})


async def _redated(db, seal_id: int) -> list[str]:
    """seal_problems with the seal's sealed_at moved a day on (triggers off), rolled back."""
    async with db.engine.connect() as conn:
        await conn.execute(text("SET session_replication_role = replica"))
        await conn.execute(text("UPDATE seals SET sealed_at = sealed_at + interval '1 day' WHERE id = :s"),
                           {"s": seal_id})
        problems = await seal_problems(conn)
        await conn.rollback()
    return problems


async def test_a_version_3_seal_verifies_after_the_upgrade_and_versions_survive_down_and_up(scratch_url):
    _migrate(scratch_url, ("downgrade", "0080"))
    db = connect(scratch_url, pool_size=1)
    try:
        await _post(db, 0, 3)
        await db.run(_seal_as_0080)
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 3)]
        assert await db.read(seal_problems) == []
        assert await _redated(db, 1) == []  # version 3 never covered the date

        await _post(db, 3, 3)
        assert (await db.run(seal_once)).entries == 3
        assert await _versions(db) == [(1, 3), (2, 4)]
        assert await db.read(seal_problems) == []
        assert await _redated(db, 2) == ["seal 2 chain hash does not match its entry hashes and sealed_at"]
        await db.dispose()

        _migrate(scratch_url, ("downgrade", "0080"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 3), (2, 3)]  # seal 2 kept aside, as 4
        await _post(db, 6, 2)
        await db.run(_seal_as_0080)  # a seal written while at 0080: version 3
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 3), (2, 4), (3, 3)]
        assert await db.read(seal_problems) == []
        left = await db.read(lambda conn: _rows(conn, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'seal%'"))
        assert left == [("seals",)]
        await db.dispose()

        _migrate(scratch_url, ("downgrade", "base"), ("upgrade", "head"))  # with seals of 3 and 4
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == []
    finally:
        await db.dispose()
