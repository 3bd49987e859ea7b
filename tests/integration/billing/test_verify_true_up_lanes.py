"""`audit verify`'s credit-notes check reads what re-rates corrected of a close's volume true-up
(their entries' `true_ups`) and a close's versions' lines (its entry's `versions`) in the true-up
record's lane: an entry of the customer in another lane is a forger's (superuser, triggers off,
the lane check dropped; entry_ids names its shared id), no correction or line of the customer's."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from test_rerate_volume_true_up import CLOSED, applied, november_usage, spec, vol, vol_customer
from test_volume_true_up_two_volume_versions import _closed, _november

from ledger.audit import Check
from ledger.lanes import lane_count, lane_of
from wallets.audit import credit_notes_tie_out


async def _beside_a_copy_in_another_lane(bk: BillingKit, cid: str, entry_id: int) -> Check:
    """What the credit-notes check finds once a forger copied `cid`'s entry `entry_id` (same id,
    kind, customer and metadata) into the next lane (rolled back after)."""
    async def forged(conn: AsyncConnection) -> Check:
        lanes = await lane_count(conn)
        own = lane_of(cid, lanes)
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_lane_of_customer"))
        await conn.execute(text("""
            INSERT INTO journal_entries (lane, id, key, request_hash, kind, customer_id, occurred_at, recorded_at,
                                         metadata, txid)
            SELECT :lane, id, 'forged', request_hash, kind, customer_id, occurred_at, recorded_at, metadata, txid
              FROM journal_entries WHERE lane = :own AND id = :id"""),
                           {"lane": (own + 1) % lanes, "own": own, "id": entry_id})
        found = await credit_notes_tie_out(conn)
        await conn.rollback()
        return found

    return await bk.db.read(forged)


async def test_a_copy_of_a_re_rate_s_entry_in_another_lane_is_not_read_as_its_correction(fresh_db) -> None:
    """Book `vol` v1: model-v output $20/M up to 100,000 tokens, $10/M beyond; postpaid, 60,000 on
    November 5th ($1.20) and 70,000 on the 20th (40,000 x $20/M + 30,000 x $10/M = $1.10). The close:
    130,000 at $10/M = $1.30, true-up -$1.00, given back of the two charges. v2 (from November 1st)
    $20/M, $5/M beyond: the 20th's 40,000 x $20/M + 30,000 x $5/M = $0.95 (-$0.15; the 5th's $1.20
    unchanged), the true-up 130,000 x $5/M = $0.65 less $2.15 = -$1.50 where -$1.00 stands (-$0.50):
    the re-rate moves -$0.65, its entry correcting the true-up by 0.50 given back. A forger copies
    that entry into another lane, same customer: the check read the corrections by customer in
    every lane, 1.00 where 0.50, so the close's line stood at -(-1.50 + 1.00) = 0.50 given back:
    'true-up record of the close of customer volume, 2026-11 rule v-out: gave back 1000000000 of its
    charges, its true-up line 500000000'. Now in the record's lane: nothing to name."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "volume", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "20", "5"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.65"
    assert [(ln["token_type"], ln["delta"]) for ln in done["customers"][0]["lines"]] == [
        ("output", "-0.15"), ("volume_true_up", "-0.50")]
    [entry_id] = done["customers"][0]["entry_ids"]

    found = await _beside_a_copy_in_another_lane(bk, cid, entry_id)
    assert found.ok, found.problems


async def test_a_copy_of_a_close_s_entry_in_another_lane_is_not_read_as_its_versions_lines(bk: BillingKit) -> None:
    """A rule two versions tier (test_volume_true_up_two_volume_versions): v1 600,000 on the 5th
    ($6.00), v2 600,000 on the 20th ($3.30); the close's true-up -$8.40, its entry keeping v1's line
    -$5.40 and v2's -$3.00. A forger copies that entry into another lane, same customer: the check
    read the versions' lines by customer in every lane, twice: 'its versions' lines give back
    16800000000, its true-up line 8400000000' (and each charge's row against a line twice). Now in
    the record's lane: nothing to name."""
    cid = "two-volume-lines"
    await _november(bk, cid, [(5, 600_000), (20, 600_000)])
    _, november = await _closed(bk, cid)
    assert november["subtotals"]["true_ups"] == "-8.40"
    entry_id = await bk.db.read(lambda conn: conn.scalar(text(
        "SELECT id FROM journal_entries WHERE kind = 'volume_true_up' AND customer_id = :c"), {"c": cid}))

    found = await _beside_a_copy_in_another_lane(bk, cid, entry_id)
    assert found.ok, found.problems
