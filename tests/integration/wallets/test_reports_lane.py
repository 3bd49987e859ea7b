"""Reports read a customer's entries, their postings and its charges' adjustments in its lane: an
entry id (and a charge id) is unique within its lane alone, so a forged copy of one in another
lane (superuser, triggers off; verify's entry_ids names a shared entry id) is no part of a
reservation's view or a request's trace."""
from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from wallet_kit import Kit, forge_adjustment, forge_copy

from wallets import chart, reports

# 2,000 input tokens at $1.00 per 1,000: $2.00, moved to usage revenue (a credit: -2.00)
FORGED = {chart.cash_account("USD"): 2_000_000_000, chart.revenue_account("USD"): -2_000_000_000}


def _postings(entry: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["account"], p["amount"]) for p in entry["postings"]]


async def test_a_reservation_s_view_reads_its_settle_entry_s_postings_in_its_lane(kit: Kit):
    """`lanes` tops up $10.00, reserves 2,000 input tokens ($2.00 at $1.00 per 1,000) and settles
    them: the settle entry moves $2.00 from the reserved account (debit +2.00) to usage revenue
    (credit -2.00). A forger copies that entry's id into another lane (cash +2.00, revenue -2.00).
    The view read the settle entry's postings by entry id in every lane: four postings, the copy's
    two among them. Now in the entry's lane: its own two."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)
    entry_id = await kit.db.read(lambda conn: conn.scalar(text(
        "SELECT entry_id FROM charges WHERE customer_id = :c"), {"c": cid}))

    async def forged(conn: AsyncConnection) -> dict[str, Any]:
        await forge_copy(conn, cid, entry_id, FORGED)
        view = await reports.reservation(conn, hold.reservation.id)
        await conn.rollback()
        return view

    view = await kit.db.read(forged)
    [settle] = [e for e in view["entries"] if e["id"] == entry_id]
    assert settle["kind"] == "settle"
    assert sorted(_postings(settle)) == [(chart.revenue_account("USD"), "-2.00"),
                                         (chart.reserved_account(cid), "2.00")]


async def test_a_usage_event_s_trace_reads_its_entry_in_its_lane(kit: Kit):
    """`lanes` tops up $10.00 and sends usage event e-1 of 2,000 input tokens ($2.00), posted in
    one entry: its lot debited 2.00, usage revenue credited 2.00. A forger copies that entry's id
    into another lane (cash +2.00, revenue -2.00). The trace read the event's entry by id in every
    lane: two entries of that id (the forged one, key 'forged', among them), the real one with
    four postings. Now one entry, its own two postings."""
    cid = await kit.customer("lanes")
    top_up = await kit.top_up(cid, "10.00")
    await kit.usage_event(cid, "e-1", input_tokens=2000)
    entry_id = await kit.db.read(lambda conn: conn.scalar(text(
        "SELECT entry_id FROM usage_events WHERE customer_id = :c"), {"c": cid}))

    async def forged(conn: AsyncConnection) -> dict[str, Any]:
        await forge_copy(conn, cid, entry_id, FORGED)
        trace = await reports.charge_trace(conn, "e-1", [cid])
        await conn.rollback()
        return trace

    trace = await kit.db.read(forged)
    assert [(e["id"], e["key"] != "forged") for e in trace["entries"]] == [(entry_id, True)]
    assert sorted(_postings(trace["entries"][0])) == [
        (chart.revenue_account("USD"), "-2.00"), (chart.lot_account(cid, top_up.grant.id), "2.00")]


async def test_a_charge_s_adjustments_are_read_in_its_lane(kit: Kit):
    """`lanes` is charged 2,000 input tokens ($2.00) and never re-rated: its charge has no
    adjustment. A forger inserts into another lane an adjustment of that charge id ($2.00 ->
    $1.00, for a customer of that lane). The view read a charge's adjustments by charge id in
    every lane: the forged one as the charge's. Now in the charge's lane: none."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)

    async def forged(conn: AsyncConnection) -> dict[str, Any]:
        await forge_adjustment(conn, cid)
        view = await reports.reservation(conn, hold.reservation.id)
        await conn.rollback()
        return view

    view = await kit.db.read(forged)
    [charge] = view["charges"]
    assert charge["charged"] == "2.00"
    assert charge["adjustments"] == []
