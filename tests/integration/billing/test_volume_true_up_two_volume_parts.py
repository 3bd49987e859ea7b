"""A rule two versions tier by volume in one period: the close records what it gave back of each
charge (true_up_charges, as a one-version rule's), each charge's overcharge at its own version's
price of the tier reached, and its entry keeps each version's line (`versions`), which verify ties
each charge's part to; so a re-rate after the close corrects each charge's part and gives (or takes)
each payer its own share, not the rule's correction shared over its payers, the last consumed first.

The book of test_volume_true_up_two_volume_versions: model-x input `in`, v1 (from January) $10/M to
1,000,000 tokens and $1/M beyond, v2 (from November 15th) $8/M to 1,000,000 and $0.50/M beyond; the
5th 3,000,000 tokens under v1 ($12.00), the 20th 1,000,000 under v2, rated on from the 3,000,000 so
far ($0.50). The close: v1's 3,000,000 at $1/M = $3.00 less $12.00, -$9.00, all the 5th's; v2's
1,000,000 at $0.50/M less $0.50, 0 (no line)."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _damaged
from test_volume_true_up_two_volume_versions import (
    CENT,
    EXAMPLE,
    POSTPAID_GRANT,
    _closed,
    _november,
    _remaining,
    _shown,
    _v2_tiers,
    _verified,
)
from test_volume_true_up_versions_more import NOV_1, NOV_15, _flat, _version, _volume

from wallets import rerating

DEC_1, DEC_2 = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
V2B_FROM = datetime(2026, 11, 15, 0, 0, 1, tzinfo=UTC)  # v2b: from just after v2 (a version's instant is its own)


async def _given(bk: BillingKit, cid: str, rerate: str | None = None) -> list[tuple[str, int, int]]:
    """What true_up_charges keeps of the customer's close (`rerate` None) or of a re-rate: (rule, charge, units)."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        """SELECT rule_id, charge_id, units FROM true_up_charges
            WHERE customer_id = :c AND rerate_id IS NOT DISTINCT FROM :r ORDER BY rule_id, charge_id"""),
        {"c": cid, "r": rerate}))
    return [(rule, charge, int(units)) for rule, charge, units in rows]


async def _charges(bk: BillingKit, cid: str) -> list[int]:
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id FROM charges WHERE customer_id = :c ORDER BY id"), {"c": cid}))
    return list(rows.scalars())


async def _close_metadata(bk: BillingKit, cid: str) -> dict[str, Any]:
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT metadata FROM journal_entries WHERE key = :k"), {"k": f"true-up:{cid}:2026-11"}))
    return rows.scalar_one()


async def _rerate(bk: BillingKit, cid: str, label: str, since: datetime, until: datetime, rule: dict) -> dict:
    """December 2nd: version `label` of the customer's book (`rule` alone, from `since`), and
    `since`-`until` re-rated to it."""
    bk.clock.now = DEC_2
    await bk.add_book(_version(cid, label, since.isoformat().replace("+00:00", "Z"), [rule]))
    return await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec(cid, label, since, until, cid), None)


async def _top_up_then_grant(bk: BillingKit, cid: str) -> list[str]:
    """Prepaid, the payers the other way round: a $12.00 top-up (November 1st) pays the 5th's $12.00
    and is spent; a $5.00 grant (the 6th; grants are consumed before top-ups) pays the 20th's $0.50
    ($4.50 left). The close gives the 5th's $9.00 to the top-up: top-up $9.00, grant $4.50."""
    lots = await _november(bk, cid, [(1, "topup", "12.00"), (5, 3_000_000), (6, "grant", "5.00"), (20, 1_000_000)],
                           "prepaid")
    await _closed(bk, cid)
    assert await _remaining(bk, cid, *lots) == (900 * CENT, 450 * CENT)
    return lots


