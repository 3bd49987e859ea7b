"""A true-up corrected up after the close takes back, of each charge, what the close gave back too
much from what got it: for a lot closed since (a grant revoked in whole, a lot expired and swept to
breakage after the period's end), from where the lot's money went when it closed, up to what it held
then. Had the close known the price, the lot would have held that much less when it closed, and the
revocation (promotions) or the sweep (breakage) got that much less; the customer's other lots paid
nothing of it. What the lot spent before it closed beyond that is paid like usage, by the live lots:
had it got less back, that usage would have fallen on them.

By hand. Book `vol` (test_rerate_volume_true_up), model-v output: $20/M up to 100,000 tokens, $10/M
beyond. November: 60,000 tokens on the 5th ($1.20), 70,000 on the 20th (40,000 x $20/M + 30,000 x
$10/M = $1.10). The close: 130,000 x $10/M = $1.30, true-up -$1.00: of the 5th $1.20 - $0.60 = $0.60,
of the 20th $1.10 - $0.70 = $0.40, each to what paid that charge."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_close_true_up_funding import _closed_per_charge, _paid_per_charge, _rerated, _rerated_again
from test_rerate_volume_true_up import CLOSED, live_lots, verified, vol_customer

from ledger.audit import trial_balance
from wallets import chart, expiry
from wallets.core.commands import ReverseGrant

CENT = 10_000_000  # atomic units (9 decimals) of $0.01
DEC_12 = datetime(2026, 12, 12, tzinfo=UTC)  # a re-rate after the sweep of December 10th
PROMOTIONS, BREAKAGE, REVENUE = (chart.promotions_account("USD"), chart.breakage_account("USD"),
                                 chart.revenue_account("USD"))


async def _credited(bk: BillingKit) -> dict[str, int]:
    """Every account's credits less debits; the trial balance sums to zero."""
    trial = await bk.db.read(lambda conn: trial_balance(conn, "USD"))
    out = {ln.account: ln.credits - ln.debits for ln in trial.lines}
    assert sum(out.values()) == 0 and trial.totals["USD"][0] == trial.totals["USD"][1]
    return out


def _moved(before: dict[str, int], after: dict[str, int], *accounts: str) -> tuple[int, ...]:
    return tuple(after.get(a, 0) - before.get(a, 0) for a in accounts)


async def _revoked(bk: BillingKit, cid: str, grant: str, tokens: int = 0) -> dict[str, int]:
    """December 1st: `tokens` more of model-v (December's own usage, at v1), then the grant revoked in
    whole; every account's credits less debits then."""
    bk.clock.now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    if tokens:
        await bk.event(cid, "model-v", 0, tokens)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=grant, reason="abuse"))
    return await _credited(bk)


