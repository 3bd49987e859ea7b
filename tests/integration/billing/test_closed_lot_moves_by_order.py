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

from billing_kit import BillingKit
from test_close_true_up_funding import _closed_per_charge, _rerated
from test_closed_lot_take_backs import CENT, PROMOTIONS, REVENUE, _credited, _moved, _revoked
from test_rerate_volume_true_up import applied, live_lots, spec, verified, vol

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
    done = await _rerated(bk, "20", "12", on=REVOKED - timedelta(milliseconds=3))
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, "skewed-rerate") == {top_up: ("topup", 42 * CENT)}
    once = await _credited(bk)
    assert _moved(before, once, PROMOTIONS) == (-8 * CENT,)
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", "20", "14"))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    done = await applied(bk, spec("v3", datetime(2026, 11, 2, tzinfo=UTC)))
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, "skewed-rerate") == {top_up: ("topup", 18 * CENT)}
    after = await _credited(bk)
    assert _moved(once, after, PROMOTIONS, REVENUE) == (-2 * CENT, 26 * CENT)
    assert _moved(before, after, PROMOTIONS) == (-10 * CENT,)
    await verified(bk)