async def test_the_close_records_each_charge_s_part_at_its_version_s_price_and_verify_ties_it(bk: BillingKit) -> None:
    """Postpaid, 600,000 tokens on the 5th under v1 ($6.00) and 600,000 on the 20th under v2 from
    600,000 so far (400,000 x $8/M + 200,000 x $0.50/M = $3.30); 1,200,000 reach the second tier.
    v1's line: 600,000 x $1/M = $0.60 less $6.00, -$5.40; v2's 600,000 x $0.50/M = $0.30 less $3.30,
    -$3.00. The 5th's overcharge at v1's $1/M: $6.00 - $0.60 = $5.40 (v1's line left $5.40); the
    20th's at v2's $0.50/M: $3.30 - $0.30 = $3.00 (v2's line left $3.00). The record: the 5th
    5,400,000,000, the 20th 3,000,000,000; the entry's `versions`: [in, v1, 1, -5,400,000,000], [in,
    v2, 0.5, -3,000,000,000] (before: no record). Damage by hand, rolled back: $0.10 moved from the
    5th's row to the 20th's (the same $8.40 in all, so the per-rule checks pass it) is named on each,
    against its own version's line; v1's kept line -$5.50 is named against the rule's -$8.40."""
    cid = "two-volume-record"
    await _november(bk, cid, [(5, 600_000), (20, 600_000)])
    _, november = await _closed(bk, cid)
    assert _shown(november) == ("-8.40", "0.90")
    fifth, twentieth = await _charges(bk, cid)
    assert await _given(bk, cid) == [("in", fifth, 540 * CENT), ("in", twentieth, 300 * CENT)]
    assert (await _close_metadata(bk, cid))["versions"] == [["in", "v1", "1", -540 * CENT],
                                                            ["in", "v2", "0.5", -300 * CENT]]
    params = {"c": cid, "fifth": fifth, "twentieth": twentieth, "k": f"true-up:{cid}:2026-11"}
    close = "customer_id = :c AND rerate_id IS NULL"
    record = f"true-up record of the close of customer {cid}, 2026-11 rule in"
    left = "where its overcharge at the tier reached (up to what the line's"
    assert await _damaged(bk, params,
                          f"UPDATE true_up_charges SET units = units - 100000000 WHERE {close} AND charge_id = :fifth",
                          f"UPDATE true_up_charges SET units = units + 100000000 WHERE {close} "
                          "AND charge_id = :twentieth") == [
        "credit_notes", f"{record}: charge {fifth} gave back 5300000000 {left} 5400000000 left) is 5400000000",
        f"{record}: charge {twentieth} gave back 3100000000 {left} 3000000000 left) is 3000000000"]
    damaged = await _damaged(bk, params, "UPDATE journal_entries SET metadata = jsonb_set(metadata, "
                             "'{versions,0,3}', '-5500000000') WHERE key = :k")
    assert f"{record}: its versions' lines give back 8500000000, its true-up line 8400000000" in damaged, damaged


async def test_a_dearer_re_rate_after_the_close_takes_back_of_the_5th_from_its_own_payer(bk: BillingKit) -> None:
    """Top-up $9.00, grant $4.50 after the close (_top_up_then_grant). v1c ($2/M beyond) and November
    1st-15th re-rated to it: the 5th 1,000,000 x $10/M + 2,000,000 x $2/M = $14.00 (+$2.00); the
    true-up -$9.00 -> 3,000,000 x $2/M = $6.00 less $14.00 = -$8.00, +$1.00: the 5th's overcharge at
    $2/M, $8.00, less the $9.00 the close gave it, -$1.00, taken back from the top-up that got it
    ($9.00 -> $8.00); the 5th's +$2.00 is paid like usage, the grant first ($4.50 -> $2.50); +$3.00
    in all. Before (no part kept) all $3.00 was paid like usage: grant $1.50, top-up $9.00."""
    cid = "two-volume-dearer-own-payer"
    top_up, grant = await _top_up_then_grant(bk, cid)
    done = await _rerate(bk, cid, "v1c", NOV_1, NOV_15, _volume("2"))
    assert done["delta"] == "3.00"
    assert await _remaining(bk, cid, top_up, grant) == (800 * CENT, 250 * CENT)
    fifth, _ = await _charges(bk, cid)
    assert await _given(bk, cid, done["rerate_id"]) == [("in", fifth, -100 * CENT)]
    await _verified(bk)


