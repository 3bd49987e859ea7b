"""Two versions in one period that both price a volume-tiered rule: the period's units of the rule
across those versions reach the tier, and each unit is priced at the version that rated it (as a
volume version followed by a flat one: each version's units at its own version).

Book rules are on model-x input. v1 (from January): `in` volume-tiered, $10/M up to 1,000,000
tokens, $1/M beyond; v2 (from November 15th): `in` volume-tiered, $8/M up to 1,000,000, $0.50/M
beyond. November 5th 3,000,000 tokens under v1, rated graduated: 1,000,000 x $10/M + 2,000,000 x
$1/M = $12.00; November 20th 1,000,000 tokens under v2, rated graduated on from the period's
3,000,000 so far: 1,000,000 x $0.50/M = $0.50. The period's 4,000,000 reach the second tier of
both: v1's 3,000,000 at $1/M = $3.00 less $12.00 = -$9.00, v2's 1,000,000 at $0.50/M = $0.50 less
$0.50 = 0; true-up -$9.00, November $12.00 + $0.50 - $9.00 = $3.50. Before, all 4,000,000 at v2's
$0.50/M = $2.00 less $12.50: -$10.50, November $2.00 (v1's units at v2's prices)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_kit import BillingKit
from test_volume_true_up_versions_more import CLOSED, NOV_1, NOV_15, NOV_25, _version, _volume

from ledger.audit import verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS

EXAMPLE = [(5, 3_000_000), (20, 1_000_000)]  # the module's example: the 5th's tokens, the 20th's


def _v2_tiers(first: str = "8", beyond: str = "0.5") -> dict:
    return {"id": "in", "model": "model-x", "token_type": "input", "tier_mode": "volume",
            "tiers": [{"up_to": 1_000_000, "price": first}, {"up_to": None, "price": beyond}]}


async def _november(bk: BillingKit, cid: str, days: Sequence[tuple[Any, ...]], mode: str = "postpaid",
                    v2: dict | None = None, discount: bool = False, v1: dict | None = None) -> list[str]:
    """Book `cid`: v1 and v2 (`v1`, `v2`: their rules, by default _volume("1"), _v2_tiers()); its
    customer (`mode`) from November 1st at 09:00, with a 50 % discount on model-x from then when
    `discount`; then `days`, each at noon of its November day, in order: (day, tokens) of model-x
    input, or (day, kind, amount) a lot ("topup" or "grant"; a grant may add its expiry). The lots' ids, in order."""
    await bk.add_book(_version(cid, "v1", "2026-01-01T00:00:00Z", [v1 or _volume("1")]))
    await bk.add_book(_version(cid, "v2", "2026-11-15T00:00:00Z", [v2 or _v2_tiers()]))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode=mode, book=cid)
    if discount:
        await bk.service.add_overrides(cid, {"discounts": [{"id": "off", "model": "model-x", "percent": "50"}]},
                                       bk.clock.now)
    lots = []
    for day, *what in days:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        if len(what) == 1:
            await bk.event(cid, "model-x", what[0], 0)
        else:
            kind, amount, *expiry = what
            lot = await (bk.top_up(cid, amount) if kind == "topup" else bk.grant(cid, amount, *expiry))
            lots.append(lot.grant.id)
    return lots


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


def _shown(invoice: dict) -> tuple[str, str]:
    return invoice["subtotals"]["true_ups"], invoice["total"]


def _true_up_lines(invoice: dict) -> list[tuple[str, int, str]]:
    return sorted((ln["price_version"], ln["quantity"], ln["unit_price"]) for ln in invoice["lines"]
                  if ln["kind"] == "volume_true_up")


async def _closed(bk: BillingKit, cid: str) -> tuple[tuple[str, str], dict]:
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    upcoming = _shown(await bk.upcoming(cid))
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    await _verified(bk)
    return upcoming, november


async def _rerated(bk: BillingKit, cid: str, version: str, rule: dict, day: datetime, previewed: bool = False,
                   start: datetime = NOV_1) -> dict:
    """On `day`, `version` (from `start`, by default November 1st, `rule` alone) and `start` to November
    15th re-rated to it: the apply's answer (`previewed`: the preview before it said the same delta)."""
    bk.clock.now = day
    await bk.add_book(_version(cid, version, start.strftime("%Y-%m-%dT%H:%M:%SZ"), [rule]))
    spec = rerating.RerateSpec(cid, version, start, NOV_15, cid)
    seen = await rerating.preview(bk.db, bk.service.engine.books, spec) if previewed else None
    done = await rerating.apply(bk.db, bk.service.engine, spec, None)
    assert seen is None or seen["delta"] == done["delta"], (seen, done)
    return done