async def test_a_true_up_corrected_up_takes_a_revoked_grant_s_part_back_from_its_revocation(fresh_db) -> None:
    """The top-up pays the 5th's $1.20, a $5.00 grant the 20th's $1.10; the close gives $0.60 back to
    the top-up ($0.60) and $0.40 to the grant ($4.30), which is revoked in whole (its $4.30 to
    promotions). Re-rated to $18/M and $12/M: the 5th 60,000 x $18/M = $1.08 (-$0.12), the 20th
    40,000 x $18/M + 30,000 x $12/M = $1.08 (-$0.02); at the tier reached 130,000 x $12/M = $1.56, the
    true-up $1.56 - $2.16 = -$0.60 where -$1.00 stands: +$0.40. The 5th at $12/M is $0.72, $0.36 under
    its $1.08 where $0.60 was given back: $0.24 from the top-up, less its $0.12: $0.60 - $0.12 = $0.48
    (= $1.20 - $0.72). The 20th at $12/M is $0.84, $0.24 under its $1.08 where $0.40 was given back:
    $0.16 from the grant, less its $0.02: $0.14, from promotions (the revocation), which had the
    close known the price would have revoked $5.00 - $1.08 + $0.24 = $4.16 = $4.30 - $0.14. Revenue
    +$0.26 = $0.12 + $0.14. Before, the grant's $0.16 was paid like usage by the top-up ($0.32) and
    the grant's $0.02 revoked again (promotions +$0.02): the customer's own money paid back what a
    promotion taken away had got."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "revoked-taken")
    before = await _revoked(bk, "revoked-taken", grant)
    assert await live_lots(bk, "revoked-taken") == {top_up: ("topup", 60 * CENT)}
    done, lots, after = await _rerated_from(bk, "revoked-taken", "18", "12")
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 48 * CENT)}
    assert _moved(before, after, PROMOTIONS, REVENUE, BREAKAGE) == (-14 * CENT, 26 * CENT, 0)
    assert after.get(chart.lot_account("revoked-taken", grant), 0) == 0  # the revoked grant holds nothing


async def test_a_true_up_corrected_up_takes_from_a_revoked_grant_s_revocation_at_most_what_it_revoked(
        fresh_db) -> None:
    """As above, but on December 1st, before the revocation, 320,000 tokens of December ($2.00 +
    220,000 x $10/M = $4.20) from the grant: it is revoked with $0.10 left. Had the close known the
    price, the grant would have held $4.16 (see above), paid $4.16 of the $4.20, the top-up the other
    $0.04 ($0.48 - $0.04 = $0.44), and nothing would have been revoked. So of the grant's $0.14
    (its $0.16 less its $0.02) the revocation gives back its $0.10 (promotions -$0.10) and $0.04 is
    paid like usage, by the top-up: $0.60 - $0.12 - $0.04 = $0.44; revenue +$0.26 = $0.12 + $0.04 +
    $0.10."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "revoked-capped")
    before = await _revoked(bk, "revoked-capped", grant, 320_000)
    assert before.get(chart.lot_account("revoked-capped", grant), 0) == 0 and await live_lots(bk, "revoked-capped") == {
        top_up: ("topup", 60 * CENT)}
    done, lots, after = await _rerated_from(bk, "revoked-capped", "18", "12")
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 44 * CENT)}
    assert _moved(before, after, PROMOTIONS, REVENUE, BREAKAGE) == (-10 * CENT, 26 * CENT, 0)


async def _seen(bk: BillingKit, cid: str, done: dict) -> tuple[dict, dict, dict[str, int]]:
    """`done` (a re-rate's answer), the customer's live lots and every account's credits less debits
    after it; verify passes."""
    lots, credited = await live_lots(bk, cid), await _credited(bk)
    await verified(bk)
    return done, lots, credited


async def _rerated_from(bk: BillingKit, cid: str, high: str, low: str,
                        on: datetime = datetime(2026, 12, 2, tzinfo=UTC)) -> tuple[dict, dict, dict[str, int]]:
    """November re-rated on `on` to $`high`/M up to 100,000 and $`low`/M beyond (`_rerated`), `_seen`."""
    return await _seen(bk, cid, await _rerated(bk, high, low, on=on))


async def _revoked_before_the_close(bk: BillingKit, name: str) -> tuple[str, str]:
    """A $1.20 top-up pays the 5th's $1.20, a $1.15 grant (the 6th) the 20th's $1.10 ($0.05 left),
    revoked in whole November 25th (promotions +$0.05). The customer's and the top-up's ids."""
    cid = await vol_customer(bk, name)
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "1.15", None))
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=grant, reason="abuse"))
    return cid, top_up


async def _spent_before_the_expiry(bk: BillingKit, cid: str, december_tokens: int) -> str:
    """A $1.20 grant expiring December 10th pays the 5th's $1.20; a $5.00 top-up (the 6th) the 20th's
    $1.10 ($3.90). The close: the 5th's $0.60 to the grant, live ($0.60), the 20th's $0.40 to the
    top-up ($4.30). December 3rd: `december_tokens` at $20/M from the grant. The top-up's id."""
    await vol_customer(bk, cid)
    _, top_up = await _paid_per_charge(bk, cid, ("grant", "1.20", datetime(2026, 12, 10, tzinfo=UTC)),
                                       ("topup", "5.00"))
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, december_tokens)
    return top_up


