"""(review of 7ba02e2) `audit verify`'s charges check reads a charge's entry's revenue postings in
the entry's lane, as entries_balanced and one_customer_per_entry now do (the export and the seals
read an entry so): entries of two lanes may share an id only by a forger's hand (the entry_ids
check names that), and then one entry's postings are not the other's."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit

from ledger.lanes import lane_count, lane_of
from wallets import chart
from wallets.audit import charges_match_entries


async def test_a_copy_of_a_charge_s_entry_id_in_another_lane_is_not_read_as_its_revenue(kit: Kit):
    """`lanes` tops up $10.00 and is charged 2,000 input tokens at $1.00 per 1,000: $2.00, its
    entry crediting usage revenue 2,000,000,000 units. A forger (triggers off) inserts into another
    lane an entry of that id for a customer of that lane, balanced on its own (cash +2,000,000,000,
    revenue -2,000,000,000). The charges check read the charge's revenue by entry id in every lane:
    'charge N (r-1) charged 2000000000, but entry E credited usage revenue 4000000000', a made-up
    problem beside entry_ids' (the charge's own entry credited 2,000,000,000, as charged). Now it
    reads the charge's entry in the charge's lane: nothing to name."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)

    async def forged(conn: AsyncConnection) -> Any:
        lanes = await lane_count(conn)
        other = next(f"o{i}" for i in range(1000) if lane_of(f"o{i}", lanes) != lane_of(cid, lanes))
        charge = (await conn.execute(text("SELECT lane, entry_id, charged FROM charges WHERE customer_id = :c"),
                                     {"c": cid})).one()
        assert charge.charged == 2_000_000_000
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("""
            INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at, recorded_at,
                                         metadata, txid)
            SELECT :lane, id, 'forged', request_hash, kind, :other, occurred_at, recorded_at, metadata, txid
              FROM journal_entries WHERE lane = :own AND id = :id"""),
                           {"lane": lane_of(other, lanes), "other": other, "own": charge.lane, "id": charge.entry_id})
        await conn.execute(text("""
            INSERT INTO postings (lane, entry_id, account_id, amount)
            SELECT :lane, :id, a.id, x.amount FROM accounts a
              JOIN (VALUES (:cash, 2000000000), (:revenue, -2000000000)) x (code, amount) ON x.code = a.code"""),
                           {"lane": lane_of(other, lanes), "id": charge.entry_id, "cash": chart.cash_account("USD"),
                            "revenue": chart.revenue_account("USD")})
        found = await charges_match_entries(conn)
        await conn.rollback()
        return found

    found = await kit.db.read(forged)
    assert found.ok, found.problems
