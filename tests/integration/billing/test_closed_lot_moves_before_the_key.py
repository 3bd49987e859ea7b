"""What closes and re-rates written before their entries kept `closed_lots` (December 2026) gave to,
or took from, where a closed lot's money went for it (promotions for a grant revoked in whole,
breakage for an expired lot) still bounds what a later correction takes from there for it: read
from the entry's postings there, the one closed lot among the payers of the charges it corrected
being the one they were for. Such an entry is written here as the code before the key wrote it:
the same entry without `closed_lots` (money_back.closed_moves answering nothing).

By hand, as test_closed_lot_take_backs: book `vol`, model-v output $20/M up to 100,000 tokens, $10/M
beyond; November 60,000 tokens on the 5th ($1.20), 70,000 on the 20th (40,000 x $20/M + 30,000 x
$10/M = $1.10); the close's true-up -$1.00: $0.60 of the 5th, $0.40 of the 20th."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _closed_per_charge, _lot, _rerated, _rerated_again
from test_closed_lot_take_backs import (
    CENT,
    PROMOTIONS,
    REVENUE,
    _credited,
    _moved,
    _revoked,
    _revoked_before_the_close,
    _seen,
)
from test_rerate_volume_true_up import CLOSED, live_lots, verified, vol_customer

from wallets.core import money_back, rerating
from wallets.core.commands import ReverseGrant


async def _keys(bk: BillingKit, cid: str) -> list[tuple[str, bool]]:
    """The customer's close and re-rate entries (kind, whether it keeps `closed_lots`), in order."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        """SELECT kind, metadata ? 'closed_lots' FROM journal_entries
            WHERE customer_id = :c AND kind IN ('volume_true_up', 'rerate_adjustment') ORDER BY id"""),
        {"c": cid}))
    return [(kind, bool(kept)) for kind, kept in rows]


async def _closed_before_the_key(bk: BillingKit, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """November closed as the code before the key closed it (money_back.closed_moves answering
    nothing): every account's credits less debits before the close and after it."""
    bk.clock.now = CLOSED
    pre_close = await _credited(bk)
    with monkeypatch.context() as m:
        m.setattr(money_back, "closed_moves", lambda *_: {})
        await bk.close(CLOSED)
    return pre_close, await _credited(bk)


