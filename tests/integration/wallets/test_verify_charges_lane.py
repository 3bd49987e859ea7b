"""(review of 7ba02e2) `audit verify`'s checks read an entry's postings and metadata in the entry's
lane, as entries_balanced and one_customer_per_entry now do (the export and the seals read an entry
so): entries of two lanes may share an id only by a forger's hand (the entry_ids check names that),
and then one entry's postings are not the other's. The charges check (cdd511a), the credit-notes
check's re-rate entries, the lots check's opening entries and the usage-events check's entries."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from wallet_kit import BOOK, Kit, checked_beside_a_copy

from wallets import books, chart, rerating
from wallets.audit import charges_match_entries, credit_notes_tie_out, lots_match_accounts, usage_events_charged


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

    charge = (await kit.db.read(lambda conn: conn.execute(text(
        "SELECT entry_id, charged FROM charges WHERE customer_id = :c"), {"c": cid}))).one()
    assert charge.charged == 2_000_000_000
    found = await checked_beside_a_copy(kit, cid, charge.entry_id, {chart.cash_account("USD"): 2_000_000_000,
                                                                    chart.revenue_account("USD"): -2_000_000_000},
                                        charges_match_entries)
    assert found.ok, found.problems


async def test_a_copy_of_a_re_rate_entry_s_id_in_another_lane_is_not_read_as_its_revenue(kit: Kit):
    """`lanes` tops up $10.00 and is charged 2,000 input tokens at $1.00 per 1,000 on November 23rd:
    $2.00. Version v2 (from November 1st) prices input at $0.50 per 1,000; November re-rated to it:
    the charge 2,000,000,000 -> 1,000,000,000 units, its adjustment entry debiting usage revenue
    1,000,000,000 (revenue moved -1,000,000,000, as its charge). A forger copies that entry's id into
    another lane with revenue +1,000,000,000 and cash -1,000,000,000. The credit-notes check read
    the entry's revenue by id in every lane: 're-rate entry E: its charges moved -1000000000, its
    true-ups 0, its revenue postings -2000000000', a made-up problem beside entry_ids'. Now it reads
    the adjustment entry in its lane: nothing to name."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    hold = await kit.reserve(cid, "r-1", input_tokens=2000)
    await kit.settle(cid, hold.reservation.id, input_tokens=2000)
    v2 = {**BOOK, "id": kit.book, "version": "v2", "effective_from": "2026-11-01T00:00:00Z",
          "rules": [{**rule, "price": "500"} if rule["token_type"] == "input" else rule for rule in BOOK["rules"]]}
    await kit.db.run(lambda conn: books.add_version(conn, v2))
    done = await rerating.apply(kit.db, kit.service.engine, rerating.RerateSpec(
        kit.book, "v2", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), cid), "lanes-fix")
    [entry_id] = done["customers"][0]["entry_ids"]
    assert done["delta"] == "-1.00"

    found = await checked_beside_a_copy(kit, cid, entry_id, {chart.cash_account("USD"): -1_000_000_000,
                                                             chart.revenue_account("USD"): 1_000_000_000},
                                        credit_notes_tie_out)
    assert found.ok, found.problems


async def test_a_copy_of_a_lot_s_opening_entry_id_in_another_lane_is_not_read_as_its_credit(kit: Kit):
    """`lanes` tops up $10.00: a lot granted 10,000,000,000 units, its opening entry crediting the
    lot's account 10,000,000,000. A forger copies that entry's id into another lane, crediting the
    lot's account another 10,000,000,000 (cash debited as much). The lots check read the opening
    entry's postings by id in every lane: 'lot L: granted 10000000000, but its opening entry
    credited 20000000000', a made-up problem beside entry_ids' and one_customer_per_entry's (the
    forged entry touches another customer's account). Now it reads the lot's entry in the lot's
    lane: nothing to name."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")

    lot = (await kit.db.read(lambda conn: conn.execute(text(
        "SELECT l.entry_id, l.granted, a.code FROM lots l JOIN accounts a ON a.id = l.account_id"
        " WHERE l.customer_id = :c"), {"c": cid}))).one()
    assert lot.granted == 10_000_000_000
    found = await checked_beside_a_copy(kit, cid, lot.entry_id, {chart.cash_account("USD"): 10_000_000_000,
                                                                 lot.code: -10_000_000_000}, lots_match_accounts)
    assert found.ok, found.problems


async def test_a_copy_of_a_usage_event_s_entry_id_in_another_lane_is_not_read_as_its_entry(kit: Kit):
    """`lanes` tops up $10.00 and sends usage event e-1 of 2,000 input tokens ($2.00 at $1.00 per
    1,000), posted in its own entry. A forger copies that entry's id into another lane for a
    customer of that lane (cash +2,000,000,000, revenue -2,000,000,000). The usage-events check read
    the event's entry by id in every lane: 'usage event e-1 of customer lanes-… is posted in entry E
    of customer oN', a made-up problem beside entry_ids'. Now it reads the entry in the event's
    lane: nothing to name."""
    cid = await kit.customer("lanes")
    await kit.top_up(cid, "10.00")
    await kit.usage_event(cid, "e-1", input_tokens=2000)

    entry_id = await kit.db.read(lambda conn: conn.scalar(text(
        "SELECT entry_id FROM usage_events WHERE customer_id = :c"), {"c": cid}))
    found = await checked_beside_a_copy(kit, cid, entry_id, {chart.cash_account("USD"): 2_000_000_000,
                                                             chart.revenue_account("USD"): -2_000_000_000},
                                        usage_events_charged)
    assert found.ok, found.problems