async def _expired_after_the_close(bk: BillingKit, cid: str, december_tokens: int) -> tuple[str, dict[str, int]]:
    """`_spent_before_the_expiry`; December 10th the grant expires, its remainder swept to breakage.
    The top-up's id, and every account's credits less debits then."""
    top_up = await _spent_before_the_expiry(bk, cid, december_tokens)
    bk.clock.now = datetime(2026, 12, 10, 12, tzinfo=UTC)
    await expiry.expire_grants(bk.db, bk.clock.now)
    return top_up, await _credited(bk)


async def test_a_true_up_corrected_up_takes_back_from_breakage_what_a_lot_expired_after_the_close_swept(
        fresh_db) -> None:
    """December 3rd, 10,000 tokens ($0.20) from the grant: $0.40 left, swept to breakage on the
    10th. Re-rated (December 12th) to $20/M and $15/M: the 20th 40,000 x $20/M + 30,000 x $15/M =
    $1.25 (+$0.15, paid like usage: the top-up, $4.15); at the tier reached 130,000 x $15/M = $1.95,
    the true-up $1.95 - $2.45 = -$0.50 where -$1.00 stands: +$0.50. The 5th at $15/M is $0.90, $0.30
    under its $1.20 where $0.60 was given back: $0.30 from the grant, swept, so from breakage
    ($0.40 - $0.30 = $0.10: had the close given the grant $0.30, it would have held $0.30 - $0.20 at
    its expiry); the 20th at $15/M is $1.05, $0.20 under its $1.25 where $0.40 was given back: $0.20
    from the top-up: $4.15 - $0.20 = $3.95 (= $5.00 - $1.05). Revenue +$0.65 = $0.15 + $0.30 + $0.20.
    Before, the grant's $0.30 was paid like usage by the top-up ($3.65) and breakage kept $0.40."""
    bk = BillingKit(fresh_db)
    top_up, before = await _expired_after_the_close(bk, "swept-taken", 10_000)
    assert (await live_lots(bk, "swept-taken"), before[BREAKAGE]) == ({top_up: ("topup", 430 * CENT)}, 40 * CENT)
    done, lots, after = await _rerated_from(bk, "swept-taken", "20", "15", on=DEC_12)
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 395 * CENT)}
    assert _moved(before, after, BREAKAGE, REVENUE, PROMOTIONS) == (-30 * CENT, 65 * CENT, 0)


async def test_a_true_up_corrected_up_takes_back_from_breakage_at_most_what_the_lot_swept(fresh_db) -> None:
    """December 3rd, 25,000 tokens ($0.50) from the grant: $0.10 left, swept on the 10th. Re-rated as
    above: of the 5th's $0.30, breakage gives the $0.10 the sweep moved ($0.00 left); the grant spent
    the other $0.20 before it expired, which, had the close given it $0.30, the top-up would have paid:
    paid like usage. The top-up: $4.30 - $0.15 - $0.20 - $0.20 = $3.75 (= $5.00 - $1.05 - $0.20, its
    December share). Revenue +$0.65."""
    bk = BillingKit(fresh_db)
    top_up, before = await _expired_after_the_close(bk, "swept-capped", 25_000)
    assert (await live_lots(bk, "swept-capped"), before[BREAKAGE]) == ({top_up: ("topup", 430 * CENT)}, 10 * CENT)
    done, lots, after = await _rerated_from(bk, "swept-capped", "20", "15", on=DEC_12)
    assert done["delta"] == "0.65", done
    assert lots == {top_up: ("topup", 375 * CENT)}
    assert _moved(before, after, BREAKAGE, REVENUE, PROMOTIONS) == (-10 * CENT, 65 * CENT, 0)


