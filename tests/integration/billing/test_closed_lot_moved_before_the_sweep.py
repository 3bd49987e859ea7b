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
from test_close_true_up_funding import _rerated_again
from test_closed_lot_take_backs import (
    BREAKAGE,
    CENT,
    DEC_12,
    _credited,
    _moved,
    _rerated_from,
    _seen,
    _spent_before_the_expiry,
)

from wallets import expiry

DEC_10_NOON = datetime(2026, 12, 10, 12, tzinfo=UTC)  # after the expiry, before the sweep
DEC_11 = datetime(2026, 12, 11, tzinfo=UTC)  # the sweep


async def _swept(bk: BillingKit, cid: str) -> tuple[int | None, ...]:
    """The grant's expired_amount (None: not swept)."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT expired_amount FROM lots WHERE customer_id = :c AND kind = 'grant'"), {"c": cid}))
    return tuple(None if a is None else int(a) for (a,) in rows)


def _top_up_alone(lots: dict, top_up: str) -> int:
    """The balance of the top-up, the customer's only live lot."""
    [(lot, (kind, balance))] = lots.items()
    assert (lot, kind) == (top_up, "topup"), lots
    return balance


async def _around_the_sweep(bk: BillingKit, cid: str, beyond: str) -> dict[str, object]:
    """The module's set-up; re-rated on the 10th at 12:00 (the grant expired, not swept) to $20/M and
    $`beyond`/M; the sweep on the 11th; re-rated on the 12th to $20/M flat. Each re-rate's delta,
    the top-up's balance after it and what it moved to breakage; what the sweep moved to breakage
    (the grant not swept before it), and breakage over all."""
    top_up = await _spent_before_the_expiry(bk, cid, 10_000)
    before = await _credited(bk)
    first, lots, once = await _rerated_from(bk, cid, "20", beyond, on=DEC_10_NOON)
    assert await _swept(bk, cid) == (None,)
    kept = _top_up_alone(lots, top_up)
    bk.clock.now = DEC_11
    await expiry.expire_grants(bk.db, bk.clock.now)
    assert await _swept(bk, cid) == (40 * CENT,)
    swept = await _credited(bk)
    second, lots, after = await _seen(bk, cid, await _rerated_again(bk, "20", "20", DEC_12))
    return {"before the sweep": (first["delta"], kept, *_moved(before, once, BREAKAGE)),
            "the sweep": _moved(once, swept, BREAKAGE),
            "after the sweep": (second["delta"], _top_up_alone(lots, top_up), *_moved(swept, after, BREAKAGE)),
            "breakage over all": _moved(before, after, BREAKAGE)}


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
    assert await _around_the_sweep(BillingKit(fresh_db), "taken-before-the-sweep", "15") == {
        "before the sweep": ("0.65", 395 * CENT, -30 * CENT), "the sweep": (40 * CENT,),
        "after the sweep": ("0.65", 340 * CENT, -10 * CENT), "breakage over all": (0,)}


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
    assert await _around_the_sweep(BillingKit(fresh_db), "given-before-the-sweep", "5") == {
        "before the sweep": ("-0.65", 465 * CENT, 30 * CENT), "the sweep": (40 * CENT,),
        "after the sweep": ("1.95", 340 * CENT, -70 * CENT), "breakage over all": (0,)}
