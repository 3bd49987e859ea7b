"""A volume rule whose price book changes version mid-period: the true-up trues up the usage each
volume-tiered version rated, never the usage of a version that prices the rule flat (final at its
price), whose units still reach the rule's tier, as the period's counters counted them.

By hand. Book `goes-flat`, rule `in` (model-x input). v1 (from January): volume tiers, $10/M up
to 1,000,000 tokens, $1/M beyond. v2 (from November 15th): `in` flat at $2/M.
November 5th, 3,000,000 tokens under v1, rated graduated during the month: 1,000,000 x $10/M =
$10.00 and 2,000,000 x $1/M = $2.00, $12.00. November 20th, 1,000,000 tokens under v2: $2.00.
The close trues up v1's usage at v1's tiers: 3,000,000 tokens reach the second tier (past
1,000,000; the period's 4,000,000 of the rule would too), all at $1/M = $3.00, less the $12.00
charged: -$9.00. v2's $2.00 is its flat price, final. November: $12.00 + $2.00 - $9.00 = $5.00.
Before, the close took the tiers of the latest version that rated the rule, v2, found it flat and
trued nothing up: $14.00."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_kit import BillingKit

from ledger.audit import verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS

V1 = {"id": "goes-flat", "version": "v1", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "in", "model": "model-x", "token_type": "input", "tier_mode": "volume",
     "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "1"}]}]}
V2 = {"id": "goes-flat", "version": "v2", "currency": "USD", "effective_from": "2026-11-15T00:00:00Z", "rules": [
    {"id": "in", "model": "model-x", "token_type": "input", "price": "2"}]}
NOV_1, NOV_15 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)
CLOSED = datetime(2026, 12, 1, 1, tzinfo=UTC)


async def _november(bk: BillingKit, cid: str) -> dict[str, Any]:
    await bk.add_book(V1)
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid", book="goes-flat")
    for day, tokens in [(5, 3_000_000), (20, 1_000_000)]:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-x", tokens, 0)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    return november


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_a_volume_version_s_usage_is_trued_up_when_a_later_version_makes_the_rule_flat(bk: BillingKit) -> None:
    november = await _november(bk, "goes-flat")
    lines = [(ln["kind"], ln["quantity"], ln["unit_price"], ln["tier"], ln["price_version"], ln["amount"])
             for ln in november["lines"]]
    assert sorted(lines, key=str) == sorted([
        ("usage", 1_000_000, "10", 0, "v1", "10.00"),
        ("usage", 2_000_000, "1", 1, "v1", "2.00"),
        ("usage", 1_000_000, "2", None, "v2", "2.00"),
        ("volume_true_up", 3_000_000, "1", 1, "v1", "-9.00"),
    ], key=str)
    assert (november["subtotals"]["true_ups"], november["total"]) == ("-9.00", "5.00")
    await _verified(bk)


async def test_a_rerate_to_the_flat_version_takes_the_true_up_back_to_zero(bk: BillingKit) -> None:
    """After that close, v3 (from November 1st to v2's 15th: `in` flat at $2/M, as v2) and November
    1st-15th re-rated to it: the 5th's 3,000,000 tokens $6.00 (-$6.00), the 20th's $2.00 under v2
    as it was; no usage of the period is left at volume tiers, so the
    -$9.00 true-up goes back to 0 (+$9.00): the re-rate moves +$3.00 and November ends at
    4,000,000 x $2/M = $8.00. Before the fix a re-rate took the latest version that rated the rule,
    found it flat and left whatever true-up was posted."""
    cid = "goes-flat-rerated"
    november = await _november(bk, cid)
    assert november["total"] == "5.00"
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book({**V2, "version": "v3", "effective_from": "2026-11-01T00:00:00Z"})
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec("goes-flat", "v3", NOV_1, NOV_15, None),
                                None)
    assert done["delta"] == "3.00"
    wallet = await bk.service.wallet(cid)
    assert wallet.receivable == 8_000_000_000
    await _verified(bk)


def _tiered(version: str, start: str, first: str = "10", beyond: str = "1") -> dict[str, Any]:
    return {"id": "flat-between", "version": version, "currency": "USD", "effective_from": start, "rules": [
        {"id": "in", "model": "model-x", "token_type": "input", "tier_mode": "volume",
         "tiers": [{"up_to": 1_000_000, "price": first}, {"up_to": None, "price": beyond}]}]}


async def test_the_units_a_flat_version_rated_reach_the_tier_at_the_close_as_the_counters_counted_them(
        bk: BillingKit) -> None:
    """v1 (from January) `in` volume-tiered, $10/M to 1,000,000, $1/M beyond; v2 (from November 10th)
    `in` flat $2/M; v3 (from the 20th) as v1. The 5th's 400,000 under v1: $4.00; the 15th's 800,000
    under v2: $1.60 (the rule's counter 1,200,000); the 25th's 300,000 under v3, rated on from the
    counter's 1,200,000: $1/M, $0.30. The close: the flat $1.60 final, but its 800,000 reach the tier
    with v1's and v3's: 1,500,000, the second tier: v1's 400,000 at $1/M = $0.40 less $4.00, -$3.60;
    v3's 300,000 at $1/M = $0.30 less $0.30, 0: November $4.00 + $1.60 + $0.30 - $3.60 = $2.30, the
    upcoming invoice on the 30th saying the same. Before, the close counted v1's and v3's 700,000
    alone (first tier, $10/M): v3's 300,000 $3.00 less the $0.30 its charge took at the counter's
    tier, +$2.70, November $8.60: what the period's counters priced the 25th at, the close took back.
    December 2nd, v1b (from November 1st: $9/M to 1,000,000, $0.50/M beyond) and November 1st-10th
    re-rated to it: the 5th $3.60 (-$0.40); the true-up at 1,500,000 (the flat 800,000 still count):
    v1b's 400,000 at $0.50/M = $0.20 less $3.60, -$3.40, where -$3.60 stands: +$0.20; the re-rate
    -$0.20, owed $2.10 (400,000 at $0.50/M + $1.60 + 300,000 at $1/M). Counting 700,000 there, the
    correction took v3's +$2.70 back in: +$6.30."""
    cid = "flat-between"
    await bk.add_book(_tiered("v1", "2026-01-01T00:00:00Z"))
    await bk.add_book({**V2, "id": "flat-between", "effective_from": "2026-11-10T00:00:00Z"})
    await bk.add_book(_tiered("v3", "2026-11-20T00:00:00Z"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid", book=cid)
    for day, tokens in [(5, 400_000), (15, 800_000), (25, 300_000)]:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-x", tokens, 0)
    bk.clock.now = datetime(2026, 11, 30, tzinfo=UTC)
    upcoming = await bk.upcoming(cid)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert [(x["subtotals"]["true_ups"], x["total"]) for x in (upcoming, november)] == [("-3.60", "2.30")] * 2
    assert [(ln["price_version"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in november["lines"]
            if ln["kind"] == "volume_true_up"] == [("v1", 400_000, "1", "-3.60")]
    await _verified(bk)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book(_tiered("v1b", "2026-11-01T00:00:00Z", "9", "0.5"))
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec(
        cid, "v1b", NOV_1, datetime(2026, 11, 10, tzinfo=UTC), None), None)
    assert done["delta"] == "-0.20", done
    assert (await bk.service.wallet(cid)).receivable == 2_100_000_000
    await _verified(bk)