async def test_two_true_ups_corrected_up_take_from_a_revoked_grant_s_revocation_at_most_what_it_revoked_in_all(
        fresh_db) -> None:
    """The close gives $0.40 of the 20th back to the grant ($4.30), December's 320,000 tokens ($4.20)
    spend it to $0.10, then it is revoked in whole (promotions +$0.10). Re-rated to $20/M and $12/M:
    the 20th 40,000 x $20/M + 30,000 x $12/M = $1.16 (+$0.06, paid like usage: the top-up); at the
    tier reached 130,000 x $12/M = $1.56, the true-up $1.56 - $2.36 = -$0.80 where -$1.00 stands:
    +$0.20. The 5th at $12/M is $0.72, $0.48 under its $1.20 where $0.60 was given back: $0.12 from
    the top-up; the 20th at $12/M is $0.84, $0.32 under its $1.16 where $0.40 was given back: $0.08
    from the grant, from its revocation's $0.10 (promotions -$0.08). The top-up $0.60 - $0.06 - $0.12
    = $0.42. Re-rated again to $20/M and $14/M: the 20th $0.80 + $0.42 = $1.22 (+$0.06, the top-up);
    the true-up 130,000 x $14/M - ($1.20 + $1.22) = $1.82 - $2.42 = -$0.60 where -$0.80 stands:
    +$0.20. The 5th at $14/M is $0.84, $0.36 under its $1.20 where $0.48 is given back now: $0.12
    from the top-up; the 20th at $14/M is $0.98, $0.24 under its $1.22 where $0.32 is: $0.08 from the
    grant, of which its revocation has $0.10 - $0.08 = $0.02 left (promotions -$0.02: -$0.10 in all,
    nothing revoked, as had the close known $14/M: the grant $5.00 - $0.98 = $4.02 paying $4.02 of
    December's $4.20); the other $0.06 is paid like usage, by the top-up: $0.42 - $0.06 - $0.12 -
    $0.06 = $0.18 (= $1.20 - $0.84 - the $0.18 of December the grant would not have had). Revenue
    +$0.26 each. Before, the second re-rate took the whole $0.08 from promotions again (-$0.16 in all,
    $0.06 more than the revocation got) and the top-up ended at $0.24."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "revoked-twice")
    before = await _revoked(bk, "revoked-twice", grant, 320_000)
    assert before[PROMOTIONS] + 500 * CENT == 10 * CENT  # the grant's $5.00 out, its $0.10 revoked
    done, lots, once = await _rerated_from(bk, "revoked-twice", "20", "12")
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 42 * CENT)}
    assert _moved(before, once, PROMOTIONS, REVENUE, BREAKAGE) == (-8 * CENT, 26 * CENT, 0)
    done, lots, after = await _seen(bk, "revoked-twice", await _rerated_again(bk, "20", "14"))
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 18 * CENT)}
    assert _moved(once, after, PROMOTIONS, REVENUE, BREAKAGE) == (-2 * CENT, 26 * CENT, 0)
    assert _moved(before, after, PROMOTIONS) == (-10 * CENT,)


async def test_a_true_up_corrected_up_takes_from_promotions_what_the_close_gave_a_grant_revoked_before_it(
        fresh_db) -> None:
    """A $1.20 top-up pays the 5th's $1.20, a $1.15 grant (the 6th) the 20th's $1.10 ($0.05 left);
    November 25th the grant is revoked in whole (promotions +$0.05). The close gives the 5th's $0.60
    back to the top-up ($0.60) and the 20th's $0.40 to the revoked grant: revoked again (promotions
    +$0.40; $0.45 in all went there for the grant). Re-rated to $20/M and $12/M (as above): the 20th
    +$0.06 paid like usage (the top-up), the true-up +$0.20: the 5th's $0.12 from the top-up, the
    20th's $0.08 from the grant: from promotions, which got $0.45 for it (had the close known the
    price, it would have given the grant $0.32, and promotions got $0.37). The top-up $0.60 - $0.06 -
    $0.12 = $0.42, promotions -$0.08, revenue +$0.26. Before, the take was capped at the revocation's
    $0.05 (promotions -$0.05) and the other $0.03 paid like usage by the top-up ($0.39)."""
    bk = BillingKit(fresh_db)
    cid, top_up = await _revoked_before_the_close(bk, "revoked-early")
    bk.clock.now = CLOSED
    pre_close = await _credited(bk)
    await bk.close(CLOSED)
    before = await _credited(bk)
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT)}
    assert _moved(pre_close, before, PROMOTIONS) == (40 * CENT,)
    done, lots, after = await _rerated_from(bk, cid, "20", "12")
    assert done["delta"] == "0.26", done
    assert lots == {top_up: ("topup", 42 * CENT)}
    assert _moved(before, after, PROMOTIONS, REVENUE, BREAKAGE) == (-8 * CENT, 26 * CENT, 0)
