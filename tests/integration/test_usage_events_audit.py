"""The audit pairs each usage event with its own customer's charge and entry (event ids are per
customer), and names an event that has none or that sits in another customer's entry."""
from __future__ import annotations

from sqlalchemy import text

from ledger.db import connect
from wallets.audit import usage_events_charged

EVENT = """INSERT INTO usage_events (lane, event_id, customer_id, request_hash, model, occurred_at, usage, entry_id)
           VALUES (:lane, :e, :c, '\\x01', 'model-a', now(), '{}', :entry)"""
CHARGE = """INSERT INTO charges (lane, customer_id, event_id, request_id, final, request_hash, model, occurred_at,
                                 usage, price_book, price_version, lines, charged, from_hold, from_lots,
                                 from_receivable, entry_id)
            VALUES (:lane, :c, :e, :e, true, '\\x01', 'model-a', now(), '{}', 'book', 'v1', '[]', 0, 0, 0, 0, :entry)"""
ENTRY = """INSERT INTO journal_entries (lane, key, request_hash, kind, customer_id, occurred_at)
           VALUES (ledger_entry_lane(:c), :k, '\\x01', 'usage', :c, now()) RETURNING lane, id"""


async def test_the_usage_event_check_names_events_without_their_own_customers_charge(scratch_url):
    db = connect(scratch_url, pool_size=2)
    try:
        async with db.engine.connect() as conn:
            await conn.execute(text("INSERT INTO assets (code, scale) VALUES ('USD', 9) ON CONFLICT DO NOTHING"))
            await conn.execute(text("INSERT INTO customers (id, currency) VALUES ('ua', 'USD'), ('ub', 'USD')"))
            assert (await usage_events_charged(conn)).ok
            # the same id for both customers, each with its own charge: fine
            for customer in ("ua", "ub"):
                await conn.execute(text(EVENT), {"lane": 0, "e": "same", "c": customer, "entry": None})
                await conn.execute(text(CHARGE), {"lane": 0, "e": "same", "c": customer, "entry": None})
            assert (await usage_events_charged(conn)).ok
            # an event without a charge, and one posted in the other customer's entry (that entry
            # has no postings, but nothing is committed: the check at commit never runs)
            await conn.execute(text(EVENT), {"lane": 0, "e": "lonely", "c": "ua", "entry": None})
            lane_b, entry_b = (await conn.execute(text(ENTRY), {"k": "usage-event:ub:x", "c": "ub"})).one()
            await conn.execute(text(EVENT), {"lane": lane_b, "e": "astray", "c": "ua", "entry": entry_b})
            await conn.execute(text(CHARGE), {"lane": lane_b, "e": "astray", "c": "ua", "entry": entry_b})
            check = await usage_events_charged(conn)
            await conn.rollback()
        assert not check.ok
        assert sorted(check.problems) == [
            f"usage event astray of customer ua is posted in entry {entry_b} of customer ub",
            "usage event lonely of customer ua has no charge"]
    finally:
        await db.dispose()
