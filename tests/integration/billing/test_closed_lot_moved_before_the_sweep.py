"""A guard (held when written): a correction dated after a grant expired but written before
its sweep is read through the date condition of store.load_payers (`occurred_at >= expiry`); if
its `closed_lots` recorded a move for the lot, is the bound (Lot.closed_with = the swept amount +
the moves since) counting that money twice? By hand, no: a correction to an expired lot never
moves the lot's own balance (money_back.taken_from / give_back send it to breakage), so the sweep
sweeps what the lot held, untouched by the correction, and the correction's move is counted once,
in `since`. Book `vol`, model-v output $20/M up to 100,000 tokens, $10/M beyond (see
test_closed_lot_take_backs). A $1.20 grant expiring December 10th pays the 5th's $1.20, a $5.00
top-up (the 6th) the 20th's $1.10 ($3.90); the close (-$1.00) gives the 5th's $0.60 to the grant
($0.60), the 20th's $0.40 to the top-up ($4.30). December 3rd 10,000 tokens ($0.20) from the
grant: $0.40 left. It expires December 10th 00:00; the first re-rate runs on the 10th at 12:00
(expired, not swept); the sweep on the 11th; the second re-rate on the 12th."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _paid_per_charge, _rerated_again
from test_closed_lot_take_backs import BREAKAGE, CENT, DEC_12, _credited, _moved, _rerated_from, _seen
from test_rerate_volume_true_up import CLOSED, vol_customer

from wallets import expiry

DEC_10_NOON = datetime(2026, 12, 10, 12, tzinfo=UTC)  # after the expiry, before the sweep
DEC_11 = datetime(2026, 12, 11, tzinfo=UTC)  # the sweep


async def _expired_not_swept(bk: BillingKit, cid: str) -> str:
    await vol_customer(bk, cid)
    _, top_up = await _paid_per_charge(bk, cid, ("grant", "1.20", datetime(2026, 12, 10, tzinfo=UTC)),
                                       ("topup", "5.00"))
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 10_000)
    return top_up


async def _swept(bk: BillingKit, cid: str) -> tuple[int | None, ...]:
    """The grant's expired_amount (None: not swept)."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT expired_amount FROM lots WHERE customer_id = :c AND kind = 'grant'"), {"c": cid}))
    return tuple(None if a is None else int(a) for (a,) in rows)


async def test_a_take_back_written_after_the_expiry_before_the_sweep_is_counted_once(fresh_db) -> None:
    """Re-rated on the 10th at 12:00 (the grant expired, not swept) to $20/M and $15/M: the 20th
    40,000 x $20/M + 30,000 x $15/M = $1.25 (+$0.15, the top-up); true-up 130,000 x $15/M = $1.95
    less $2.45 = -$0.50 where -$1.00 stands: +$0.50; the 5th at $15/M $0.90, $0.30 under, $0.60
    given: $0.30 from the grant's side, expired: breakage -$0.30 (closed_lots -$0.30; bound then its
    balance $0.40); the 20th at $15/M $1.05, $0.20 under, $0.40 given: $0.20 from the top-up:
    $4.30 - $0.15 - $0.20 = $3.95. Delta $0.15 + $0.50 = $0.65. The sweep (11th): the grant's $0.40
    (untouched by the re-rate) to breakage. Re-rated on the 12th to $20/M flat: the 20th $1.40
    (+$0.15, the top-up); true-up 130,000 x $20/M = $2.60 less $2.60 = 0 where -$0.50 stands: +$0.50;
    the 5th's $0.30 from the grant's side, bound $0.40 swept - $0.30 moved = $0.10: breakage -$0.10,
    $0.20 like usage from the top-up; the 20th's $0.20 from the top-up. Top-up $3.95 - $0.15 - $0.20
    - $0.20 = $3.40 (= $5.00 - $1.40 - the grant's December $0.20); breakage over all -$0.30 + $0.40
    - $0.10 = 0 (the grant paid $1.20 + $0.20 = $1.40 > its $1.20 at full price: nothing expired).
    Counted twice, the bound would be $0.40 - $0.30 - $0.30 < 0: breakage 0, top-up $3.30; or, not
    counted, $0.40: breakage -$0.30 (-$0.20 over all), top-up $3.60."""
    bk = BillingKit(fresh_db)
    cid = "taken-before-the-sweep"
    top_up = await _expired_not_swept(bk, cid)
    before = await _credited(bk)
    done, lots, once = await _rerated_from(bk, cid, "20", "15", on=DEC_10_NOON)
    assert await _swept(bk, cid) == (None,)
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 395 * CENT)}
    assert _moved(before, once, BREAKAGE) == (-30 * CENT,)
    bk.clock.now = DEC_11
    await expiry.expire_grants(bk.db, bk.clock.now)
    assert await _swept(bk, cid) == (40 * CENT,)
    swept = await _credited(bk)
    assert _moved(once, swept, BREAKAGE) == (40 * CENT,)
    done, lots, after = await _seen(bk, cid, await _rerated_again(bk, "20", "20", DEC_12))
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 340 * CENT)}
    assert _moved(swept, after, BREAKAGE) == (-10 * CENT,)
    assert _moved(before, after, BREAKAGE) == (0,)


