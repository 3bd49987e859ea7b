"""The consumption order of lots as loaded from PostgreSQL, whatever the session's time zone."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from wallet_kit import Kit, usd

from ledger.db import connect


async def test_lots_loaded_in_a_non_utc_session_are_consumed_by_earliest_expiry_across_a_dst_change(
        scratch_url: str, tag: str):
    # The database's default time zone is Los Angeles: loaded expiries carry -07:00 before its
    # 2027-11-07 fall-back and -08:00 after it, so their wall-clock times are out of order.
    setup = connect(scratch_url, pool_size=1)
    await setup.run(lambda conn: conn.execute(text(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), "
        "'America/Los_Angeles'); END $$")))
    await setup.dispose()
    db = connect(scratch_url, pool_size=2)
    try:
        kit = Kit(db, tag)
        await kit.setup_book()
        acme = await kit.customer("acme")
        await kit.grant(acme, "1.00", name="sooner", expires_at=datetime(2027, 11, 7, 8, 50, tzinfo=UTC))  # 01:50 PDT
        await kit.grant(acme, "1.00", name="later", expires_at=datetime(2027, 11, 7, 9, 10, tzinfo=UTC))  # 01:10 PST
        await kit.reserve(acme, "req-1", amount="1.00")
        balances = await kit.balances(acme, platform=False)
        assert (balances["sooner"], balances["later"]) == (0, usd("1.00"))
    finally:
        await db.dispose()
