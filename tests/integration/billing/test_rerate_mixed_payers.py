"""A re-rate whose charges move both ways, their payers closed since or of three kinds: each decrease
goes back where its money came from, each increase is paid like usage (README, Re-rates: "Whatever
the net").

By hand. Book `vol` v1 (test_rerate_volume_true_up.V1), model-v output graduated per charge: $20/M
to 100,000 tokens, $10/M beyond. November: 60,000 tokens on the 5th ($1.20), 70,000 on the 20th
(40,000 x $20/M + 30,000 x $10/M = $0.80 + $0.30 = $1.10). Re-rated on December 2nd, November open
(no close, no true-up), to v2 from November 1st."""
from __future__ import annotations

from datetime import UTC, datetime

from billing_kit import BillingKit
from test_close_true_up_funding import CENT, NOV_25, _balanced, _breakage, _credited, _lot, _paid_per_charge, _rerated
from test_rerate_volume_true_up import V1, applied, lines, live_lots, previewed, spec, vol, vol_customer

from wallets import chart


async def _paid_off_on_the_6th(bk: BillingKit, name: str, grant: str) -> tuple[str, str]:
    """Prepaid with a $5.00 overdraft: the 5th's $1.20 on the receivable, paid off on the 6th by a
    $1.20 top-up (nothing owed, no lot); a `grant` given on the 6th pays the 20th's $1.10. The
    customer's and the grant's ids."""
    await bk.add_book(V1)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(name, book="vol", overdraft="5.00")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 60_000)
    assert (await bk.service.wallet(cid)).receivable == 120 * CENT
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    await bk.top_up(cid, "1.20")
    grant_id = await _lot(bk, cid, "grant", grant)
    assert (await bk.service.wallet(cid)).receivable == 0
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 70_000)
    return cid, grant_id


async def test_a_decrease_whose_grant_expired_goes_to_breakage_beside_an_increase_paid_like_usage(fresh_db) -> None:
    """A $1.20 grant expiring November 25th pays the 5th (nothing left), a $5.00 top-up the 20th
    ($3.90). Re-rated to $10/M and $30/M: the 5th 60,000 x $10/M = $0.60 (-$0.60), the 20th $0.40 +
    30,000 x $30/M = $1.30 (+$0.20); -$0.40 in all. The 5th's $0.60 to breakage (its grant expired
    since: where it would have gone at the expiry); the 20th's +$0.20 paid like usage by the top-up,
    $3.70 (= $5.00 - $1.30). No credit for the customer."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "expired-payer")
    _, top_up = await _paid_per_charge(bk, cid, ("grant", "1.20", NOV_25), ("topup", "5.00"))
    assert await live_lots(bk, cid) == {top_up: ("topup", 390 * CENT)}
    before = await _breakage(bk)
    done = await _rerated(bk, "10", "30")
    assert done["delta"] == "-0.40", done
    assert await _breakage(bk) - before == 60 * CENT
    assert await live_lots(bk, cid) == {top_up: ("topup", 370 * CENT)}
    assert (await bk.service.wallet(cid)).receivable == 0
    await _balanced(bk)


async def test_a_decrease_whose_grant_was_revoked_goes_to_promotions_beside_an_increase(fresh_db) -> None:
    """A $2.00 grant pays the 5th ($0.80 left), revoked in whole on the 6th ($0.80 to promotions); a
    $5.00 top-up the 20th ($3.90). Re-rated to $10/M and $30/M (-$0.60, +$0.20): the 5th's $0.60
    revoked again (promotions credited $0.60 more: $0.80 + $0.60 = $1.40 less the $2.00 granted);
    the 20th's +$0.20 by the top-up, $3.70."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "revoked-payer")
    _, top_up = await _paid_per_charge(bk, cid, ("grant", "2.00"), ("topup", "5.00"), reverse_first=True)
    promotions = chart.promotions_account("USD")
    before = await _credited(bk, promotions)
    assert before == -120 * CENT  # $2.00 granted (debit) less $0.80 revoked (credit)
    done = await _rerated(bk, "10", "30")
    assert done["delta"] == "-0.40", done
    assert await _credited(bk, promotions) - before == 60 * CENT
    assert await live_lots(bk, cid) == {top_up: ("topup", 370 * CENT)}
    await _balanced(bk)