DEC_2 = datetime(2026, 12, 2, tzinfo=UTC)


async def test_each_version_s_units_are_trued_up_at_its_own_tiers_the_period_s_units_reaching_the_tier(
        bk: BillingKit) -> None:
    """The module's example: true-up -$9.00 (v1's 3,000,000 at $1/M less $12.00; v2's line 0), November
    $3.50, the upcoming invoice before the close saying the same."""
    cid = "two-volume-versions"
    await _november(bk, cid, EXAMPLE)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-9.00", "3.50"), ("-9.00", "3.50"))


async def test_both_versions_true_up_lines_show_their_own_price_of_the_tier_reached(bk: BillingKit) -> None:
    """600,000 on the 5th under v1: $6.00 (all first tier); 600,000 on the 20th under v2 from 600,000
    so far: 400,000 x $8/M = $3.20 + 200,000 x $0.50/M = $0.10, $3.30. The period's 1,200,000 reach
    the second tier: v1 600,000 x $1/M = $0.60 less $6.00 = -$5.40; v2 600,000 x $0.50/M = $0.30 less
    $3.30 = -$3.00; true-up -$8.40, November $9.30 - $8.40 = $0.90 (before: 1,200,000 x $0.50/M =
    $0.60 less $9.30, -$8.70, November $0.60)."""
    cid = "two-volume-lines"
    await _november(bk, cid, [(5, 600_000), (20, 600_000)])
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-8.40", "0.90"), ("-8.40", "0.90"))
    assert _true_up_lines(november) == [("v1", 600_000, "1"), ("v2", 600_000, "0.5")]


async def test_a_re_rate_before_the_close_counts_the_version_re_rated_to(bk: BillingKit) -> None:
    """November 25th: v1b (from November 1st: $10/M to 1,000,000, $0.25/M beyond) and November
    1st-15th re-rated to it: the 5th 1,000,000 x $10/M + 2,000,000 x $0.25/M = $10.50 (-$1.50). The
    close: v1b's 3,000,000 at $0.25/M = $0.75 less $10.50 = -$9.75, v2's 0: -$9.75; November $10.50 +
    $0.50 - $9.75 = $1.25, the upcoming invoice alike (before: 4,000,000 at v2's $0.50/M = $2.00
    less $11.00, -$9.00, November $2.00)."""
    cid = "two-volume-rerated-open"
    await _november(bk, cid, EXAMPLE)
    done = await _rerated(bk, cid, "v1b", _volume("0.25"), NOV_25)
    assert done["delta"] == "-1.50"
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-9.75", "1.25"), ("-9.75", "1.25"))


async def test_a_re_rate_after_the_close_corrects_the_true_up_at_each_version_s_price(bk: BillingKit) -> None:
    """The close as in the first case (-$9.00, $3.50). December 2nd: v1b (as above) and November
    1st-15th re-rated to it: the 5th -$1.50; the true-up becomes -$9.75 (v1b's 3,000,000 at $0.25/M
    less $10.50; v2's 0): -$0.75 more; -$2.25 in all, preview and apply alike; the receivable $3.50 -
    $2.25 = $1.25, what the same re-rate before the close leaves (before: the close's -$10.50 becomes
    -$9.00, +$1.50 beside the -$1.50: 0.00, November $2.00)."""
    cid = "two-volume-rerated-closed"
    await _november(bk, cid, EXAMPLE)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-9.00", "3.50"), ("-9.00", "3.50"))
    done = await _rerated(bk, cid, "v1b", _volume("0.25"), DEC_2, previewed=True)
    assert done["delta"] == "-2.25"
    assert (await bk.service.wallet(cid)).receivable == 1_250_000_000
    await _verified(bk)


def _volume_b(beyond: str = "1") -> dict:
    return {**_volume(beyond), "id": "in-b"}