async def test_a_re_rate_of_the_20th_alone_after_the_close_gives_its_part_to_its_own_payer(bk: BillingKit) -> None:
    """Top-up $9.00, grant $4.50 after the close (_top_up_then_grant). v2b (from just after v2): $8/M
    to 1,000,000, $0.50/M to 3,500,000, $0.25/M beyond; the 20th (v2's window) re-rated to it, on
    from the 3,000,000 so far: 500,000 x $0.50/M + 500,000 x $0.25/M = $0.375 (-$0.125). The true-up:
    v1's line stays -$9.00 (4,000,000 still reach its $1/M); v2b's 1,000,000 at its tier reached,
    $0.25/M, $0.25 less $0.375 = -$0.125 where v2's was 0: -$0.125 more, all the 20th's (its
    overcharge at $0.25/M, $0.125; the 5th's at $1/M, $9.00, the close gave it already): to the grant
    that paid it, with the 20th's own -$0.125: -$0.25, the grant $4.75, the top-up $9.00. Before, the
    true-up's -$0.125 was shared over the rule's payers, the last consumed first: the top-up
    ($9.125, $4.625)."""
    cid = "two-volume-twentieth"
    top_up, grant = await _top_up_then_grant(bk, cid)
    v2b = {**_v2_tiers(), "tiers": [{"up_to": 1_000_000, "price": "8"}, {"up_to": 3_500_000, "price": "0.5"},
                                    {"up_to": None, "price": "0.25"}]}
    done = await _rerate(bk, cid, "v2b", V2B_FROM, DEC_1, v2b)
    assert done["delta"] == "-0.25"
    assert await _remaining(bk, cid, top_up, grant) == (900 * CENT, 475 * CENT)
    _, twentieth = await _charges(bk, cid)
    assert await _given(bk, cid, done["rerate_id"]) == [("in", twentieth, 125_000_000)]
    await _verified(bk)


async def test_a_re_rate_after_the_close_takes_the_5th_s_part_off_what_a_postpaid_customer_owes(
        bk: BillingKit) -> None:
    """Postpaid: the 5th's $12.00 on the receivable; a $5.00 grant (the 6th) pays the 20th's $0.50
    ($4.50 left); the close's -$9.00 off what is owed, $3.00. v1b ($0.25/M beyond), November 1st-15th
    re-rated to it: the 5th $10.50 (-$1.50); the true-up -$9.00 -> v1b's 3,000,000 at $0.25/M = $0.75
    less $10.50, -$9.75, -$0.75, the 5th's part (its overcharge $9.75 less the close's $9.00): both
    off what is owed, $3.00 - $2.25 = $0.75; the grant keeps $4.50 (a guard: the receivable came first
    when shared too)."""
    cid = "two-volume-postpaid-rerated"
    [grant] = await _november(bk, cid, POSTPAID_GRANT)
    await _closed(bk, cid)
    assert ((await bk.service.wallet(cid)).receivable, await _remaining(bk, cid, grant)) == (300 * CENT, (450 * CENT,))
    done = await _rerate(bk, cid, "v1b", NOV_1, NOV_15, _volume("0.25"))
    assert done["delta"] == "-2.25"
    assert ((await bk.service.wallet(cid)).receivable, await _remaining(bk, cid, grant)) == (75 * CENT, (450 * CENT,))
    fifth, _ = await _charges(bk, cid)
    assert await _given(bk, cid, done["rerate_id"]) == [("in", fifth, 75 * CENT)]
    await _verified(bk)


async def _discounted(bk: BillingKit, cid: str) -> list[str]:
    """Prepaid, a 50 % discount on model-x (November 1st): a $6.00 grant pays the 5th's $12.00 less
    $6.00; a $5.00 top-up (the 6th) the 20th's $0.50 less $0.25 ($4.75 left). Closed: v1's line
    -$9.00 and its discount's share +$4.50 (3,000,000 x $1/M x 50 % = $1.50 off where $6.00 was
    taken), v2's 0: -$4.50."""
    lots = await _november(bk, cid, [(1, "grant", "6.00"), (5, 3_000_000), (6, "topup", "5.00"), (20, 1_000_000)],
                           "prepaid", discount=True)
    assert await _remaining(bk, cid, *lots) == (0, 475 * CENT)
    _, november = await _closed(bk, cid)
    assert _shown(november) == ("-4.50", "1.75")
    return lots


