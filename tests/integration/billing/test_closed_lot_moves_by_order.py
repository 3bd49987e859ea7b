"""Which close and re-rate entries count towards a revoked grant's bound (Lot.closed_with,
store.load_payers) is a matter of order, not of the servers' clocks: a correction applied after the
revocation, by a server whose clock reads a few milliseconds behind the one that revoked the grant,
saw the grant revoked and kept what it took from promotions for it (`closed_lots`), though its
entry is dated before the revocation's time. By hand, as test_closed_lot_take_backs: book `vol`,
model-v output $20/M up to 100,000 tokens, $10/M beyond; November 60,000 tokens on the 5th ($1.20),
70,000 on the 20th (40,000 x $20/M + 30,000 x $10/M = $1.10); the close's true-up -$1.00: $0.60 of
the 5th, $0.40 of the 20th."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from billing_kit import BillingKit
from test_close_true_up_funding import _closed_per_charge, _rerated_again
from test_closed_lot_take_backs import (
    BREAKAGE,
    CENT,
    DEC_12,
    PROMOTIONS,
    REVENUE,
    _credited,
    _moved,
    _rerated_from,
    _revoked,
    _seen,
    _spent_before_the_expiry,
)
from test_rerate_volume_true_up import live_lots

from wallets import expiry
from wallets.core.commands import ReverseGrant

REVOKED = datetime(2026, 12, 1, 12, tzinfo=UTC)  # _revoked's time


async def test_a_re_rate_dated_before_the_revocation_by_a_clock_behind_still_counts_what_it_took(fresh_db) -> None:
    """The close gives the 20th's $0.40 back to a $5.00 grant ($4.30), December's 320,000 tokens
    (100,000 x $20/M + 220,000 x $10/M = $4.20) spend it to $0.10, then it is revoked in whole at
    12:00 (promotions +$0.10). Re-rated after that, by a server whose clock reads 3 ms behind
    (11:59:59.997), to $20/M and $12/M: the 20th 40,000 x $20/M + 30,000 x $12/M = $1.16 (+$0.06,
    the top-up), the true-up 130,000 x $12/M = $1.56 less $2.36 = -$0.80 where -$1.00 stands: +$0.20,
    the 5th's $0.12 from the top-up, the 20th's $0.08 from the grant's revocation (promotions -$0.08,
    kept in its `closed_lots`); the top-up $0.60 - $0.06 - $0.12 = $0.42. Re-rated again on the
    3rd to $20/M and $14/M: the 20th $0.80 + $0.42 = $1.22 (+$0.06, the top-up), the true-up
    130,000 x $14/M = $1.82 less $2.42 = -$0.60 where -$0.80 stands: +$0.20; the 5th's $0.12 from the
    top-up, the 20th's $0.08 from the grant, whose revocation has $0.10 - $0.08 = $0.02 left:
    promotions -$0.02 (-$0.10 in all, what it got), the other $0.06 paid like usage by the top-up:
    $0.42 - $0.06 - $0.12 - $0.06 = $0.18. Read by the entries' dates (since 12:00), the first
    re-rate's -$0.08 counted nothing: promotions gave $0.08 again (-$0.16 in all for a $0.10
    revocation) and the top-up ended at $0.24."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "skewed-rerate")
    before = await _revoked(bk, "skewed-rerate", grant, 320_000)
    done, lots, once = await _rerated_from(bk, "skewed-rerate", "20", "12", on=REVOKED - timedelta(milliseconds=3))
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 42 * CENT)}
    assert _moved(before, once, PROMOTIONS) == (-8 * CENT,)
    done, lots, after = await _seen(bk, "skewed-rerate", await _rerated_again(bk, "20", "14"))
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 18 * CENT)}
    assert _moved(once, after, PROMOTIONS, REVENUE) == (-2 * CENT, 26 * CENT)
    assert _moved(before, after, PROMOTIONS) == (-10 * CENT,)