async def _renamed(bk: BillingKit, cid: str) -> None:
    """v1 `in` as above; v2 (from the 15th) names no `in`: `in-b`, volume-tiered as v1. The 5th
    3,000,000 under v1 `in`, $12.00; the 20th 1,000,000 under v2 `in-b`, its first units, $10.00."""
    await _november(bk, cid, EXAMPLE, v2=_volume_b())


async def _to_v3(bk: BillingKit, cid: str, beyond: str, day: datetime, previewed: bool = False) -> dict:
    """On `day`, v3 (from November 1st, `in-b` only: $10/M to 1,000,000, `beyond` $/M after) and
    November 1st-15th re-rated to it: the apply's answer."""
    return await _rerated(bk, cid, "v3", _volume_b(beyond), day, previewed)


async def test_units_re_rated_after_the_close_to_another_rule_id_count_toward_its_volume(bk: BillingKit) -> None:
    """The close: `in` v1's 3,000,000 at $1/M = $3.00 less $12.00, -$9.00; `in-b` v2's 1,000,000 alone
    reach the first tier, $10.00 less $10.00, 0; November $22.00 - $9.00 = $13.00. December 2nd: v3
    (from November 1st, `in-b` only: $10/M to 1,000,000, $0.50/M beyond) and November 1st-15th
    re-rated to it: the 5th, `in-b`'s first units, 1,000,000 x $10/M + 2,000,000 x $0.50/M = $11.00
    (-$1.00). `in` rates nothing left: -$9.00 -> 0 (+$9.00); `in-b`'s 4,000,000 reach the second
    tier: v3's 3,000,000 at $0.50/M = $1.50 less $11.00, v2's 1,000,000 at $1/M = $1.00 less $10.00:
    -$18.50; -$1.00 + $9.00 - $18.50 = -$10.50, the receivable $13.00 - $10.50 = $2.50 (= $1.50 + $1.00)."""
    cid = "renamed-after-close"
    await _renamed(bk, cid)
    _, november = await _closed(bk, cid)
    assert _shown(november) == ("-9.00", "13.00")
    done = await _to_v3(bk, cid, "0.5", DEC_2)
    assert done["delta"] == "-10.50"
    assert (await bk.service.wallet(cid)).receivable == 2_500_000_000
    await _verified(bk)


async def test_a_re_rate_after_the_close_moving_units_to_another_rule_id_at_the_same_price_corrects_the_true_up(
        bk: BillingKit) -> None:
    """The close as above (`in` -$9.00, `in-b` 0; November $13.00). December 2nd: v3 (from November
    1st, `in-b` only, v1's prices: $10/M to 1,000,000, $1/M beyond) and November 1st-15th re-rated to
    it: the 5th, `in-b`'s first units, 1,000,000 x $10/M + 2,000,000 x $1/M = $12.00, what it cost
    (0.00). `in` rates nothing left: -$9.00 -> 0 (+$9.00); `in-b`'s 4,000,000 reach the second tier:
    v3's 3,000,000 at $1/M = $3.00 less $12.00, v2's 1,000,000 at $1/M = $1.00 less $10.00: -$18.00;
    +$9.00 - $18.00 = -$9.00, preview and apply alike; the receivable $13.00 - $9.00 = $4.00 (=
    4,000,000 x $1/M). Before, the charge's amounts did not change, so nothing was corrected: 0.00."""
    cid = "renamed-same-price-after-close"
    await _renamed(bk, cid)
    _, november = await _closed(bk, cid)
    assert _shown(november) == ("-9.00", "13.00")
    done = await _to_v3(bk, cid, "1", DEC_2, previewed=True)
    assert done["delta"] == "-9.00"
    assert (await bk.service.wallet(cid)).receivable == 400 * CENT
    await _verified(bk)


async def test_a_re_rate_before_the_close_moving_units_to_another_rule_id_at_the_same_price_counts_them_there(
        bk: BillingKit) -> None:
    """The re-rate above on November 25th, before the close: the 5th $12.00 under v3 `in-b` (0.00).
    The close trues up `in-b`'s 4,000,000 (second tier, $1/M): v3's 3,000,000 $3.00 less $12.00, v2's
    1,000,000 $1.00 less $10.00: -$18.00; `in` rates nothing: November $12.00 + $10.00 - $18.00 =
    $4.00, the upcoming invoice alike. Before, the move was not kept: `in` -$9.00, ('-9.00', '13.00')."""
    cid = "renamed-same-price-before-close"
    await _renamed(bk, cid)
    done = await _to_v3(bk, cid, "1", NOV_25)
    assert done["delta"] == "0.00"
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-18.00", "4.00"), ("-18.00", "4.00"))
    assert (await bk.service.wallet(cid)).receivable == 400 * CENT