async def test_a_re_rate_after_the_close_of_a_discounted_rule_gives_the_5th_s_part_to_its_payer(
        bk: BillingKit) -> None:
    """Closed as _discounted. v1b ($0.25/M beyond), November 1st-15th re-rated to it: the 5th
    $10.50 less its half, $5.25 (-$0.75); the rule's line -$9.00 -> -$9.75 (v1b's 3,000,000 at
    $0.25/M less $10.50; a discount's share of the true-up stays as the close made it): -$0.75, the
    5th's part (its overcharge $9.75 less the $9.00 the close gave it); -$1.50, all of it the 5th's:
    the grant that paid it gets $1.50 more, the top-up nothing more (a guard: its record was the
    5th's $9.00 alone before too, and the money the same)."""
    cid = "two-volume-discounted-rerated"
    grant, top_up = await _discounted(bk, cid)
    closed = await _remaining(bk, cid, grant, top_up)
    done = await _rerate(bk, cid, "v1b", NOV_1, NOV_15, _volume("0.25"))
    assert done["delta"] == "-1.50"
    assert await _remaining(bk, cid, grant, top_up) == (closed[0] + 150 * CENT, closed[1])
    await _verified(bk)


async def test_a_discounted_rule_s_close_gives_the_5th_s_payer_all_its_overcharge(bk: BillingKit) -> None:
    """Closed as _discounted: the -$4.50 is all the 5th's (after its discount it cost $6.00 and at
    the tier reached costs 3,000,000 x $1/M x 50 % = $1.50: $4.50 over; the 20th $0.25 and 1,000,000 x
    $0.50/M x 50 % = $0.25: none): the grant $0 -> $4.50, the top-up keeps $4.75."""
    cid = "two-volume-discounted-payers"
    grant, top_up = await _discounted(bk, cid)
    assert await _remaining(bk, cid, grant, top_up) == (450 * CENT, 475 * CENT)


async def test_a_rule_whose_versions_lines_go_both_ways_keeps_no_per_charge_record(bk: BillingKit) -> None:
    """Postpaid; v2 (from the 15th) $1/M to 3,900,000 tokens, $5/M beyond (dearer with volume). The
    5th 3,000,000 under v1 ($12.00); the 20th 1,000,000 under v2 on from 3,000,000: 900,000 x $1/M +
    100,000 x $5/M = $1.40. 4,000,000 reach v1's $1/M and v2's $5/M: v1's line $3.00 - $12.00 =
    -$9.00, v2's $5.00 - $1.40 = +$3.60; true-up -$5.40, November $13.40 - $5.40 = $8.00. The 5th's
    $9.00 overcharge is more than the rule gives back ($5.40), so no per-charge record is kept (as
    before) and the entry keeps no `versions`: verify passes. v1b ($0.25/M beyond) re-rated after the
    close: the 5th -$1.50, v1's line -$9.75 (-$0.75), v2's stays +$3.60: -$2.25, $8.00 -> $5.75 owed."""
    cid = "two-volume-both-ways"
    await _november(bk, cid, EXAMPLE, v2={**_v2_tiers(), "tiers": [{"up_to": 3_900_000, "price": "1"},
                                                                   {"up_to": None, "price": "5"}]})
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-5.40", "8.00"), ("-5.40", "8.00"))
    assert await _given(bk, cid) == []
    assert "versions" not in await _close_metadata(bk, cid)
    done = await _rerate(bk, cid, "v1b", NOV_1, NOV_15, _volume("0.25"))
    assert done["delta"] == "-2.25"
    assert (await bk.service.wallet(cid)).receivable == 575 * CENT
    await _verified(bk)