async def test_a_decrease_whose_top_up_was_refunded_goes_back_to_it_beside_an_increase(fresh_db) -> None:
    """A $2.00 top-up pays the 5th ($0.80 left), refunded in whole on the 6th (it stays open: what
    comes back to it is the customer's); a $5.00 grant the 20th ($3.90). Re-rated to $10/M and $30/M
    (-$0.60, +$0.20): the 5th's $0.60 back to the top-up ($0.60, spendable cash); the 20th's +$0.20
    by the grant (priority 50, before the top-up), $3.70."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "refunded-payer")
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "2.00"), ("grant", "5.00"), reverse_first=True)
    assert await live_lots(bk, cid) == {grant: ("grant", 390 * CENT)}
    done = await _rerated(bk, "10", "30")
    assert done["delta"] == "-0.40", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 370 * CENT)}
    await _balanced(bk)


async def test_three_charges_of_three_payers_netting_to_zero_preview_apply_and_again(fresh_db) -> None:
    """Prepaid with a $5.00 overdraft. A $1.20 top-up pays the 5th ($1.20), a $1.10 grant (the 6th)
    the 20th ($1.10), the receivable the 25th's 10,000 tokens at $10/M ($0.10 owed). v2: $22/M to
    100,000, $5/M beyond: the 5th 60,000 x $22/M = $1.32 (+$0.12), the 20th 40,000 x $22/M + 30,000 x
    $5/M = $0.88 + $0.15 = $1.03 (-$0.07), the 25th 10,000 x $5/M = $0.05 (-$0.05); $0.00 in all
    ($2.40 both). The 20th's $0.07 back to the grant, the 25th's $0.05 off what is owed ($0.05); the
    5th's +$0.12 paid like usage: the grant's $0.07 first, then (the top-up spent) $0.05 on the
    receivable: grant and top-up at $0.00, $0.10 owed. The preview answers what the apply does, to
    the unit; applied again, nothing moves. (The answer's old and new amounts count its listed lines
    only: $0.00 and $0.00 for three charges of $2.40.)"""
    bk = BillingKit(fresh_db)
    await bk.add_book(V1)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("three-payers", book="vol", overdraft="5.00")
    await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "1.10"))
    bk.clock.now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 10_000)
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 10 * CENT
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "22", "5"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    seen = await previewed(bk, spec("v2"))
    done = await applied(bk, spec("v2"))
    # one line (model-v output) netting to $0.00 is not listed; what each account gets and pays nets
    # to 0 too (the grant +$0.07 -$0.07, the receivable -$0.05 +$0.05, revenue 0): no entry
    assert lines(done) == lines(seen) == []
    assert done["delta"] == seen["delta"] == "0.00"
    assert done["customers"][0]["entry_ids"] == []
    assert {k: v for k, v in done["customers"][0].items() if k != "entry_ids"} == seen["customers"][0]
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 10 * CENT
    await _balanced(bk)
    again = await applied(bk, spec("v2"))
    assert again == done
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 10 * CENT
    await _balanced(bk)


async def test_a_rerate_netting_to_zero_in_one_line_still_gives_a_decrease_back_to_its_payer(fresh_db) -> None:
    """November open: the $1.20 top-up pays the 5th, a $5.00 grant the 20th ($3.90). v2: $17/M to
    100,000, $20/M beyond: the 5th 60,000 x $17/M = $1.02 (-$0.18), the 20th 40,000 x $17/M + 30,000
    x $20/M = $0.68 + $0.60 = $1.28 (+$0.18); $0.00 in all, in one line (model-v output). The 5th's
    $0.18 back to the top-up ($0.18 = $1.20 - $1.02), the 20th's +$0.18 paid like usage by the grant,
    $3.72 (= $5.00 - $1.28): whatever the net, as a re-rate of -$0.01 or +$0.01 would."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "net-zero-one-line")
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00"))
    assert await live_lots(bk, cid) == {grant: ("grant", 390 * CENT)}
    done = await _rerated(bk, "17", "20")
    assert done["delta"] == "0.00", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 18 * CENT), grant: ("grant", 372 * CENT)}
    await _balanced(bk)


