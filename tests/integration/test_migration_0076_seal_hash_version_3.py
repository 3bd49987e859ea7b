"""Migration 0076: hash version 3 covers each posting's asset. A version 2 seal written at 0075
still verifies after the upgrade, and still does not vouch for the currency; new seals are version
3 (4 since 0081, which hashes entries as 3 does) and name an entry whose account was relabelled to
another currency; down to 0075 and up again,
every seal keeps its version (the downgrade keeps the 3s aside for the upgrade)."""
from __future__ import annotations

from sqlalchemy import text

from ledger.chain import GENESIS, chain
from ledger.db import connect
from ledger.seal import hashes_between, seal_once, seal_problems
from tests.integration.test_migration_0042_seal_hash_versions import _migrate, _post, _rows, _versions


async def _seal_as_0075(conn) -> None:
    """What the sealer of 0075 wrote: version 2 hashes, named so."""
    last = (await conn.execute(text("SELECT to_txid::text, chain_hash FROM seals ORDER BY id DESC LIMIT 1"))).first()
    lo, prev = (int(last[0]), bytes(last[1])) if last else (0, GENESIS)
    hi = int((await conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))).scalar_one())
    hashes = await hashes_between(conn, lo, hi, version=2)
    ids = sorted(hashes)
    ordered = [hashes[i] for i in ids]
    await conn.execute(text(
        """INSERT INTO seals (from_txid, to_txid, entry_ids, entry_hashes, prev_hash, chain_hash, hash_version)
           VALUES (CAST(:lo AS xid8), CAST(:hi AS xid8), :ids, :hashes, :prev, :chain, 2)"""),
        {"lo": str(lo), "hi": str(hi), "ids": ids, "hashes": ordered, "prev": prev, "chain": chain(prev, ordered)})


async def _relabelled(db) -> list[str]:
    """seal_problems with every USD account made EUR (triggers off), rolled back."""
    async with db.engine.connect() as conn:
        await conn.execute(text("INSERT INTO assets (code, scale) VALUES ('EUR', 9) ON CONFLICT DO NOTHING"))
        await conn.execute(text("SET session_replication_role = replica"))
        await conn.execute(text("UPDATE accounts SET asset = 'EUR' WHERE asset = 'USD'"))
        problems = await seal_problems(conn)
        await conn.rollback()
    return problems


async def test_a_version_2_seal_verifies_after_the_upgrade_and_versions_survive_down_and_up(scratch_url):
    _migrate(scratch_url, ("downgrade", "0075"))
    db = connect(scratch_url, pool_size=1)
    try:
        await _post(db, 0, 3)
        await db.run(_seal_as_0075)
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 2)]
        assert await db.read(seal_problems) == []

        new = await _post(db, 3, 3)
        assert (await db.run(seal_once)).entries == 3
        assert await _versions(db) == [(1, 2), (2, 4)]
        assert await db.read(seal_problems) == []
        # the three entries of the seal the sealer writes now (version 4, hashing entries as 3) are
        # named; version 2 never covered the currency
        assert await _relabelled(db) == [f"entry {e} was altered after seal 2" for e in new]
        await db.dispose()

        _migrate(scratch_url, ("downgrade", "0075"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 2), (2, 2)]  # seal 2 kept aside, as 3
        await _post(db, 6, 2)
        await db.run(_seal_as_0075)  # a seal written while at 0075: version 2
        await db.dispose()
        _migrate(scratch_url, ("upgrade", "head"))
        db = connect(scratch_url, pool_size=1)
        assert await _versions(db) == [(1, 2), (2, 4), (3, 2)]
        assert await db.read(seal_problems) == []
        left = await db.read(lambda conn: _rows(conn, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'seal%'"))
        assert left == [("seals",)]
    finally:
        await db.dispose()
