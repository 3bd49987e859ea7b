"""Who gets a volume true-up's money back of a charge a re-rate moved to another rule id
(`charge_adjustments.new_rules`, migration 0087): postpaid, moved back to its first rule id, and
after the close.

The book and usage of `test_volume_true_up_two_volume_versions._renamed`: v1 (from January) `in`,
v2 (from November 15th) `in-b`, each volume-tiered $10/M to 1,000,000 tokens, $1/M beyond; the
5th 3,000,000 tokens under v1 `in` ($12.00), the 20th 1,000,000 under v2 `in-b`, its first units
($10.00). v3 (from November 1st) names `in-b` alone, $10/M to 1,000,000, $0.50/M beyond: the 5th
re-rated to it, `in-b`'s first units, costs 1,000,000 x $10/M + 2,000,000 x $0.50/M = $11.00."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_volume_true_up_contract_units import CLOSED, _customer, _true_ups, _usage
from test_volume_true_up_two_volume_versions import (
    CENT,
    DEC_2,
    _closed,
    _november,
    _prepaid_renamed,
    _remaining,
    _rerated,
    _shown,
    _to_v3,
    _verified,
    _volume_b,
)
from test_volume_true_up_versions_more import NOV_1, NOV_15, NOV_25, _volume

from wallets import rerating


async def test_postpaid_units_re_rated_before_the_close_to_another_rule_id_each_give_back_their_charge_s_part(
        bk: BillingKit) -> None:
    """Postpaid: the 5th's $12.00 on the receivable; a $15.00 grant (the 6th) pays the 20th's $10.00
    ($5.00 left). November 25th, re-rated to v3: the 5th $11.00, -$1.00 off what is owed ($11.00).
    The close's -$18.50: the 5th's $9.50 (3,000,000 at $0.50/M = $1.50 less $11.00) off what is owed
    ($1.50), the 20th's $9.00 (1,000,000 at $1/M less $10.00) to the grant ($14.00); November
    $11.00 + $10.00 - $18.50 = $2.50 = $1.50 owed + the grant's $1.00, the upcoming invoice alike.
    (A guard: shared over the rule's payers, the receivable took the 5th's share first, so this held.)"""
    cid = "moved-postpaid"
    [grant] = await _november(bk, cid, [(5, 3_000_000), (6, "grant", "15.00"), (20, 1_000_000)], v2=_volume_b())
    done = await _to_v3(bk, cid, "0.5", NOV_25)
    assert (done["delta"], (await bk.service.wallet(cid)).receivable) == ("-1.00", 1100 * CENT)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-18.50", "2.50"), ("-18.50", "2.50"))
    assert ((await bk.service.wallet(cid)).receivable, await _remaining(bk, cid, grant)) == (150 * CENT, (1400 * CENT,))


async def test_prepaid_units_moved_to_another_rule_id_and_back_to_their_first_before_the_close(bk: BillingKit) -> None:
    """Prepaid ($12.00 grant pays the 5th, $15.00 top-up the 20th: $0, $5.00). November 25th, re-rated
    to v3: the 5th $11.00 under `in-b` (grant $1.00). November 26th, v4 (from November 2nd, `in`
    alone: $10/M to 1,000,000, $0.25/M beyond) and November 2nd-15th re-rated to it: the 5th back
    under `in`, its first units, 1,000,000 x $10/M + 2,000,000 x $0.25/M = $10.50 (-$0.50, grant
    $1.50). The close: `in`'s 3,000,000 reach its second tier at v4's $0.25/M, $0.75 less $10.50:
    -$9.75, all the 5th's, to the grant ($11.25); `in-b`'s 1,000,000 (the 20th) its first tier:
    nothing (the top-up keeps $5.00); November $10.50 + $10.00 - $9.75 = $10.75, the upcoming
    invoice alike; the lots $16.25 = $27.00 - $10.75."""
    cid = "moved-and-back"
    grant, topup = await _prepaid_renamed(bk, cid)
    assert (await _to_v3(bk, cid, "0.5", NOV_25))["delta"] == "-1.00"
    done = await _rerated(bk, cid, "v4", _volume("0.25"), datetime(2026, 11, 26, tzinfo=UTC),
                          start=datetime(2026, 11, 2, tzinfo=UTC))
    assert (done["delta"], await _remaining(bk, cid, grant, topup)) == ("-0.50", (150 * CENT, 500 * CENT))
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-9.75", "10.75"), ("-9.75", "10.75"))
    assert await _remaining(bk, cid, grant, topup) == (1125 * CENT, 500 * CENT)


async def test_prepaid_units_re_rated_after_the_close_to_another_rule_id_give_each_payer_its_charge_s_part(
        bk: BillingKit) -> None:
    """Prepaid, closed: `in`'s -$9.00 to the grant that paid the 5th ($9.00), `in-b`'s 1,000,000 its
    first tier, 0 (the top-up $5.00); November $13.00. December 2nd, re-rated to v3: the 5th $11.00
    (-$1.00 back to the grant); `in` -$9.00 -> 0 (+$9.00 back from the grant, which the close gave
    it); `in-b` 0 -> -$18.50: the 5th's $9.50 (3,000,000 at $0.50/M less $11.00) to the grant, the
    20th's $9.00 (1,000,000 at $1/M less $10.00) to the top-up: -$10.50 in all; the grant $9.00 +
    $1.00 - $9.00 + $9.50 = $10.50, the top-up $5.00 + $9.00 = $14.00, what the same re-rate before
    the close leaves (the lots $24.50 = $27.00 - November's $2.50). Before, `in`'s correction kept
    no part of the 5th and `in-b`'s 0 at the close was read as not kept, so its -$18.50 was shared
    over its payers, the last consumed first: the top-up got all it paid of the 20th back ($10.00),
    the grant the rest, (9.50, 15.00)."""
    cid = "moved-after-close-parts"
    grant, topup = await _prepaid_renamed(bk, cid)
    await _closed(bk, cid)
    assert await _remaining(bk, cid, grant, topup) == (900 * CENT, 500 * CENT)
    assert (await _to_v3(bk, cid, "0.5", DEC_2, previewed=True))["delta"] == "-10.50"
    await _verified(bk)
    assert await _remaining(bk, cid, grant, topup) == (1050 * CENT, 1400 * CENT)


async def test_contract_units_re_rated_to_another_rule_id_count_toward_its_tier_at_the_close(bk: BillingKit) -> None:
    """Book `shared` (test_volume_true_up_contract_units): v1 `v-out`, model-* output volume-tiered,
    $20/M to 1,000,000, $10/M beyond; model-a at a $5/M contract. The 5th model-a 1,200,000 ($6.00,
    counted toward `v-out`'s tier), the 6th model-b 300,000 past it: $10/M, $3.00. November 25th, v3
    (from November 1st) names the rule `v-out-b` (same tiers) and November 1st-15th re-rated to it:
    the 5th stays $6.00 at the contract, under `v-out-b`; the 6th, rated on from the 5th's 1,200,000
    there, $3.00 (0.00 in all). The close: `v-out-b`'s 1,500,000 reach $10/M, the 6th's 300,000 cost
    what they were charged: no true-up, November $9.00, the upcoming invoice alike. Before (the re-rate
    kept no rule of a contract price's units, so the close counted them under `v-out`, as charged):
    the 6th's 300,000 alone under `v-out-b` at $20/M, +$3.00, $12.00."""
    cid = await _customer(bk, "moved-contract-units")
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (6, "model-b", 300_000)])
    await bk.add_book({"id": "shared", "version": "v3", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [{"id": "v-out-b", "model": "model-*", "token_type": "output", "tier_mode": "volume",
                                  "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
    bk.clock.now = NOV_25
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("shared", "v3", NOV_1, NOV_15), None)
    assert done["delta"] == "0.00"
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    upcoming = await bk.upcoming(cid)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    await _verified(bk)
    assert (upcoming["total"], november["total"], _true_ups(november)) == ("9.00", "9.00", [])


async def test_units_moved_to_another_rule_id_and_back_after_the_close_end_where_before_the_close(
        bk: BillingKit) -> None:
    """Postpaid, no lots: the 5th's $12.00 and the 20th's $10.00 owed. The close: `in`'s 3,000,000
    at $1/M = $3.00 less $12.00, -$9.00; `in-b`'s 1,000,000 its first tier, 0: $13.00 owed. December
    2nd, re-rated to v3 (`in-b`, $0.50/M beyond): the 5th $11.00 (-$1.00), `in` -$9.00 -> 0 (+$9.00),
    `in-b`'s 4,000,000 -> -$18.50 (3,000,000 at $0.50/M = $1.50 less $11.00, 1,000,000 at $1/M less
    $10.00): -$10.50, $2.50 owed. December 3rd, v4 (from November 2nd, `in` alone: $10/M to 1,000,000,
    $0.25/M beyond) and November 2nd-15th re-rated to it: the 5th back under `in`, 1,000,000 x $10/M
    + 2,000,000 x $0.25/M = $10.50 (-$0.50); `in`'s 3,000,000 reach its second tier: $0.75 less
    $10.50 = -$9.75 (0 -> -$9.75); the 20th stays under v2 (from the 15th, in force on the 20th, not
    v4) `in-b`, 1,000,000 its first tier: -$18.50 -> 0 (+$18.50): +$8.25, $10.75 owed, November as
    the same re-rates before the close leave it (test_prepaid_units_moved_to_another_rule_id_and_back_
    to_their_first_before_the_close: $10.75). Before, the re-rate counted the 20th under `in` (the
    rule the 5th moved to from `in-b`, which v4 does not name), `in`'s 4,000,000: v4's 3,000,000 at
    $0.25/M less $10.50 and v2's 1,000,000 at $1/M less $10.00, -$18.75: -$0.75, $1.75 owed."""
    cid = "moved-and-back-after-close"
    await _november(bk, cid, [(5, 3_000_000), (20, 1_000_000)], v2=_volume_b())
    assert (await bk.service.wallet(cid)).receivable == 2200 * CENT
    await _closed(bk, cid)
    assert (await bk.service.wallet(cid)).receivable == 1300 * CENT
    assert (await _to_v3(bk, cid, "0.5", DEC_2))["delta"] == "-10.50"
    assert (await bk.service.wallet(cid)).receivable == 250 * CENT
    done = await _rerated(bk, cid, "v4", _volume("0.25"), datetime(2026, 12, 3, tzinfo=UTC), previewed=True,
                          start=datetime(2026, 11, 2, tzinfo=UTC))
    await _verified(bk)
    assert (done["delta"], (await bk.service.wallet(cid)).receivable) == ("8.25", 1075 * CENT)


async def test_prepaid_units_moved_to_another_rule_id_and_back_after_the_close_go_back_to_their_payers(
        bk: BillingKit) -> None:
    """Prepaid ($12.00 grant pays the 5th, $15.00 top-up the 20th): closed (9.00, 5.00); December 2nd,
    re-rated to v3 (test_prepaid_units_re_rated_after_the_close_to_another_rule_id_give_each_payer_its_
    charge_s_part): (10.50, 14.00). December 3rd, v4 (from November 2nd, `in` alone, $0.25/M beyond):
    the 5th $11.00 -> $10.50, -$0.50 to the grant ($11.00); `in` 0 -> -$9.75, all the 5th's
    (3,000,000 at $0.25/M = $0.75 less $10.50), to the grant ($20.75); `in-b` -$18.50 -> 0 takes
    back the 5th's $9.50 from the grant ($11.25) and the 20th's $9.00 from the top-up ($5.00):
    +$8.25, (11.25, 5.00), what the same re-rates before the close leave
    (test_prepaid_units_moved_to_another_rule_id_and_back_to_their_first_before_the_close); the
    lots $16.25 = $27.00 - November's $10.75. (A guard.)"""
    cid = "moved-and-back-after-close-prepaid"
    grant, topup = await _prepaid_renamed(bk, cid)
    await _closed(bk, cid)
    assert (await _to_v3(bk, cid, "0.5", DEC_2))["delta"] == "-10.50"
    assert await _remaining(bk, cid, grant, topup) == (1050 * CENT, 1400 * CENT)
    done = await _rerated(bk, cid, "v4", _volume("0.25"), datetime(2026, 12, 3, tzinfo=UTC),
                          start=datetime(2026, 11, 2, tzinfo=UTC))
    await _verified(bk)
    assert (done["delta"], await _remaining(bk, cid, grant, topup)) == ("8.25", (1125 * CENT, 500 * CENT))
