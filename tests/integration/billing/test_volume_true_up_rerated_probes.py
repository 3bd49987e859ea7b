"""Volume true-ups of charges re-rated in the open period (review of 6898ba4): the upcoming invoice
says what the close posts, two re-rates of one charge (the last counts), a charge re-rated back to
its version, a re-rate in the grace window billed in the next period.

Book rules are on model-x input. v1 (from January): `in` volume-tiered, $10/M up to 1,000,000
tokens, $1/M beyond; v2 (from the 15th): `in` flat $2/M. November 5th 3,000,000 tokens under v1,
rated graduated: 1,000,000 x $10/M + 2,000,000 x $1/M = $12.00; November 20th 1,000,000 tokens
under v2 at $2/M = $2.00."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_volume_true_up_versions_more import NOV_25, _booked, _closed, _flat, _rerated, _shown, _volume

NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)
NOV_30 = datetime(2026, 11, 30, tzinfo=UTC)


async def _re_rated_twice(bk: BillingKit, cid: str, label: str, beyond: str) -> tuple:
    """The module's November; on the 25th, v1b (from November 1st, $0.50/M beyond 1,000,000) and the
    5th re-rated to it, then version `label` (from November 2nd, $`beyond`/M beyond) and November
    2nd-15th re-rated to it; on the 30th the upcoming invoice, then the close. The two deltas, the
    upcoming invoice's true-ups and total, November's."""
    await _booked(bk, cid, _flat("in"))
    bk.clock.now = NOV_25
    first = await _rerated(bk, cid, "v1b", _volume("0.5"))
    second = await _rerated(bk, cid, label, _volume(beyond), NOV_2)
    bk.clock.now = NOV_30
    upcoming = _shown(await bk.upcoming(cid))
    return first, second, upcoming, await _closed(bk, cid)


async def test_two_re_rates_of_one_charge_the_last_counts_and_the_upcoming_invoice_says_so(bk: BillingKit) -> None:
    """November 25th: v1b (from November 1st, $0.50/M beyond 1,000,000) and the 5th re-rated to it:
    $10.00 + $1.00 = $11.00 (-$1.00); then v1c ($0.25/M beyond) and re-rated again: $10.00 + $0.50 =
    $10.50 (-$0.50), v1c from November 2nd and the range November 2nd-15th (a re-rate's version is in force
    throughout its range). The close trues up v1c's 3,000,000 at $0.25/M = $0.75 less $10.50: -$9.75;
    November $10.50 + $2.00 - $9.75 = $2.75, the upcoming invoice before the close saying the same."""
    assert await _re_rated_twice(bk, "rerated-twice", "v1c", "0.25") == (
        "-1.00", "-0.50", ("-9.75", "2.75"), ("-9.75", "2.75"))


async def test_a_charge_re_rated_back_to_its_price_is_trued_up_as_if_never_re_rated(bk: BillingKit) -> None:
    """The 5th re-rated to v1b ($11.00, -$1.00) then back to v1's tiers, v1d from November 2nd ($1/M
    beyond; v1 itself is no longer in force on the 5th, so no re-rate can name it): $12.00, +$1.00. The close trues up
    v1d's 3,000,000 at $1/M = $3.00 less $12.00: -$9.00; November $12.00 + $2.00 - $9.00 = $5.00, as
    with no re-rate (v2 flat counts for no tier)."""
    assert await _re_rated_twice(bk, "rerated-back", "v1d", "1") == (
        "-1.00", "1.00", ("-9.00", "5.00"), ("-9.00", "5.00"))


async def test_a_re_rate_in_the_grace_window_billed_in_december_counts_at_novembers_close(bk: BillingKit) -> None:
    """December 1st 00:30, in November's grace window (an hour): v1b and the 5th re-rated to it,
    -$1.00 billed in December. November's close trues up v1b's 3,000,000 at $0.50/M = $1.50 less
    $11.00: -$9.50; November's invoice $12.00 + $2.00 - $9.50 = $4.50 (the -$1.00 is December's)."""
    cid = "rerated-in-grace"
    await _booked(bk, cid, _flat("in"))
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert await _rerated(bk, cid, "v1b", _volume("0.5")) == "-1.00"
    assert (await _closed(bk, cid))[0] == "-9.50"


async def test_units_re_rated_in_the_open_period_to_a_rule_of_another_id_leave_the_volume_rule(bk: BillingKit) -> None:
    """v2 (from the 15th) names no `in`: `in-b` flat $2/M, the 20th $2.00. November 25th, before the
    close: v3 (from November 1st, `in-b` only) and the 5th re-rated to it, 3,000,000 x $2/M = $6.00
    (-$6.00). `in` rates nothing left in November: no true-up; November $6.00 + $2.00 = $8.00, what
    the same re-rate after the close leaves (test_volume_true_up_versions_more)."""
    cid = "rerated-open-elsewhere"
    await _booked(bk, cid, _flat("in-b"))
    bk.clock.now = NOV_25
    assert await _rerated(bk, cid, "v3", _flat("in-b")) == "-6.00"
    upcoming = _shown(await bk.upcoming(cid))
    assert (upcoming, await _closed(bk, cid)) == (("0.00", "8.00"), ("0.00", "8.00"))