async def test_a_re_rate_dated_more_than_a_day_before_the_revocation_still_counts_what_it_took(fresh_db) -> None:
    """As above, the revocation written by a server whose clock reads a day and 3 ms ahead of the one
    that re-rates after it: revoked_at December 2nd 13:00:00.003, the re-rate dated the 1st 13:00.
    The same figures by hand: the first re-rate +$0.26, promotions -$0.08 for the grant (its
    `closed_lots`), the top-up $0.42; the second (the 3rd) +$0.26, promotions -$0.02, the top-up
    $0.18. The bound read the entries dated from a day (chain.DATED_AHEAD) before revoked_at, so the
    first re-rate, after the revocation's entry but dated a day and 3 ms before it, counted nothing:
    promotions gave $0.08 again (-$0.16 for a $0.10 revocation), the top-up $0.24."""
    bk = BillingKit(fresh_db)
    cid = "revoked-a-day-ahead"
    top_up, grant = await _closed_per_charge(bk, cid)
    bk.clock.now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 320_000)
    bk.clock.now = datetime(2026, 12, 2, 13, 0, 0, 3000, tzinfo=UTC)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=grant, reason="abuse"))
    before = await _credited(bk)
    done, lots, once = await _rerated_from(bk, cid, "20", "12", on=datetime(2026, 12, 1, 13, tzinfo=UTC))
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 42 * CENT)}
    assert _moved(before, once, PROMOTIONS) == (-8 * CENT,)
    done, lots, after = await _seen(bk, cid, await _rerated_again(bk, "20", "14"))
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 18 * CENT)}
    assert _moved(once, after, PROMOTIONS, REVENUE) == (-2 * CENT, 26 * CENT)
    assert _moved(before, after, PROMOTIONS) == (-10 * CENT,)


# 3 ms behind (fd4a20c), and a day and 3 ms: past the day (chain.DATED_AHEAD) before the expiry the
# bound read from, the first re-rate counted nothing (breakage -$0.60, the top-up $3.60)
@pytest.mark.parametrize("behind", [timedelta(milliseconds=3), timedelta(days=1, milliseconds=3)],
                         ids=["3ms", "a-day-and-3ms"])
async def test_a_re_rate_dated_before_the_expiry_by_a_clock_behind_after_the_sweep_still_counts_what_it_took(
        fresh_db, behind: timedelta) -> None:
    """A $1.20 grant expiring December 10th pays the 5th's $1.20, a $5.00 top-up (the 6th) the 20th's
    $1.10 ($3.90); the close gives the 5th's $0.60 to the grant ($0.60), the 20th's $0.40 to the
    top-up ($4.30). December 3rd 10,000 tokens ($0.20) from the grant: $0.40 left, swept to breakage
    at 00:00:00.001 on the 10th. Re-rated after the sweep by a server whose clock reads 3 ms behind
    (9th, 23:59:59.998, before the expiry) to $20/M and $15/M: the 20th 40,000 x $20/M + 30,000 x
    $15/M = $1.25 (+$0.15, the top-up); the true-up 130,000 x $15/M = $1.95 less $2.45 = -$0.50 where
    -$1.00 stands: +$0.50, the 5th's $0.30 ($1.20 - $0.90 under, $0.60 given back) from the grant,
    swept: breakage -$0.30 (kept in its `closed_lots`); the 20th's $0.20 ($1.25 - $1.05, $0.40 given
    back) from the top-up: $4.30 - $0.15 - $0.20 = $3.95. Re-rated again on the 12th to $20/M flat:
    the 20th $0.80 + $0.60 = $1.40 (+$0.15, the top-up); the true-up 130,000 x $20/M = $2.60 less
    $2.60 = 0 where -$0.50 stands: +$0.50; the 5th's $0.30 given back, none under: $0.30 from the
    grant, whose sweep has $0.40 - $0.30 = $0.10 left: breakage -$0.10 (-$0.40 in all, what it
    swept), the other $0.20 paid like usage by the top-up; the 20th's $0.20 given back, none under:
    the top-up. The top-up $3.95 - $0.15 - $0.20 - $0.20 = $3.40 (= $5.00 - $1.40 - the grant's
    December $0.20). Read by the entries' dates (since the expiry), the first re-rate's -$0.30
    counted nothing: breakage gave $0.30 again (-$0.60 for a $0.40 sweep), the top-up $3.60."""
    bk = BillingKit(fresh_db)
    cid = "skewed-sweep"
    top_up = await _spent_before_the_expiry(bk, cid, 10_000)
    bk.clock.now = datetime(2026, 12, 10, 0, 0, 0, 1000, tzinfo=UTC)
    await expiry.expire_grants(bk.db, bk.clock.now)
    before = await _credited(bk)
    assert await live_lots(bk, cid) == {top_up: ("topup", 430 * CENT)}
    done, lots, once = await _rerated_from(bk, cid, "20", "15", on=bk.clock.now - behind)  # the sweep's 00:00:00.001
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 395 * CENT)}
    assert _moved(before, once, BREAKAGE) == (-30 * CENT,)
    done, lots, after = await _seen(bk, cid, await _rerated_again(bk, "20", "20", DEC_12))
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 340 * CENT)}
    assert _moved(once, after, BREAKAGE) == (-10 * CENT,)