async def test_a_give_back_written_after_the_expiry_before_the_sweep_is_counted_once(fresh_db) -> None:
    """Re-rated on the 10th at 12:00 (expired, not swept) to $20/M and $5/M: the 20th 40,000 x $20/M
    + 30,000 x $5/M = $0.95 (-$0.15, to the top-up); true-up 130,000 x $5/M = $0.65 less $2.15 =
    -$1.50 where -$1.00 stands: -$0.50; the 5th at $5/M $0.30, $0.90 under, $0.60 given: $0.30 more
    to the grant's side, expired: breakage +$0.30 (closed_lots +$0.30); the 20th at $5/M $0.35, $0.60
    under, $0.40 given: $0.20 to the top-up: $4.30 + $0.15 + $0.20 = $4.65. Delta -$0.65. The sweep:
    $0.40 to breakage. Re-rated on the 12th to $20/M flat: the 20th $1.40 (+$0.45, the top-up);
    true-up 0 where -$1.50 stands: +$1.50; the 5th's $0.90 from the grant's side, bound $0.40 swept +
    $0.30 moved = $0.70: breakage -$0.70, $0.20 like usage from the top-up; the 20th's $0.60 from
    the top-up. Top-up $4.65 - $0.45 - $0.20 - $0.60 = $3.40; breakage over all +$0.30 + $0.40 -
    $0.70 = 0. Delta $0.45 + $1.50 = $1.95. Counted twice (bound $1.00): breakage -$0.90 (-$0.20
    over all), the top-up $3.60; not counted (bound $0.40): breakage -$0.40, top-up $3.10."""
    bk = BillingKit(fresh_db)
    cid = "given-before-the-sweep"
    top_up = await _expired_not_swept(bk, cid)
    before = await _credited(bk)
    done, lots, once = await _rerated_from(bk, cid, "20", "5", on=DEC_10_NOON)
    assert await _swept(bk, cid) == (None,)
    assert done["delta"] == "-0.65", done
    assert lots == {top_up: ("topup", 465 * CENT)}
    assert _moved(before, once, BREAKAGE) == (30 * CENT,)
    bk.clock.now = DEC_11
    await expiry.expire_grants(bk.db, bk.clock.now)
    assert await _swept(bk, cid) == (40 * CENT,)
    swept = await _credited(bk)
    done, lots, after = await _seen(bk, cid, await _rerated_again(bk, "20", "20", DEC_12))
    assert done["delta"] == "1.95", done
    assert lots == {top_up: ("topup", 340 * CENT)}
    assert _moved(swept, after, BREAKAGE) == (-70 * CENT,)
    assert _moved(before, after, BREAKAGE) == (0,)