async def test_units_re_rated_before_the_close_to_another_rule_id_count_toward_its_volume(bk: BillingKit) -> None:
    """The re-rate above on November 25th, before the close: the 5th $11.00 under v3 `in-b` (-$1.00).
    The close trues up `in-b`'s 4,000,000 as the re-rate after it does: -$18.50, November $11.00 +
    $10.00 - $18.50 = $2.50, the upcoming invoice alike. Before, it counted v2's 1,000,000 alone
    (first tier, 0): ('0.00', '21.00'), the moves not telling the rule that rates the units now."""
    cid = "renamed-before-close"
    await _renamed(bk, cid)
    done = await _to_v3(bk, cid, "0.5", NOV_25)
    assert done["delta"] == "-1.00"
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-18.50", "2.50"), ("-18.50", "2.50"))


async def _prepaid(bk: BillingKit, cid: str, second: str = "topup", amount: str = "5.00",
                   v2: dict | None = None) -> list[str]:
    """Prepaid, the module's usage (v2's rule `v2`, by default `in` as `_november`'s): a $12.00 grant
    (November 1st) pays the 5th's $12.00 and is spent; an `amount` `second` lot ("topup" or "grant",
    the 6th) pays the 20th's (as the module's example: $0.50 of $5.00, $4.50 left). The lots' ids."""
    return await _november(bk, cid, [(1, "grant", "12.00"), (5, 3_000_000), (6, second, amount), (20, 1_000_000)],
                           "prepaid", v2=v2)


async def _remaining(bk: BillingKit, cid: str, *lots: str) -> tuple[int, ...]:
    """What each of `lots` has left (0: spent, not listed)."""
    have = {g.id: g.remaining for g in (await bk.service.wallet(cid)).grants}
    return tuple(have.get(lot, 0) for lot in lots)


CENT = 10_000_000  # atomic units of $0.01
# postpaid, the 5th's $12.00 on the receivable; a $5.00 grant (the 6th) pays the 20th's $0.50
POSTPAID_GRANT = [(5, 3_000_000), (6, "grant", "5.00"), (20, 1_000_000)]


@pytest.mark.parametrize("second", ["topup", "grant"])
async def test_the_close_gives_each_charge_s_payers_what_that_charge_was_overcharged_at_its_version(
        bk: BillingKit, second: str) -> None:
    """The true-up's -$9.00 is all the 5th's: v1's 3,000,000 at $1/M = $3.00 less $12.00 = $9.00 over;
    the 20th's 1,000,000 at v2's $0.50/M = $0.50 less $0.50 = 0 over. So the grant that paid the 5th
    gets $9.00 ($0 -> $9.00) and the lot that paid the 20th nothing ($4.50 stays $4.50), as a
    one-version rule gives back charge by charge. Given back together, the last consumed first,
    the 20th's lot got its $0.50 ($5.00) and the grant $8.50."""
    cid = f"two-volume-payers-{second}"
    grant, later = await _prepaid(bk, cid, second)
    assert await _remaining(bk, cid, grant, later) == (0, 450 * CENT)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-9.00", "3.50"), ("-9.00", "3.50"))
    assert await _remaining(bk, cid, grant, later) == (900 * CENT, 450 * CENT)


async def test_the_close_takes_off_what_is_owed_what_the_receivable_s_charge_was_overcharged(bk: BillingKit) -> None:
    """Postpaid: the 5th's $12.00 on the receivable; a $5.00 grant (the 6th) pays the 20th's $0.50
    ($4.50 left). The close's -$9.00 is the 5th's: $12.00 - $9.00 = $3.00 owed, the grant keeps
    $4.50 (a guard: shared together, the money back came off what is owed first, so this held)."""
    cid = "two-volume-payers-receivable"
    [grant] = await _november(bk, cid, POSTPAID_GRANT)
    assert ((await bk.service.wallet(cid)).receivable, await _remaining(bk, cid, grant)) == (1200 * CENT, (450 * CENT,))
    await _closed(bk, cid)
    assert ((await bk.service.wallet(cid)).receivable, await _remaining(bk, cid, grant)) == (300 * CENT, (450 * CENT,))