async def test_a_close_before_the_key_still_counts_what_it_revoked_again_for_a_revoked_grant(
        fresh_db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A $1.20 top-up pays the 5th's $1.20, a $1.15 grant (the 6th) the 20th's $1.10 ($0.05 left),
    revoked in whole November 25th (promotions +$0.05). The close, written before the key, gives the
    20th's $0.40 back to the revoked grant: revoked again, promotions +$0.40 ($0.45 in all for it),
    kept in no `closed_lots`. Re-rated to $20/M and $12/M: the 20th 40,000 x $20/M + 30,000 x $12/M
    = $1.16 (+$0.06, paid like usage: the top-up); the true-up 130,000 x $12/M = $1.56 less $2.36 =
    -$0.80 where -$1.00 stands: +$0.20, the 5th's $0.12 ($1.20 - $0.72 = $0.48 under, $0.60 given
    back) from the top-up, the 20th's $0.08 ($1.16 - $0.84 = $0.32 under, $0.40 given back) from the
    grant: from promotions, which got $0.45 for it. The top-up $0.60 - $0.06 - $0.12 = $0.42,
    promotions -$0.08, revenue +$0.26 (as where the close kept the key). Before, the close's $0.40
    counted nothing: the take was capped at the revocation's $0.05 (promotions -$0.05), the other
    $0.03 paid like usage by the top-up: $0.39, the customer paying $0.03 promotions had got."""
    bk = BillingKit(fresh_db)
    cid, top_up = await _revoked_before_the_close(bk, "keyless-close")
    pre_close, before = await _closed_before_the_key(bk, monkeypatch)
    assert _moved(pre_close, before, PROMOTIONS) == (40 * CENT,)
    assert await _keys(bk, cid) == [("volume_true_up", False)]
    done = await _rerated(bk, "20", "12")
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 42 * CENT)}
    assert _moved(before, await _credited(bk), PROMOTIONS, REVENUE) == (-8 * CENT, 26 * CENT)
    await verified(bk)


async def test_a_re_rate_before_the_key_still_counts_what_it_took_from_a_revocation(
        fresh_db, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close gives the 20th's $0.40 back to a $5.00 grant ($4.30), December's 320,000 tokens
    ($4.20) spend it to $0.10, then it is revoked in whole (promotions +$0.10). Re-rated, before the
    key, to $20/M and $12/M: the 20th +$0.06 (the top-up), the true-up +$0.20: the 5th's $0.12 from
    the top-up, the 20th's $0.08 from the grant's revocation (promotions -$0.08), kept in no
    `closed_lots`; the top-up $0.60 - $0.06 - $0.12 = $0.42. Re-rated again, now, to $20/M and $14/M:
    the 20th $0.80 + $0.42 = $1.22 (+$0.06, the top-up), the true-up 130,000 x $14/M = $1.82 less
    $2.42 = -$0.60 where -$0.80 stands: +$0.20; the 5th's $0.12 ($1.20 - $0.84 = $0.36 under, $0.48
    given back) from the top-up, the 20th's $0.08 ($1.22 - $0.98 = $0.24 under, $0.32 given back)
    from the grant, whose revocation has $0.10 - $0.08 = $0.02 left: promotions -$0.02 (-$0.10 in
    all, what it got), the other $0.06 paid like usage by the top-up: $0.42 - $0.06 - $0.12 - $0.06
    = $0.18. Before, the first re-rate's -$0.08 counted nothing: promotions gave the $0.08 again
    (-$0.16 in all for a $0.10 revocation) and the top-up ended at $0.24."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "keyless-rerate")
    before = await _revoked(bk, "keyless-rerate", grant, 320_000)
    with monkeypatch.context() as m:
        m.setattr(rerating, "closed_moves", lambda *_: {})
        done = await _rerated(bk, "20", "12")
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, "keyless-rerate") == {top_up: ("topup", 42 * CENT)}
    once = await _credited(bk)
    assert _moved(before, once, PROMOTIONS) == (-8 * CENT,)
    done, lots, after = await _seen(bk, "keyless-rerate", await _rerated_again(bk, "20", "14"))
    assert done["delta"] == "0.26", done
    assert await _keys(bk, "keyless-rerate") == [
        ("volume_true_up", False), ("rerate_adjustment", False), ("rerate_adjustment", True)]
    assert lots == {top_up: ("topup", 18 * CENT)}
    assert _moved(once, after, PROMOTIONS, REVENUE) == (-2 * CENT, 26 * CENT)
    assert _moved(before, after, PROMOTIONS) == (-10 * CENT,)


async def test_a_close_before_the_key_that_gave_to_two_revoked_grants_counts_what_it_gave_for_neither(
        fresh_db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A $1.25 grant A pays the 5th's $1.20 ($0.05 left) and is revoked in whole November 10th
    (promotions +$0.05); a $1.15 grant B (the 6th) pays the 20th's $1.10 ($0.05 left), revoked
    November 25th (+$0.05); a $1.00 top-up on the 26th. The close, written before the key, gives the
    5th's $0.60 to A and the 20th's $0.40 to B, both revoked again: one posting of $1.00 on
    promotions, and which grant it was for is not kept. Counted for neither, each is bounded by its
    revocation's $0.05. Re-rated to $20/M and $12/M: the 20th +$0.06 paid like usage (the top-up);
    the true-up +$0.20: the 5th's $0.12 from A, $0.05 from promotions and $0.07 like usage; the
    20th's $0.08 from B, $0.05 from promotions and $0.03 like usage. The top-up $1.00 - $0.06 - $0.07
    - $0.03 = $0.84, promotions -$0.10, revenue +$0.26: never more from promotions for a grant than
    went there for it ($0.65 for A, $0.45 for B), where the customer pays $0.10 promotions got (had
    the close kept the key: $0.12 and $0.08 from promotions, the top-up $0.94)."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "keyless-two")
    first = await _lot(bk, cid, "grant", "1.25")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 60_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    second = await _lot(bk, cid, "grant", "1.15")
    bk.clock.now = datetime(2026, 11, 10, tzinfo=UTC)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=first, reason="abuse"))
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 70_000)
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=second, reason="abuse"))
    bk.clock.now = datetime(2026, 11, 26, tzinfo=UTC)
    top_up = await _lot(bk, cid, "topup", "1.00")
    pre_close, before = await _closed_before_the_key(bk, monkeypatch)
    assert _moved(pre_close, before, PROMOTIONS) == (100 * CENT,)
    assert await live_lots(bk, cid) == {top_up: ("topup", 100 * CENT)}
    done = await _rerated(bk, "20", "12")
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 84 * CENT)}
    assert _moved(before, await _credited(bk), PROMOTIONS, REVENUE) == (-10 * CENT, 26 * CENT)
    await verified(bk)
