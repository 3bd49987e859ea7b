"""Migration 0080: `ledger_settings.instant_hashes_since`, the time the upgrade ran. A usage batch
key (or usage event) created before it may hold the hash of its times as sent and is searched
among its body's respellings on a conflict; one created after it is not. Down to 0079 and up
again, the setting is the later upgrade's time: every record kept before it counts as older."""
from __future__ import annotations

from sqlalchemy import text

from ledger.db import connect
from tests.integration.test_migration_0042_seal_hash_versions import _migrate
from wallets import store


async def _keep(url: str, key: str) -> None:
    db = connect(url, pool_size=1)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO idempotency_keys (scope, key, request_hash, status, response) "
                                    "VALUES ('usage-test', :key, '\\x01', 200, '{}')"), {"key": key})
    finally:
        await db.dispose()


async def _kept(url: str, *keys: str) -> list[tuple[bytes, bool] | None]:
    db = connect(url, pool_size=1)
    try:
        return [await db.read(lambda conn, k=k: store.kept_key(conn, "usage-test", k)) for k in keys]
    finally:
        await db.dispose()


async def test_a_key_kept_before_the_upgrade_is_older_and_one_kept_after_is_not(scratch_url):
    _migrate(scratch_url, ("downgrade", "0079"))
    await _keep(scratch_url, "before")
    _migrate(scratch_url, ("upgrade", "head"))
    await _keep(scratch_url, "after")
    assert await _kept(scratch_url, "before", "after", "none") == [(b"\x01", True), (b"\x01", False), None]
    # down and up again: the later upgrade's time, so "after" (kept before it) counts as older too
    _migrate(scratch_url, ("downgrade", "0079"), ("upgrade", "head"))
    assert await _kept(scratch_url, "before", "after") == [(b"\x01", True), (b"\x01", True)]