async def test_a_re_rate_after_the_close_gives_the_5th_s_grant_its_part_and_leaves_the_top_up(bk: BillingKit) -> None:
    """Prepaid as above, closed (grant $9.00, top-up $4.50). December 2nd: v1b ($0.25/M beyond) and
    November 1st-15th re-rated to it: the 5th $10.50 (-$1.50 back to the grant that paid it); the
    true-up -$9.00 -> -$9.75 (v1b's 3,000,000 at $0.25/M less $10.50), -$0.75 more, all the 5th's:
    the grant $9.00 + $1.50 + $0.75 = $11.25, the top-up $4.50 untouched; -$2.25 in all."""
    cid = "two-volume-payers-rerated"
    grant, later = await _prepaid(bk, cid)
    await _closed(bk, cid)
    assert await _remaining(bk, cid, grant, later) == (900 * CENT, 450 * CENT)
    done = await _rerated(bk, cid, "v1b", _volume("0.25"), DEC_2)
    assert done["delta"] == "-2.25"
    assert await _remaining(bk, cid, grant, later) == (1125 * CENT, 450 * CENT)
    await _verified(bk)


async def test_a_dearer_re_rate_after_the_close_takes_back_from_the_5th_s_grant(bk: BillingKit) -> None:
    """Prepaid as above, closed (grant $9.00, top-up $4.50). December 2nd: v1c ($2/M beyond) and
    November 1st-15th re-rated to it: the 5th 1,000,000 x $10/M + 2,000,000 x $2/M = $14.00 (+$2.00);
    the true-up -$9.00 -> v1c's 3,000,000 at $2/M = $6.00 less $14.00 = -$8.00 (+$1.00 back from
    what the close gave: the grant); +$3.00 in all, the customer's lots $13.50 -> $10.50."""
    cid = "two-volume-payers-dearer"
    grant, later = await _prepaid(bk, cid)
    await _closed(bk, cid)
    done = await _rerated(bk, cid, "v1c", _volume("2"), DEC_2)
    assert done["delta"] == "3.00"
    left = await _remaining(bk, cid, grant, later)
    assert (sum(left), (await bk.service.wallet(cid)).receivable) == (1050 * CENT, 0), left
    await _verified(bk)


async def test_a_discount_on_a_rule_two_volume_versions_tier_takes_its_share_of_each_version_s_line(
        bk: BillingKit) -> None:
    """The module's example with a 50 % discount on model-x (November 1st): the 5th $12.00 less $6.00,
    the 20th $0.50 less $0.25; $6.25 charged. The true-up: v1's -$9.00 and its discount's share,
    3,000,000 x $1/M x 50 % = $1.50 off where $6.00 was taken, +$4.50; v2's 0 and its discount's
    1,000,000 x $0.50/M x 50 % = $0.25 where $0.25 was taken, 0: -$4.50, November $6.25 - $4.50 =
    $1.75 = ($3.00 + $0.50) x 50 %, the upcoming invoice alike."""
    cid = "two-volume-discounted"
    await _november(bk, cid, EXAMPLE, discount=True)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-4.50", "1.75"), ("-4.50", "1.75"))
    assert (await bk.service.wallet(cid)).receivable == 175 * CENT


async def _prepaid_renamed(bk: BillingKit, cid: str) -> tuple[str, str]:
    """Prepaid, `_renamed`'s book and usage: a $12.00 grant (November 1st) pays the 5th's $12.00 and
    is spent; a $15.00 top-up (the 6th) pays the 20th's $10.00 ($5.00 left)."""
    grant, topup = await _prepaid(bk, cid, "topup", "15.00", _volume_b())
    assert await _remaining(bk, cid, grant, topup) == (0, 500 * CENT)
    return grant, topup