async def test_a_receivable_s_decrease_beyond_what_is_owed_beside_an_increase_becomes_credit(fresh_db) -> None:
    """Prepaid with a $5.00 overdraft: the 5th's $1.20 on the receivable, paid off on the 6th by a
    $1.20 top-up (nothing owed, no lot); a $5.00 grant (the 6th) pays the 20th ($3.90). Re-rated to
    $18/M and $30/M: the 5th 60,000 x $18/M = $1.08 (-$0.12), the 20th $0.72 + $0.90 = $1.62
    (+$0.52); +$0.40 in all. The 5th's $0.12 back: nothing owed, no lot paid it, so a paid credit
    lot of $0.12 (the customer's cash); the 20th's +$0.52 paid like usage by the grant, $3.38 (=
    $5.00 - $1.62). Netted, the grant pays the +$0.40 alone ($3.50) and the customer's $0.12 of cash
    is gone into usage the promotion paid (the harm README's "beyond what is owed ... still nets"
    allows)."""
    bk = BillingKit(fresh_db)
    cid, grant = await _paid_off_on_the_6th(bk, "owed-nothing", "5.00")
    done = await _rerated(bk, "18", "30")
    assert done["delta"] == "0.40", done
    lots = await live_lots(bk, cid)
    assert lots.pop(grant) == ("grant", 338 * CENT)
    assert list(lots.values()) == [("topup", 12 * CENT)]
    assert (await bk.service.wallet(cid)).receivable == 0
    await _balanced(bk)


async def test_a_receivable_s_decrease_given_as_credit_pays_an_increase_before_anything_is_owed(fresh_db) -> None:
    """Prepaid with a $5.00 overdraft: the 5th's $1.20 on the receivable, paid off on the 6th by a
    $1.20 top-up; a $1.10 grant (the 6th) pays the 20th (nothing left). Re-rated to $10/M and $30/M:
    the 5th -$0.60 (nothing owed, no lot: a paid credit lot), the 20th +$0.20 paid like usage, the
    live lots first: the credit lot $0.40, nothing owed (not $0.60 of credit beside $0.20 owed)."""
    bk = BillingKit(fresh_db)
    cid, _ = await _paid_off_on_the_6th(bk, "credit-and-owed", "1.10")
    assert await live_lots(bk, cid) == {}
    done = await _rerated(bk, "10", "30")
    assert done["delta"] == "-0.40", done
    w = await bk.service.wallet(cid)
    assert list((await live_lots(bk, cid)).values()) == [("topup", 40 * CENT)]
    assert w.receivable == 0
    await _balanced(bk)


async def test_a_receivable_s_decrease_beyond_what_is_owed_pays_an_increase_before_anything_is_owed(fresh_db) -> None:
    """As above, the 20th's $1.10 paid by a $1.10 grant (nothing left), re-rated to $18/M and $30/M:
    the 5th -$0.12 beyond what is owed (nothing), a credit lot of $0.12; the 20th +$0.52 paid like
    usage: that lot's $0.12 first, then $0.40 owed (= +$0.40 in all), no lot left (not $0.12 of
    credit beside $0.52 owed)."""
    bk = BillingKit(fresh_db)
    cid, _ = await _paid_off_on_the_6th(bk, "credit-then-owed", "1.10")
    done = await _rerated(bk, "18", "30")
    assert done["delta"] == "0.40", done
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 40 * CENT
    await _balanced(bk)


async def test_a_receivable_charge_s_decrease_takes_off_what_is_owed_its_own_share_not_a_grant_s(fresh_db) -> None:
    """Postpaid: the 5th's $1.20 on the receivable ($1.20 owed); a $5.00 grant given on the 6th pays
    the 20th's $1.10 ($3.90). November open. Re-rated to $10/M flat: the 5th 60,000 x $10/M = $0.60
    (-$0.60), the 20th 70,000 x $10/M = $0.70 (-$0.40); -$1.00 in all. The 5th's $0.60 comes off
    what is owed ($1.20 - $0.60 = $0.60), the 20th's $0.40 goes back to the grant that paid it
    ($3.90 + $0.40 = $4.30). Before, the receivable's share of the money back was all it paid of
    the decreased charges ($1.20, not the 5th's $0.60 decrease), and give_back pays the
    receivable's share first (up to what is owed): the whole $1.00 came off what is owed ($0.20),
    the grant's $0.40 with it (the promotion paid the customer's debt), the grant left at $3.90."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "receivable-share", billing_mode="postpaid")
    _, grant = await _paid_per_charge(bk, cid, None, ("grant", "5.00"))
    assert (await bk.service.wallet(cid)).receivable == 120 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 390 * CENT)}
    done = await _rerated(bk, "10", "10")
    assert done["delta"] == "-1.00", done
    assert (await bk.service.wallet(cid)).receivable == 60 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 430 * CENT)}
    await _balanced(bk)