async def test_a_discounted_one_version_rule_s_close_gives_the_5th_s_payer_all_its_overcharge(bk: BillingKit) -> None:
    """v1 alone all month ($10/M to 1,000,000, $1/M beyond), prepaid, a 50 % discount on model-x: a
    $6.00 grant pays the 5th's 3,000,000 (1,000,000 x $10/M + 2,000,000 x $1/M = $12.00, less $6.00);
    a $5.00 top-up (the 6th) the 20th's 1,000,000 (on from 3,000,000: $1.00, less $0.50; $4.50 left).
    The close: 4,000,000 at $1/M = $4.00 less $13.00, -$9.00, its discount's share +$4.50
    (4,000,000 x $1/M x 50 % = $2.00 off where $6.50 was taken): -$4.50, all the 5th's (it cost
    $6.00 after its discount and at $1/M costs $3.00 x 50 % = $1.50: $4.50 over; the 20th $0.50 and
    $1.00 x 50 % = $0.50: none): the grant $4.50, the top-up keeps $4.50. Before, the 5th's part at
    the book's price ($9.00) was counted before its discount, the grant could take $6.00 of it, the
    $3.00 left was shared over the rule's payers, the last consumed first: the top-up got $0.50
    back ((4.00, 5.00))."""
    cid = "one-volume-discounted-payers"
    await bk.add_book(_version(cid, "v1", "2026-01-01T00:00:00Z", [_volume("1")]))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode="prepaid", book=cid)
    await bk.service.add_overrides(cid, {"discounts": [{"id": "off", "model": "model-x", "percent": "50"}]},
                                   bk.clock.now)
    grant = (await bk.grant(cid, "6.00")).grant.id
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 3_000_000, 0)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    top_up = (await bk.top_up(cid, "5.00")).grant.id
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 1_000_000, 0)
    assert await _remaining(bk, cid, grant, top_up) == (0, 450 * CENT)
    _, november = await _closed(bk, cid)
    assert _shown(november)[0] == "-4.50"
    assert await _remaining(bk, cid, grant, top_up) == (450 * CENT, 450 * CENT)


async def test_a_flat_version_s_charge_gets_no_part_of_the_volume_version_s_true_up(bk: BillingKit) -> None:
    """v1 (from January) prices `in` flat, $2/M; v2 (from the 15th) by volume, $10/M to 1,000,000,
    $1/M beyond: one volume version. Prepaid: a $1.00 grant pays the 5th's 500,000 x $2/M = $1.00
    (final at v1's flat price, its units counting toward the tier); a $20.00 top-up (the 6th) the
    20th's 2,000,000 under v2, rated graduated on from the 500,000 so far: 500,000 x $10/M +
    1,500,000 x $1/M = $6.50 ($13.50 left). The close: the period's 2,500,000 (the flat 5th's and
    v2's) reach $1/M (v2's 2,000,000 alone would too): v2's 2,000,000 at $1/M, $2.00 less $6.50,
    -$4.50, all the 20th's
    (its overcharge at $1/M, $4.50): the top-up $18.00, the grant $0, the record the 20th's $4.50
    alone. Worked at the volume line's price, the flat 5th is overcharged $1.00 - $0.50 = $0.50 and,
    the first charge, takes that of the line: the grant $0.50, the top-up $17.50 (the 20th's
    $4.00)."""
    cid = "flat-then-volume-payers"
    grant, top_up = await _november(bk, cid, [(1, "grant", "1.00"), (5, 500_000), (6, "topup", "20.00"),
                                              (20, 2_000_000)], "prepaid", v1=_flat("in"), v2=_volume("1"))
    assert await _remaining(bk, cid, grant, top_up) == (0, 1350 * CENT)
    _, november = await _closed(bk, cid)
    assert _shown(november)[0] == "-4.50"
    _, twentieth = await _charges(bk, cid)
    assert await _given(bk, cid) == [("in", twentieth, 450 * CENT)]
    assert await _remaining(bk, cid, grant, top_up) == (0, 1800 * CENT)