async def test_prepaid_units_re_rated_before_the_close_to_another_rule_id_get_their_money_back(
        bk: BillingKit) -> None:
    """Prepaid, November 25th: v3 (`in-b`, $0.50/M beyond) and November 1st-15th re-rated to it: the
    5th $11.00, -$1.00 back to the grant that paid it ($1.00). The close's -$18.50 (as postpaid):
    the 5th's 3,000,000 at $0.50/M = $1.50 less $11.00, $9.50 over; the 20th's 1,000,000 at $1/M =
    $1.00 less $10.00, $9.00 over; the lots $1.00 + $5.00 + $18.50 = $24.50 = $27.00 - November's
    $2.50, the upcoming invoice alike, and no lot beyond the two. Before, the close gave the re-rated
    5th's payers nothing of `in-b`'s money back (its funding was listed under `in`): the top-up got
    what it paid of the 20th back ($15.00), $8.50 became a credit lot, the grant kept $1.00. (How
    the two share it: the next test.)"""
    cid = "renamed-before-close-prepaid"
    grant, topup = await _prepaid_renamed(bk, cid)
    done = await _to_v3(bk, cid, "0.5", NOV_25)
    assert done["delta"] == "-1.00"
    assert await _remaining(bk, cid, grant, topup) == (100 * CENT, 500 * CENT)
    upcoming, november = await _closed(bk, cid)
    assert (upcoming, _shown(november)) == (("-18.50", "2.50"), ("-18.50", "2.50"))
    await _verified(bk)
    wallet = await bk.service.wallet(cid)
    assert ({g.id for g in wallet.grants}, sum(g.remaining for g in wallet.grants), wallet.receivable) == (
        {grant, topup}, 2450 * CENT, 0)


async def test_prepaid_units_re_rated_before_the_close_to_another_rule_id_give_each_payer_its_charge_s_part(
        bk: BillingKit) -> None:
    """As above: `in-b`'s 4,000,000 reach its second tier; v3's line (the 5th, 3,000,000 at $0.50/M =
    $1.50 less the $11.00 it stands at) gives the 5th's $9.50 to the grant that paid it ($1.00 ->
    $10.50); v2's (the 20th, 1,000,000 at $1/M = $1.00 less $10.00) the 20th's $9.00 to the top-up
    ($5.00 -> $14.00); $24.50 in all, as above. Before, the close listed the moved 5th under `in-b`
    with no units (rule_funding: None), so its $9.50 was shared over `in-b`'s payers, the last
    consumed first: the top-up took back all it paid of the 20th ($10.00: $15.00), the grant the
    rest ($8.50: $9.50)."""
    cid = "renamed-before-close-prepaid-parts"
    grant, topup = await _prepaid_renamed(bk, cid)
    await _to_v3(bk, cid, "0.5", NOV_25)
    await _closed(bk, cid)
    assert await _remaining(bk, cid, grant, topup) == (1050 * CENT, 1400 * CENT)


async def test_prepaid_units_re_rated_after_the_close_to_another_rule_id_at_the_same_price_get_their_money_back(
        bk: BillingKit) -> None:
    """Prepaid, closed: `in`'s -$9.00 to the grant that paid the 5th ($9.00), `in-b` 0 (the top-up
    $5.00); November $13.00. December 2nd: v3 (`in-b`, v1's prices) and November 1st-15th re-rated
    to it: the 5th $12.00 as before; `in` -$9.00 -> 0, `in-b` 0 -> -$18.00 (as postpaid): -$9.00 in
    all: the grant gives back `in`'s $9.00 and gets the 5th's 3,000,000 at $1/M less $12.00, $9.00
    ($9.00 stays), the top-up the 20th's 1,000,000 at $1/M less $10.00, $9.00 ($5.00 -> $14.00): the
    lots $23.00 = $27.00 - $4.00 (4,000,000 x $1/M). Before: 0.00, nothing moved ($9.00, $5.00)."""
    cid = "renamed-after-close-prepaid"
    grant, topup = await _prepaid_renamed(bk, cid)
    _, november = await _closed(bk, cid)
    assert _shown(november) == ("-9.00", "13.00")
    assert await _remaining(bk, cid, grant, topup) == (900 * CENT, 500 * CENT)
    done = await _to_v3(bk, cid, "1", DEC_2)
    assert done["delta"] == "-9.00"
    assert await _remaining(bk, cid, grant, topup) == (900 * CENT, 1400 * CENT)
    assert (await bk.service.wallet(cid)).receivable == 0
    await _verified(bk)
