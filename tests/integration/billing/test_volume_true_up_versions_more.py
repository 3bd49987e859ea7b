"""Volume true-ups across price-book versions (review of aaa0677): a rule the version re-rated to
does not name, and a re-rate billed in the open period before a later version prices the rule flat
(or moving a volume version's units to a flat one).

Book rules are on model-x input. v1 (from January): `in` volume-tiered, $10/M up to 1,000,000
tokens, $1/M beyond. November 5th 3,000,000 tokens under v1, rated graduated: 1,000,000 x $10/M +
2,000,000 x $1/M = $12.00; November 20th 1,000,000 tokens under v2 (from the 15th) at $2/M = $2.00."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing_kit import BillingKit

from ledger.audit import verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS

NOV_1, NOV_15 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)
NOV_25 = datetime(2026, 11, 25, tzinfo=UTC)  # a re-rate before the close
CLOSED = datetime(2026, 12, 1, 1, tzinfo=UTC)


def _version(book: str, label: str, start: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": book, "version": label, "currency": "USD", "effective_from": start, "rules": rules}


def _volume(beyond: str) -> dict[str, Any]:
    return {"id": "in", "model": "model-x", "token_type": "input", "tier_mode": "volume",
            "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": beyond}]}


def _flat(rule_id: str) -> dict[str, Any]:
    return {"id": rule_id, "model": "model-x", "token_type": "input", "price": "2"}


async def _events(bk: BillingKit, cid: str) -> None:
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, billing_mode="postpaid", book=cid)
    for day, tokens in [(5, 3_000_000), (20, 1_000_000)]:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-x", tokens, 0)


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def _booked(bk: BillingKit, cid: str, v2_rule: dict[str, Any]) -> None:
    """v1 (`in` volume-tiered, $1/M beyond), v2 from the 15th with `v2_rule`, and November's two events."""
    await bk.add_book(_version(cid, "v1", "2026-01-01T00:00:00Z", [_volume("1")]))
    await bk.add_book(_version(cid, "v2", "2026-11-15T00:00:00Z", [v2_rule]))
    await _events(bk, cid)


async def _rerated(bk: BillingKit, cid: str, label: str, rule: dict[str, Any], start: datetime = NOV_1) -> str:
    """Version `label` from `start` with `rule` alone, and `start` to November 15th re-rated to it: its delta."""
    await bk.add_book(_version(cid, label, start.strftime("%Y-%m-%dT%H:%M:%SZ"), [rule]))
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec(cid, label, start, NOV_15, cid), None)
    return done["delta"]


def _shown(invoice: dict) -> tuple[str, str]:
    return invoice["subtotals"]["true_ups"], invoice["total"]


async def _closed(bk: BillingKit, cid: str) -> tuple[str, str]:
    """November closed, verify passing: its invoice's true-ups and total."""
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    await _verified(bk)
    return _shown(november)


async def test_a_rerate_to_a_version_without_the_volume_rule_takes_its_true_up_back_and_previews_so(
        bk: BillingKit) -> None:
    """v2 names no `in`: `in-b` flat $2/M. The close trues up `in` on v1's 3,000,000 alone: all at
    $1/M = $3.00 less $12.00, -$9.00; November $12.00 + $2.00 - $9.00 = $5.00. v3 (from November
    1st, as v2: `in-b` only) and November 1st-15th re-rated to it: the 5th 3,000,000 x $2/M = $6.00
    (-$6.00), `in` rates nothing left so its -$9.00 goes back to 0 (+$9.00): +$3.00, the preview
    saying what the apply does; November 4,000,000 x $2/M = $8.00."""
    cid = "flat-elsewhere"
    await _booked(bk, cid, _flat("in-b"))
    assert await _closed(bk, cid) == ("-9.00", "5.00")
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book(_version(cid, "v3", "2026-11-01T00:00:00Z", [_flat("in-b")]))
    spec = rerating.RerateSpec(cid, "v3", NOV_1, NOV_15, cid)
    seen = await rerating.preview(bk.db, bk.service.engine.books, spec)
    done = await rerating.apply(bk.db, bk.service.engine, spec, None)
    assert (seen["delta"], done["delta"]) == ("3.00", "3.00")
    assert (await bk.service.wallet(cid)).receivable == 8_000_000_000
    await _verified(bk)


async def test_a_rerate_in_the_open_period_still_trues_up_when_a_later_version_is_flat(bk: BillingKit) -> None:
    """v2 (from the 15th): `in` flat $2/M. On November 25th, before the close, v1b (from November
    1st: `in` $10/M to 1,000,000, $0.50/M beyond) and November 1st-15th re-rated to it: the 5th
    1,000,000 x $10/M + 2,000,000 x $0.50/M = $11.00 (-$1.00). The close trues up the units the
    volume-tiered versions rated, the 5th's 3,000,000 now at v1b: all at $0.50/M = $1.50 less
    $11.00, -$9.50; v2's $2.00 is final. November $11.00 + $2.00 - $9.50 = $3.50, as if the 5th
    had been rated under v1b from the start (3,000,000 x $0.50/M + $2.00)."""
    cid = "rerated-open-then-flat"
    await _booked(bk, cid, _flat("in"))
    bk.clock.now = NOV_25
    assert await _rerated(bk, cid, "v1b", _volume("0.5")) == "-1.00"
    assert await _closed(bk, cid) == ("-9.50", "3.50")


async def test_units_an_open_period_re_rate_moved_to_a_flat_version_are_final_at_its_price_and_reach_the_tier(
        bk: BillingKit) -> None:
    """v2 (from the 15th): `in` volume-tiered as v1; the 20th's 1,000,000, rated graduated on from the
    period's 3,000,000 so far, at $1/M = $1.00. On November 25th, before the close, v3 (from November
    1st: `in` flat $2/M) and November 1st-15th re-rated to it: the 5th 3,000,000 x $2/M = $6.00
    (-$6.00), final at that price. The close trues up v2's 1,000,000, its units reaching the tier
    with the flat 3,000,000 (as the counter that rated the 20th counted them): 4,000,000, $1/M,
    $1.00 less $1.00, nothing; November $6.00 + $1.00 = $7.00, as when v1 prices the rule flat and
    v2 by volume. Before, v2's 1,000,000 alone reached the first tier, $10/M: +$9.00, $16.00;
    counting every version's units at the latest version's (v2's) tiers: 4,000,000 at $1/M = $4.00
    less $12.00 + $1.00 - $6.00, -$3.00, November $4.00."""
    cid = "rerated-open-to-flat"
    await _booked(bk, cid, _volume("1"))
    bk.clock.now = NOV_25
    assert await _rerated(bk, cid, "v3", _flat("in")) == "-6.00"
    assert await _closed(bk, cid) == ("0.00", "7.00")
