"""Money a close's volume true-up gives back goes where the money of the usage came from, as a
re-rate's does: to the lots that paid the charges its rule rated (the last consumed first, up to
what each paid and was granted), then what is owed, and only the rest becomes credit.

By hand. Book `vol`, model-v output volume-tiered: $20/M up to 100,000 tokens, $10/M beyond.
November (prepaid): 60,000 tokens on the 5th, 70,000 on the 20th. Rated graduated: 60,000 x $20/M =
$1.20; 40,000 x $20/M + 30,000 x $10/M = $0.80 + $0.30 = $1.10; $2.30. The close: 130,000 reached
the second tier, all at $10/M = $1.30, true-up -$1.00."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_rerate_volume_true_up import (
    CLOSED,
    DEC_1,
    NOV_1,
    NOV_2,
    V1,
    applied,
    lines,
    live_lots,
    november_usage,
    spec,
    two_models,
    two_models_used,
    verified,
    vol,
    vol_customer,
)

from ledger.audit import trial_balance, verify
from wallets import chart, rerating
from wallets.audit import WALLET_CHECKS
from wallets.core.commands import ReverseGrant

CENT = 10_000_000  # atomic units (9 decimals) of $0.01
NOV_15 = datetime(2026, 11, 15, tzinfo=UTC)  # a re-rate from here re-rates the 20th's charge alone
NOV_25 = datetime(2026, 11, 25, tzinfo=UTC)  # a grant's expiry before the close
DEC_3 = datetime(2026, 12, 3, tzinfo=UTC)  # a second re-rate (_rerated_again)


async def _lots(bk: BillingKit, cid: str) -> list[tuple[str, int]]:
    return sorted((g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants if g.remaining)


async def _credited(bk: BillingKit, account: str) -> int:
    """What the USD trial balance shows credited (less debited) to `account`: 0 where it has no line."""
    trial = await bk.db.read(lambda conn: trial_balance(conn, "USD"))
    return {ln.account: ln.credits - ln.debits for ln in trial.lines}.get(account, 0)


async def _breakage(bk: BillingKit) -> int:
    return await _credited(bk, chart.breakage_account("USD"))


async def _damaged(bk: BillingKit, params: dict[str, Any], *sqls: str, ordered: bool = False) -> list[str]:
    """verify's failing checks, each its name then its problems (`ordered`: sorted), once `sqls` ran
    (with `params`) past the immutability triggers, in a transaction rolled back after."""

    async def run(conn: Any) -> list[str]:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past the immutability
        for sql in sqls:
            await conn.execute(text(sql), params)
        await conn.execute(text("SET LOCAL session_replication_role = origin"))
        report = await verify(conn, WALLET_CHECKS)
        await conn.rollback()
        return [p for c in report.checks if not c.ok
                for p in (c.name, *(sorted(c.problems) if ordered else c.problems))]

    return await bk.db.read(run)


async def _lot(bk: BillingKit, cid: str, kind: str, amount: str, expires_at: datetime | None = None) -> str:
    """A top-up (`kind` "topup") or a grant, expiring at `expires_at` where given, of `amount`: its lot's id."""
    made = await (bk.top_up(cid, amount) if kind == "topup" else bk.grant(cid, amount, expires_at=expires_at))
    return made.grant.id


async def _paid_per_charge(bk: BillingKit, cid: str, first: tuple | None, second: tuple,
                           reverse_first: bool = False) -> tuple[str | None, str]:
    """`first`, a lot given now (`_lot`'s kind, amount and expiry; None: none, the receivable of a
    postpaid customer), pays the 5th's 60,000 tokens ($1.20); `second`, given on the 6th (after
    `first` is reversed in whole that day, where `reverse_first`), the 20th's 70,000 ($0.80 + $0.30
    = $1.10). The lots' ids."""
    first_id = await _lot(bk, cid, *first) if first else None
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 60_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    if reverse_first:
        await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=first_id))
    second_id = await _lot(bk, cid, *second)
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 70_000)
    return first_id, second_id


async def test_a_close_s_true_up_of_promotion_paid_usage_goes_back_to_the_promotion(fresh_db) -> None:
    """A $5.00 grant pays the $2.30 ($2.70 left). The true-up's $1.00 back goes to it: $3.70, and
    no paid credit lot. Before, the grant stayed at $2.70 and a $1.00 top-up lot opened."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "promoted")
    grant = await bk.grant(cid, "5.00")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    lots = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants}  # spent lots too
    assert lots == {grant.grant.id: ("grant", 370 * CENT)}
    [invoice] = await bk.invoices(cid)
    assert [(ln["kind"], ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "volume_true_up"] == [
        ("volume_true_up", "-1.00")]
    await verified(bk)


async def test_a_close_s_true_up_goes_back_to_the_lots_that_paid_the_last_consumed_first(fresh_db) -> None:
    """A $2.00 grant and a $5.00 top-up. The grant is spent first: $1.20, then $0.80 of the $1.10,
    the top-up the other $0.30 ($4.70 left). The $1.00 back: $0.30 to the top-up (consumed last,
    $5.00), $0.70 to the grant (it paid $2.00: $0.70 left). No new lot."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "mixed")
    await bk.grant(cid, "2.00")
    await bk.top_up(cid, "5.00")
    await november_usage(bk, cid)
    assert await _lots(bk, cid) == [("topup", 470 * CENT)]
    await bk.close(CLOSED)
    assert await _lots(bk, cid) == [("grant", 70 * CENT), ("topup", 500 * CENT)]
    await verified(bk)


async def test_a_close_s_true_up_of_an_expired_grant_s_usage_goes_to_breakage(fresh_db) -> None:
    """As a re-rate's: a $5.00 grant expiring on November 25th pays the $2.30; it has expired at
    the close, so the $1.00 back goes to breakage (had the usage cost less, the difference would
    have expired with it), not to a paid lot."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "expired")
    await bk.grant(cid, "5.00", expires_at=NOV_25)
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    assert await _lots(bk, cid) == []
    assert await _breakage(bk) == 100 * CENT  # the grant's $2.70 left is not swept here (no expiry job ran)
    await verified(bk)


async def test_a_close_s_true_ups_of_two_models_promotion_paid_usage_all_go_back_to_the_promotion(fresh_db) -> None:
    """Rules a (model-x) and b (model-y), $20/M up to 100,000, $2/M beyond. A $5.00 grant pays
    model-x 200,000 tokens ($2.00 + $0.20 = $2.20) and model-y 120,000 ($2.00 + $0.04 = $2.04):
    $4.24, $0.76 left. The close: a 200,000 x $2/M = $0.40 (-$1.80), b 120,000 x $2/M = $0.24
    (-$1.80). The grant paid both rules' charges: all $3.60 goes back to it ($4.36), no paid lot.
    Before, b's share was its charges' $2.04 less the $1.80 a took back of other charges: $0.24;
    the grant got $2.04 ($2.80) and $1.56 of promotional money became a paid credit lot."""
    bk = BillingKit(fresh_db)
    cid, grant = await two_models_used(bk, "two-models", "2", "5.00")
    assert await _lots(bk, cid) == [("grant", 76 * CENT)]
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant: ("grant", 436 * CENT)}
    [invoice] = await bk.invoices(cid)
    assert sorted(ln["amount"] for ln in invoice["lines"] if ln["kind"] == "volume_true_up") == ["-1.80", "-1.80"]
    await verified(bk)


async def test_a_close_s_true_ups_of_two_rules_rating_the_same_charge_take_back_what_it_paid_once(
        fresh_db) -> None:
    """Rules i (model-x input) and o (model-x output), $20/M up to 100,000, $2/M beyond. A $3.00
    grant, then a $5.00 top-up. One call: 200,000 input ($2.20) and 120,000 output ($2.04), one
    $4.24 charge: the grant pays $3.00, the top-up $1.24 ($3.76 left). The close: -$1.80 and -$1.80,
    $3.60 back, of one charge both rules rated: $1.24 to the top-up (consumed last: $5.00), $2.36
    to the grant. Had the second rule counted the charge's $4.24 again, the top-up (no room) and
    the grant would have been owed more than the charge paid."""
    bk = BillingKit(fresh_db)
    await bk.add_book(two_models("v1", "2026-01-01T00:00:00Z", "2",
                                 [("i", "model-x", "input"), ("o", "model-x", "output")]))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("one-call", book="two")
    await bk.grant(cid, "3.00")
    await bk.top_up(cid, "5.00")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 200_000, 120_000)
    assert await _lots(bk, cid) == [("topup", 376 * CENT)]
    await bk.close(CLOSED)
    assert await _lots(bk, cid) == [("grant", 236 * CENT), ("topup", 500 * CENT)]
    await verified(bk)


async def test_a_close_s_true_up_gives_nothing_back_to_what_paid_a_late_charge_of_an_earlier_period(
        fresh_db) -> None:
    """A $1.00 top-up pays a late charge billed in November: 50,000 tokens of October 31st
    (October closed), $1.00 at October's tiers. A $5.00 grant (November 3rd) pays November's $2.30
    ($2.70 left). November's true-up ($1.00 back) trues up November's usage only: all of it goes to
    the grant ($3.70); the top-up paid usage no close trues up, and stays spent. Before, the late
    charge counted among the rule's November charges, the top-up (consumed last) took the $1.00 back
    and the grant stayed at $2.70: a promotion's money became paid (refundable) credit."""
    bk = BillingKit(fresh_db)
    await bk.add_book(V1)
    bk.clock.now = datetime(2026, 10, 1, 9, tzinfo=UTC)
    cid = await bk.customer("late", book="vol")
    await bk.top_up(cid, "1.00")
    await bk.close(datetime(2026, 11, 1, 1, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 50_000, at=datetime(2026, 10, 31, 12, tzinfo=UTC))
    assert await _lots(bk, cid) == []
    bk.clock.now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    grant = await bk.grant(cid, "5.00")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 370 * CENT)}
    november = [i for i in await bk.invoices(cid) if i["period"]["label"] == "2026-11"]
    assert [ln["amount"] for ln in november[0]["lines"] if ln["kind"] == "volume_true_up"] == ["-1.00"]
    await verified(bk)
    # the close's record is of November's own charges: its row of the 20th's moved by hand to the
    # late charge (billed in November, of October 31st's usage; the same $1.00 in all) is flagged
    late = await bk.db.read(lambda conn: conn.scalar(text(
        "SELECT id FROM charges WHERE customer_id = :c AND occurred_at < '2026-11-01'"), {"c": cid}))
    second = max(charge for _, charge, _ in await _given(bk, cid, None))
    assert await _damaged(bk, {"late": late, "second": second},
                          "UPDATE true_up_charges SET charge_id = :late WHERE charge_id = :second") == [
        "credit_notes", f"true-up record of the close of customer late, 2026-11 rule v-out: charge {late} is of usage "
        f"at 2026-10-31 12:00:00+00, outside the period its invoice {november[0]['number']} closed"]


async def test_a_close_s_true_up_gives_each_charge_s_payers_what_that_charge_was_overcharged(fresh_db) -> None:
    """A $1.20 top-up pays the 60,000 tokens of the 5th ($1.20: the top-up is spent); a $5.00 grant
    (the 6th) pays the 70,000 of the 20th ($1.10, $3.90 left). At the tier reached ($10/M) the first
    charge costs $0.60 and the second $0.70: of the $1.00 back, $0.60 goes to the top-up, $0.40 to
    the grant ($0.60 and $4.30). Before, the top-up (consumed last) took the whole $1.00: $0.40 of
    what the promotion overpaid became paid (refundable) credit."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "per-charge")
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00"))
    assert await _lots(bk, cid) == [("grant", 390 * CENT)]
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 430 * CENT)}
    await verified(bk)


async def test_a_close_s_true_up_takes_off_what_is_owed_only_what_the_receivable_s_charges_were_overcharged(
        fresh_db) -> None:
    """Postpaid: the 5th's 60,000 tokens ($1.20) go on the receivable; a $5.00 grant (the 6th)
    pays the 20th's 70,000 ($1.10, $3.90 left). At $10/M the charges cost $0.60 and $0.70: of the
    $1.00 back, $0.60 comes off what is owed ($0.60 left) and $0.40 goes to the grant ($4.30).
    Before, the receivable took all $1.00 (what it paid bounded it, not what its charge was
    overcharged): $0.40 of the promotion's overpayment paid off cash the customer owed."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "owes", billing_mode="postpaid")
    _, grant = await _paid_per_charge(bk, cid, None, ("grant", "5.00"))
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant: ("grant", 430 * CENT)}
    [invoice] = await bk.invoices(cid)
    assert invoice["amount_due"] == "0.60"
    await verified(bk)


async def test_a_close_s_true_up_of_a_charge_re_rated_while_open_takes_off_what_is_owed_its_own_part_not_a_grant_s(
        fresh_db) -> None:
    """Postpaid, book `two` (rules a, model-x, and b, model-y, output: $20/M up to 100,000, $10/M
    beyond). A $2.30 grant on November 1st pays the 5th's 130,000 model-y tokens ($2.00 + 30,000 x
    $10/M = $2.30: nothing left); the 10th's 130,000 model-x ($2.30) go on the receivable. On the
    15th, November open, model-x is re-rated to $18/M and $9/M: $1.80 + $0.27 = $2.07 (-$0.23 off
    what is owed: $2.07). The close: rule a at the tier reached 130,000 x $9/M = $1.17, -$0.90 (its
    charge re-rated, so shared over what paid the rule's charges: the receivable alone, off what is
    owed: $1.17); rule b 130,000 x $10/M = $1.30, -$1.00, to the grant that paid its charge ($1.00).
    Before d61b025 (the same defect, in the close's share of a re-rated rule's money back), the
    receivable's share was all it paid of rule a's charges ($2.07, not its $0.90), paid first: all
    $1.90 came off what is owed ($0.17) and the grant got nothing (the promotion paid the customer's
    debt)."""
    bk = BillingKit(fresh_db)
    book = two_models("v1", "2026-01-01T00:00:00Z", "10")
    await bk.add_book(book)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("re-rated-open", billing_mode="postpaid", book="two")
    grant = (await bk.grant(cid, "2.30")).grant.id
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-y", 0, 130_000)
    bk.clock.now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 0, 130_000)
    assert await live_lots(bk, cid) == {}
    assert (await bk.service.wallet(cid)).receivable == 230 * CENT
    v2 = {**book, "version": "v2", "effective_from": "2026-11-01T00:00:00Z", "rules": [
        {**rule, "tiers": [{"up_to": 100_000, "price": "18"}, {"up_to": None, "price": "9"}]}
        if rule["id"] == "a" else rule for rule in book["rules"]]}
    await bk.add_book(v2)
    bk.clock.now = NOV_15
    done = await applied(bk, rerating.RerateSpec("two", "v2", NOV_1, DEC_1, None))
    assert done["delta"] == "-0.23", done
    assert (await bk.service.wallet(cid)).receivable == 207 * CENT
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert sorted(ln["amount"] for ln in invoice["lines"] if ln["kind"] == "volume_true_up") == ["-0.90", "-1.00"]
    assert invoice["amount_due"] == "1.17"  # model-x at $9/M: 130,000 x $9/M
    assert (await bk.service.wallet(cid)).receivable == 117 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 100 * CENT)}
    await verified(bk)


async def test_a_rerate_s_correction_of_a_close_s_true_up_gives_each_charge_s_payers_what_that_charge_was_overcharged(
        fresh_db) -> None:
    """As above: the top-up paid the 5th's $1.20, the grant the 20th's $1.10; the close gave $0.60
    back to the top-up ($0.60) and $0.40 to the grant ($4.30). The fix keeps $20/M to 100,000 and
    drops the tier beyond to $5/M: the 5th stays $1.20, the 20th is $0.80 + 30,000 x $5/M = $0.95
    (-$0.15, to the grant that paid it); at the tier reached, 130,000 x $5/M = $0.65, the true-up
    $0.65 - $2.15 = -$1.50 where -$1.00 stands: $0.50 more back. At $5/M the 5th costs $0.30, $0.90
    below its $1.20, of which the close gave back $0.60: $0.30 more to the top-up ($0.90); the 20th
    costs $0.35, $0.60 below its $0.95, of which the close gave back $0.40: $0.20 more to the grant
    ($4.30 + $0.15 + $0.20 = $4.65). Each lot ends where it would have had each charge cost its
    tier-reached price: $1.20 - $0.30 and $5.00 - $0.35. Before, the true-up's $0.50 went to the
    top-up (consumed last) up to what it had left in its charge ($0.60): $1.10, the grant $4.45, and
    $0.20 of what the promotion overpaid became refundable paid credit."""
    bk = BillingKit(fresh_db)
    cid = "per-charge-rerated"
    top_up, grant = await _closed_per_charge(bk, cid, grant_expires=None)
    done = await _rerated(bk, "20", "5")
    assert lines(done) == [("output", "1.10", "0.95", "-0.15"),
                            ("volume_true_up", "-1.00", "-1.50", "-0.50")]
    assert await live_lots(bk, cid) == {top_up: ("topup", 90 * CENT), grant: ("grant", 465 * CENT)}
    await verified(bk)
    # A second fix, $4/M beyond: the 20th $0.80 + $0.12 = $0.92 (-$0.03, to the grant); the true-up
    # 130,000 x $4/M - $2.12 = -$1.60 where -$1.50 stands: $0.10 more back. The 5th costs $0.24:
    # $0.96 over, of which the close and the first re-rate gave back $0.90: $0.06 to the top-up
    # ($0.96 = $1.20 - $0.24); the 20th costs $0.28: $0.64 over, $0.60 given: $0.04 to the grant
    # ($4.65 + $0.03 + $0.04 = $4.72 = $5.00 - $0.28). Counting the close's record alone, the top-up
    # would get all $0.10 ($0.96 - $0.60 due): $1.00 and $4.68.
    again = await _rerated_again(bk, "20", "4", on=None)
    assert again["delta"] == "-0.13", again
    assert await live_lots(bk, cid) == {top_up: ("topup", 96 * CENT), grant: ("grant", 472 * CENT)}
    await verified(bk)


async def test_a_rerate_that_posts_no_entry_keeps_what_it_gave_back_of_each_charge_for_the_next_one(
        fresh_db) -> None:
    """As above: the top-up paid the 5th's $1.20, the grant the 20th's $1.10; the close gave $0.60
    back to the top-up ($0.60 left) and $0.40 to the grant ($4.30). A fix to $30/M to 100,000, $10/M
    beyond: the 5th $1.80 (+$0.60), the 20th $1.20 + $0.30 = $1.50 (+$0.40); at the $10/M reached
    (still $1.30) the true-up is $1.30 - $3.30 = -$2.00 where -$1.00 stands: $1.00 more back, which
    nets the charges' +$1.00 to 0: no entry. Of it, each charge's overcharge at $10/M less what the
    close gave back: the 5th $1.80 - $0.60 = $1.20, less $0.60: $0.60; the 20th $1.50 - $0.70 =
    $0.80, less $0.40: $0.40. A second fix, $30/M to 100,000 and $5/M beyond: the 5th stays $1.80,
    the 20th $1.20 + $0.15 = $1.35 (-$0.15, to the grant that paid it); at $5/M, 130,000 x $5/M =
    $0.65, the true-up $0.65 - $3.15 = -$2.50 where -$2.00 stands: $0.50 more back. The 5th costs
    $0.30 at $5/M, $1.50 below its $1.80, of which the close and the first fix gave back $1.20:
    $0.30 to the top-up ($0.90 = $1.20 - $0.30); the 20th costs $0.35, $1.00 below its $1.35, $0.80
    given: $0.20 to the grant ($4.30 + $0.15 + $0.20 = $4.65 = $5.00 - $0.35). Before, the first
    fix's record was kept nowhere (its entry's metadata, and it posted none): the 5th's $1.50 over
    less the close's $0.60 took the whole $0.50, the top-up $1.10 and the grant $4.45."""
    bk = BillingKit(fresh_db)
    cid = "per-charge-no-entry"
    top_up, grant = await _closed_per_charge(bk, cid, grant_expires=None)
    lots = {top_up: ("topup", 60 * CENT), grant: ("grant", 430 * CENT)}
    done = await _rerated(bk, "30", "10")
    assert done["delta"] == "0.00" and done["customers"][0]["entry_ids"] == [], done
    assert lines(done) == [("output", "2.30", "3.30", "1.00"),
                            ("volume_true_up", "-1.00", "-2.00", "-1.00")]
    assert await live_lots(bk, cid) == lots  # nothing moved
    await verified(bk)
    # what the close and the first fix gave back of each charge is kept in a table, one row each,
    # not in the close's entry (nor in an entry the fix did not post); and never changed
    assert await _given_per_charge(bk, cid, None) == [60 * CENT, 40 * CENT]
    assert await _given_per_charge(bk, cid, done["rerate_id"]) == [60 * CENT, 40 * CENT]
    metadata = await bk.db.read(lambda conn: conn.scalar(text(
        "SELECT metadata FROM journal_entries WHERE key = :k"), {"k": f"true-up:{cid}:2026-11"}))
    assert "true_up_charges" not in metadata and metadata["period"] == "2026-11"
    lane = await bk.db.read(lambda conn: conn.scalar(text("SELECT ledger_lane(:c)"), {"c": cid}))
    for sql in ("UPDATE true_up_charges SET units = 0 WHERE customer_id = :c",
                "DELETE FROM true_up_charges WHERE customer_id = :c",
                "TRUNCATE true_up_charges", f"TRUNCATE true_up_charges_l{lane}"):
        with pytest.raises(DBAPIError, match="not allowed"):
            await bk.db.run(lambda conn, s=sql: conn.execute(text(s), {"c": cid}))
    again = await _rerated_again(bk, "30", "5", on=None)
    assert again["delta"] == "-0.65", again
    assert await live_lots(bk, cid) == {top_up: ("topup", 90 * CENT), grant: ("grant", 465 * CENT)}
    await verified(bk)
    # the second fix's own record: $0.30 more of the 5th, $0.20 of the 20th
    assert await _given_per_charge(bk, cid, again["rerate_id"]) == [30 * CENT, 20 * CENT]
    first = min(charge for _, charge, _ in await _given(bk, cid, None))  # the 5th's
    # a row of the 5th inserted again into a record is refused (migration 0071: one row per true-up,
    # rule and charge), the second fix's ($0.30 more) as the close's
    forged = """INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, rerate_id, units)
                VALUES (ledger_lane(:c), :c, '2026-11', 'v-out', :charge, :r, :units)"""
    for rerate_id in (again["rerate_id"], None):
        with pytest.raises(DBAPIError, match="duplicate key value violates unique constraint"):
            await bk.db.run(lambda conn, r=rerate_id: conn.execute(text(forged), {
                "c": cid, "charge": first, "r": r, "units": 30 * CENT}))
    # verify ties each re-rate's record to its correction: $0.30 + $0.20 of the second fix's $0.50,
    # $0.60 + $0.40 of the first's $1.00; the 5th's $0.30 made $0.60 past the trigger ($0.80 of $0.50)
    # is flagged, and so is a row naming a charge that is not the customer's (in the close's record:
    # its $1.00 and one atomic unit, of its $1.00 true-up line, flagged too)

    async def doubled(conn: Any) -> None:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))  # past the immutability
        await conn.execute(text("UPDATE true_up_charges SET units = units * 2 WHERE rerate_id = :r AND charge_id = :c"),
                           {"r": again["rerate_id"], "c": first})
    await bk.db.run(doubled)
    await bk.db.run(lambda conn: conn.execute(text(forged), {
        "c": cid, "charge": 10 ** 12, "r": None, "units": 1}))
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    [failed] = [c for c in report.checks if not c.ok]
    assert failed.name == "credit_notes", failed
    assert len(failed.problems) == 3 and all("true-up record" in p for p in failed.problems), failed
    assert sorted(p.split(": ", 1)[1] for p in failed.problems) == [
        "charge 1000000000000 is not its charge", "gave back 1000000001 of its charges, its true-up line 1000000000",
        "gave back 800000000 of its charges, its correction 500000000"], failed


async def test_verify_ties_a_close_s_record_to_its_true_up_line_and_each_row_to_a_charge_of_its_period(
        fresh_db) -> None:
    """The top-up pays the 5th's 60,000 tokens ($1.20), the grant the 20th's 70,000 ($0.80 + $0.30 =
    $1.10) and the 25th's 10,000 (at $10/M: $0.10). 140,000 reach $10/M: $1.40, the true-up $1.40 -
    $2.40 = -$1.00; each charge's overcharge at $10/M: the 5th $1.20 - $0.60 = $0.60, the 20th $1.10 -
    $0.70 = $0.40, the 25th $0.10 - $0.10 = 0 (no row). A fix to $5/M beyond: the 20th $0.95 (-$0.15),
    the 25th $0.05 (-$0.05); the true-up 140,000 x $5/M - $2.20 = -$1.50 where -$1.00 stands: $0.50
    more back, the 5th $1.20 - $0.30 - $0.60 given = $0.30, the 20th $0.95 - $0.35 - $0.40 = $0.20.
    Each damage below, made by hand and rolled back, is one problem of verify's credit_notes check;
    before, the close's rows were tied to nothing but their charges, and a row's sign to nothing."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "per-charge-audited")
    await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00"))
    bk.clock.now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 10_000)
    await bk.close(CLOSED)
    fifth, twentieth = sorted(charge for _, charge, _ in await _given(bk, cid, None))
    assert await _given(bk, cid, None) == [("v-out", fifth, 60 * CENT), ("v-out", twentieth, 40 * CENT)]
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.70", done  # -$0.15 - $0.05 on the charges, -$0.50 on the true-up
    fix = done["rerate_id"]
    assert await _given(bk, cid, fix) == [("v-out", fifth, 30 * CENT), ("v-out", twentieth, 20 * CENT)]
    bk.clock.now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 10_000)  # a charge billed in December
    charges = dict((await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id, period FROM charges WHERE customer_id = :c ORDER BY id"), {"c": cid}))).all())
    [twenty_fifth] = [c for c, p in charges.items() if p == "2026-11" and c not in (fifth, twentieth)]
    [december] = [c for c, p in charges.items() if p == "2026-12"]
    await verified(bk)

    async def damaged(*sqls: str) -> list[str]:
        return await _damaged(bk, {"c": cid, "r": fix, "fifth": fifth, "twentieth": twentieth,
                                   "twenty_fifth": twenty_fifth, "december": december}, *sqls, ordered=True)

    close = "customer_id = :c AND rerate_id IS NULL"
    # a row inserted: $0.10 of the 25th, $1.10 given back of the close's $1.00
    assert await damaged("""INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, units)
                            VALUES (ledger_lane(:c), :c, '2026-11', 'v-out', :twenty_fifth, 100000000)""") == [
        "credit_notes", "true-up record of the close of customer per-charge-audited, 2026-11 rule v-out: gave back "
        "1100000000 of its charges, its true-up line 1000000000"]
    # an amount changed: the 20th's $0.40 made $0.50
    assert await damaged(f"UPDATE true_up_charges SET units = 500000000 WHERE {close} AND charge_id = :twentieth"
                         ) == ["credit_notes", "true-up record of the close of customer per-charge-audited, 2026-11 "
                               "rule v-out: gave back 1100000000 of its charges, its true-up line 1000000000"]
    # the 20th's row made December's charge's: the same $1.00 in all, of a charge billed in another period
    assert await damaged(f"UPDATE true_up_charges SET charge_id = :december WHERE {close} AND charge_id = :twentieth"
                         ) == ["credit_notes", f"true-up record of the close of customer per-charge-audited, 2026-11 "
                               f"rule v-out: charge {december} is billed in 2026-12"]
    # a row of the wrong sign: the close's $1.20 and -$0.20 (the same $1.00 in all); the fix's $0.60 and
    # -$0.10 is not named by its sign (a re-rate's rows may run both ways: it gives back to some charges
    # and takes back of others, TrueUpFix.parts, their sum bound as the close's) but, since 0082, by
    # what its payers got of each charge ($0.30 of the 5th, $0.20 of the 20th: true_up_payers); the
    # close's payer rows, of a record named already, are not named again
    assert await damaged(f"UPDATE true_up_charges SET units = 1200000000 WHERE {close} AND charge_id = :fifth",
                         f"UPDATE true_up_charges SET units = -200000000 WHERE {close} AND charge_id = :twentieth",
                         "UPDATE true_up_charges SET units = 600000000 WHERE rerate_id = :r AND charge_id = :fifth",
                         "UPDATE true_up_charges SET units = -100000000 WHERE rerate_id = :r AND charge_id = :twentieth"
                         ) == ["credit_notes",
                               f"true-up record of re-rate {fix} of customer per-charge-audited, 2026-11: charge "
                               f"{fifth} gave back 600000000, its payers' rows 300000000",
                               f"true-up record of re-rate {fix} of customer per-charge-audited, 2026-11: charge "
                               f"{twentieth} gave back -100000000, its payers' rows 200000000",
                               "true-up record of the close of customer per-charge-audited, 2026-11 rule v-out: "
                               "its rows give back from -200000000 to 1200000000 of a charge, its true-up line "
                               "1000000000"]
    # a re-rate's rows all of the wrong sign: -$0.30 and -$0.20 of its $0.50 back
    assert await damaged("UPDATE true_up_charges SET units = -units WHERE rerate_id = :r") == [
        "credit_notes", f"true-up record of re-rate {fix} of customer per-charge-audited, 2026-11 rule v-out: "
        "gave back -500000000 of its charges, its correction 500000000"]


async def _rounded_and_closed(bk: BillingKit, cid: str, usage: list[tuple[int, int]]) -> str:
    """Customer `cid` on book `vol` v1, $20/M to 100,000 and $9.9999/M beyond (9,999.9 atomic units a
    token), made November 1st at 09:00 with a $10.00 top-up; its model-v output `usage`, each (day,
    tokens) at noon of that November day; November closed."""
    await bk.add_book(vol("v1", "2026-01-01T00:00:00Z", "20", "9.9999"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(cid, book="vol")
    await bk.top_up(cid, "10.00")
    await november_usage(bk, cid, usage)
    await bk.close(CLOSED)
    return cid


async def test_verify_ties_each_row_of_a_close_s_record_to_its_charge_s_overcharge_rounded_up(fresh_db) -> None:
    """Book v1, $20/M to 100,000, $9.9999/M beyond (9,999.9 atomic units a token): a $10.00 top-up
    pays 60,009 tokens on the 5th (1,200,180,000 units) and 70,009 on the 20th: 39,991 x 20,000 =
    799,820,000 and 30,018 x 9,999.9 = 300,176,998.2, the charge 1,099,996,998.2 rounded half-even to
    1,099,996,998. The close: 130,018 tokens x 9,999.9 = 1,300,166,998.2 less 2,300,176,998 charged:
    -1,000,009,999.8, the line -1,000,010,000. At 9,999.9 the 5th costs 600,083,999.1, rounded up
    600,084,000: overcharged 1,200,180,000 - 600,084,000 = 600,096,000; the 20th 700,082,999.1, rounded
    up 700,083,000: 1,099,996,998 - 700,083,000 = 399,913,998. The rows sum to 1,000,009,998, two units
    below the line (what rounding each charge's cost up left; the close shares it over the rule's
    payers): verify passes. Damage made by hand and rolled back, each within the line and of the right
    sign, which the per-rule checks passed before: $0.10 moved from the 5th's row to the 20th's (the
    same 1,000,009,998 in all), and the 20th's row one unit short (1,000,009,997, still below the line)."""
    bk = BillingKit(fresh_db)
    cid = await _rounded_and_closed(bk, "rounded-up", [(5, 60_009), (20, 70_009)])
    fifth, twentieth = sorted(charge for _, charge, _ in await _given(bk, cid, None))
    assert await _given(bk, cid, None) == [("v-out", fifth, 600_096_000), ("v-out", twentieth, 399_913_998)]
    [invoice] = await bk.invoices(cid)
    assert [ln["amount"] for ln in invoice["lines"] if ln["kind"] == "volume_true_up"] == ["-1.00"]
    await verified(bk)

    async def damaged(*sqls: str) -> list[str]:
        return await _damaged(bk, {"c": cid, "fifth": fifth, "twentieth": twentieth}, *sqls)

    record = "true-up record of the close of customer rounded-up, 2026-11 rule v-out"
    close = "customer_id = :c AND rerate_id IS NULL"
    left = "where its overcharge at the tier reached (up to what the line's 1000010000 left) is"
    assert await damaged(f"UPDATE true_up_charges SET units = units - 100000000 WHERE {close} AND charge_id = :fifth",
                         f"UPDATE true_up_charges SET units = units + 100000000 WHERE {close} "
                         "AND charge_id = :twentieth") == [
        "credit_notes", f"{record}: charge {fifth} gave back 500096000 {left} 600096000",
        f"{record}: charge {twentieth} gave back 499913998 {left} 399913998"]
    assert await damaged(f"UPDATE true_up_charges SET units = units - 1 WHERE {close} AND charge_id = :twentieth") == [
        "credit_notes", f"{record}: charge {twentieth} gave back 399913997 {left} 399913998"]


async def test_verify_ties_three_charges_rounded_up_and_down_and_after_a_re_rate(fresh_db) -> None:
    """Book v1, $20/M to 100,000, $9.9999/M beyond (9,999.9 atomic units a token); a $10.00 top-up.
    Graduated: the 5th's 60,009 tokens 1,200,180,000; the 15th's 70,004 (39,991 x 20,000 =
    799,820,000 and 30,013 x 9,999.9 = 300,126,998.7, rounded up) 1,099,946,999; the 25th's 30,007
    (300,066,999.3, rounded down) 300,066,999; 2,600,193,998 in all. The close: 160,020 tokens x
    9,999.9 = 1,600,183,998 less it: the line -1,000,010,000. At 9,999.9, each charge's cost rounded up
    and its overcharge: the 5th 600,083,999.1 -> 600,084,000, 600,096,000; the 15th 700,032,999.6 ->
    700,033,000, 1,099,946,999 - 700,033,000 = 399,913,999 (the line left 1,000,010,000 - 600,096,000
    = 399,914,000); the 25th 300,066,999.3 -> 300,067,000, -1: none. The record 600,096,000 and
    399,913,999 (one unit below the line: verify passes); the 25th given 1, or the 15th's row one short,
    is named. Re-rated to $16/M and $8/M afterwards: verify still passes."""
    bk = BillingKit(fresh_db)
    cid = await _rounded_and_closed(bk, "three-rounded", [(5, 60_009), (15, 70_004), (25, 30_007)])
    charged = list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id, charged FROM charges WHERE customer_id = :c ORDER BY id"), {"c": cid})))
    fifth, fifteenth, twentyfifth = [charge for charge, _ in charged]
    assert [int(amount) for _, amount in charged] == [1_200_180_000, 1_099_946_999, 300_066_999]
    [invoice] = await bk.invoices(cid)
    assert [ln["amount"] for ln in invoice["lines"] if ln["kind"] == "volume_true_up"] == ["-1.00"]
    assert await _given(bk, cid, None) == [("v-out", fifth, 600_096_000), ("v-out", fifteenth, 399_913_999)]
    await verified(bk)

    async def damaged(sql: str) -> list[str]:
        return await _damaged(bk, {"c": cid, "fifteenth": fifteenth, "twentyfifth": twentyfifth}, sql)

    record = "true-up record of the close of customer three-rounded, 2026-11 rule v-out"
    left = "where its overcharge at the tier reached (up to what the line's 1000010000 left) is"
    assert await damaged("INSERT INTO true_up_charges (lane, customer_id, period, rule_id, charge_id, units) "
                         "VALUES (ledger_lane(:c), :c, '2026-11', 'v-out', :twentyfifth, 1)") == [
        "credit_notes", f"{record}: charge {twentyfifth} gave back 1 {left} 0"]
    assert await damaged("UPDATE true_up_charges SET units = units - 1 WHERE customer_id = :c "
                         "AND rerate_id IS NULL AND charge_id = :fifteenth") == [
        "credit_notes", f"{record}: charge {fifteenth} gave back 399913998 {left} 399913999"]
    await _rerated(bk, "16", "8")
    await verified(bk)


async def test_a_close_s_record_gives_the_charges_after_one_its_payers_could_not_take_only_what_the_line_left(
        fresh_db) -> None:
    """Book `dear`: $20/M to 100,000, $5/M to 200,000, $8/M beyond (dearer again); a 50 % discount on
    model-v; a $10.00 top-up. Rated graduated at the book's price: the 5th's 60,000 tokens $1.20 (the
    top-up pays $0.60), the 20th's 40,000 $0.80 ($0.40), the 25th's 110,000: 100,000 x $5/M + 10,000 x
    $8/M = $0.58 ($0.29). The close: 210,000 tokens at $8/M = $1.68, the book's line $1.68 - $2.58 =
    -$0.90, the discount's half back +$0.45. Each charge's overcharge at $8/M: the 5th $1.20 - $0.48 =
    $0.72, the 20th $0.80 - $0.32 = $0.48, the 25th $0.58 - $0.88 < 0. The record: the 5th $0.72, the
    20th what the line left, $0.90 - $0.72 = $0.18; $0.90 in all. The 5th's payer (it paid $0.60)
    cannot take its $0.72: before, the $0.12 it left was counted back into the line for the charges
    after it, the 20th was recorded at $0.30 (the line's $0.90 less the $0.60 placed), $1.02 in all,
    and verify named the close's record as giving back more than its line. The money is the same
    either way: the top-up gets the $0.45 back ($10.00 - $1.29 + $0.45 = $9.16)."""
    bk = BillingKit(fresh_db)
    await bk.add_book({"id": "dear", "version": "v1", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                       "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
                                  "tiers": [{"up_to": 100_000, "price": "20"}, {"up_to": 200_000, "price": "5"},
                                            {"up_to": None, "price": "8"}]}]})
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("half-off", book="dear")
    await bk.service.add_overrides(cid, {"discounts": [{"id": "off", "model": "model-v", "percent": "50"}]},
                                   datetime(2026, 11, 1, 9, tzinfo=UTC))
    top_up = await bk.top_up(cid, "10.00")
    for day, tokens in [(5, 60_000), (20, 40_000), (25, 110_000)]:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens)
    assert await live_lots(bk, cid) == {top_up.grant.id: ("topup", 871 * CENT)}
    await bk.close(datetime(2026, 12, 1, 1, tzinfo=UTC))
    [invoice] = await bk.invoices(cid)
    assert sorted((ln["kind"], ln["amount"]) for ln in invoice["lines"] if ln["kind"] == "volume_true_up") == [
        ("volume_true_up", "-0.90"), ("volume_true_up", "0.45")]
    assert await _given_per_charge(bk, cid, None) == [72 * CENT, 18 * CENT]
    assert await live_lots(bk, cid) == {top_up.grant.id: ("topup", 916 * CENT)}
    await verified(bk)


async def _rerated(bk: BillingKit, high: str, low: str, on: datetime = datetime(2026, 12, 2, tzinfo=UTC),
                   since: datetime = NOV_1) -> dict:
    """November re-rated from `since`, on `on`, to a book `v2` from November 1st: `high` $/M to
    100,000 output tokens, `low` beyond."""
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", high, low))
    bk.clock.now = on
    return await applied(bk, spec("v2", since))


async def _no_entry_rerate(bk: BillingKit, cid: str) -> tuple[str, str, str]:
    """`_closed_per_charge` (a grant that never expires), then the $30/M and $10/M fix that posts no
    entry (each charge's overcharge nets with its part): the top-up, the grant and the re-rate's id."""
    top_up, grant = await _closed_per_charge(bk, cid, grant_expires=None)
    done = await _rerated(bk, "30", "10")
    assert done["customers"][0]["entry_ids"] == [], done
    return top_up, grant, done["rerate_id"]


async def _rerated_again(bk: BillingKit, high: str, low: str, on: datetime | None = DEC_3) -> dict:
    """November re-rated again from November 2nd, on `on` (None: the clock as it stands), to a book
    `v3` from November 2nd: `high` $/M to 100,000 output tokens, `low` beyond."""
    await bk.add_book(vol("v3", "2026-11-02T00:00:00Z", high, low))
    if on is not None:
        bk.clock.now = on
    return await applied(bk, spec("v3", NOV_2))


async def _given(bk: BillingKit, cid: str, rerate_id: str | None) -> list[tuple[str, int, int]]:
    """What true_up_charges keeps of the customer's close (`rerate_id` None) or of a re-rate."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        """SELECT rule_id, charge_id, units FROM true_up_charges
            WHERE customer_id = :c AND rerate_id IS NOT DISTINCT FROM :r ORDER BY rule_id, charge_id"""),
        {"c": cid, "r": rerate_id}))
    return [(rule, charge, int(units)) for rule, charge, units in rows]


async def _given_per_charge(bk: BillingKit, cid: str, rerate_id: str | None) -> list[int]:
    """What the customer's close (`rerate_id` None) or a re-rate of it gave back (less took back) of
    each of the two charges the close counted, all of rule v-out: in the order of the charges' ids."""
    first, second = sorted(charge for _, charge, _ in await _given(bk, cid, None))
    given = await _given(bk, cid, rerate_id)
    assert [(rule, charge) for rule, charge, _ in given] == [("v-out", first), ("v-out", second)]
    return [units for _, _, units in given]


async def _given_after_close(bk: BillingKit, cid: str, rerate_id: str) -> list[int]:
    """As _given_per_charge, a charge the re-rate gave back nothing of (no row) 0."""
    first, second = sorted(charge for _, charge, _ in await _given(bk, cid, None))
    given = {charge: units for rule, charge, units in await _given(bk, cid, rerate_id) if rule == "v-out"}
    return [given.get(first, 0), given.get(second, 0)]


async def _closed_per_charge(bk: BillingKit, cid: str,
                             grant_expires: datetime | None = datetime(2027, 1, 31, tzinfo=UTC)) -> tuple[str, str]:
    """A $1.20 top-up pays the 5th's $1.20, a $5.00 grant (the 6th, expiring January 31st, or at
    `grant_expires`: None, never) the 20th's $1.10; the close gives $0.60 back to the top-up ($0.60)
    and $0.40 to the grant ($4.30). The lots' ids."""
    await vol_customer(bk, cid)
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00", grant_expires))
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 430 * CENT)}
    return top_up, grant


async def test_a_true_up_corrected_up_takes_back_of_each_charge_from_what_that_charge_was_given_back(
        fresh_db) -> None:
    """The fix keeps $20/M to 100,000 and raises the tier beyond to $15/M. The 5th stays $1.20; the
    20th is $0.80 + 30,000 x $15/M = $1.25 (+$0.15, paid like usage: the grant, consumed first,
    $4.15). At the tier reached, 130,000 x $15/M = $1.95, the true-up $1.95 - $2.45 = -$0.50 where
    -$1.00 stands: $0.50 taken back. At $15/M the 5th costs $0.90, $0.30 below its $1.20, where the
    close gave back $0.60: $0.30 is taken back from the top-up that got it ($0.30); the 20th costs
    $1.05, $0.20 below its $1.25, where the close gave back $0.40: $0.20 from the grant ($3.95). Each
    lot ends where it would have had each charge cost its tier-reached price: $1.20 - $0.90 and
    $5.00 - $1.05. Before, the $0.65 was paid like usage, from the grant (priority 50) alone: the
    top-up kept $0.60 and the grant fell to $3.65, the promotion paying $0.30 of the 5th's usage,
    which the customer's own money paid before the grant existed (and which would have expired
    with it on January 31st)."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "taken-back")
    done = await _rerated(bk, "20", "15")
    assert lines(done) == [("output", "1.10", "1.25", "0.15"),
                            ("volume_true_up", "-1.00", "-0.50", "0.50")]
    assert await live_lots(bk, "taken-back") == {top_up: ("topup", 30 * CENT), grant: ("grant", 395 * CENT)}
    await verified(bk)
    assert await _given_per_charge(bk, "taken-back", done["rerate_id"]) == [-30 * CENT, -20 * CENT]


async def test_a_true_up_corrected_up_beside_cheaper_charges_nets_each_charge_s_payers(fresh_db) -> None:
    """The fix lowers both tiers, to $16/M and $8/M. The 5th is 60,000 x $16/M = $0.96 (-$0.24, to
    the top-up), the 20th 40,000 x $16/M + 30,000 x $8/M = $0.64 + $0.24 = $0.88 (-$0.22, to the
    grant). At the tier reached, 130,000 x $8/M = $1.04, the true-up $1.04 - $1.84 = -$0.80 where
    -$1.00 stands: $0.20 taken back; $0.26 back in all. At $8/M the 5th costs $0.48, $0.48 below its
    $0.96, where the close gave back $0.60: $0.12 taken back from the top-up; the 20th costs $0.56,
    $0.32 below its $0.88, the close gave back $0.40: $0.08 from the grant. Each lot: the top-up
    $0.60 + $0.24 - $0.12 = $0.72 (= $1.20 - $0.48), the grant $4.30 + $0.22 - $0.08 = $4.44 (=
    $5.00 - $0.56). Before, the $0.26 went back by the charges' decreases alone, the last consumed
    first: $0.24 to the top-up ($0.84), $0.02 to the grant ($4.32): $0.12 of the promotion's money
    became the customer's paid (refundable) credit."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "netted")
    done = await _rerated(bk, "16", "8")
    assert done["delta"] == "-0.26", done
    assert await live_lots(bk, "netted") == {top_up: ("topup", 72 * CENT), grant: ("grant", 444 * CENT)}
    await verified(bk)


async def test_a_true_up_corrected_up_takes_back_from_breakage_what_it_gave_an_expired_grant(fresh_db) -> None:
    """A $1.20 grant expiring November 25th pays the 5th's $1.20 (spent); a $5.00 top-up (the 6th)
    the 20th's $1.10 ($3.90). The close: $0.60 of the 5th's back to the grant, expired, so to
    breakage (where its money went at its expiry had the charge cost less), $0.40 of the 20th's to
    the top-up ($4.30). Re-rated to $15/M beyond: the 20th $1.25 (+$0.15, paid like usage: the
    top-up, $4.15); the true-up -$0.50 (+$0.50): the 5th costs $0.90 at $15/M, $0.30 over where
    $0.60 was given back: $0.30 taken back from breakage, where the grant's $0.60 went ($0.30 left:
    $1.20 - $0.90, what the grant overpaid at $15/M); the 20th costs $1.05, $0.20 over where $0.40
    was given: $0.20 from the top-up ($3.95 = $5.00 - $1.05). Before, what the expired grant could
    not give was paid like usage, by the top-up: $3.65, and breakage kept $0.60: the customer paid
    $0.30 back of money it never got."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "expired-taken")
    _, top_up = await _paid_per_charge(bk, cid, ("grant", "1.20", NOV_25), ("topup", "5.00"))
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {top_up: ("topup", 430 * CENT)}
    assert await _breakage(bk) == 60 * CENT
    done = await _rerated(bk, "20", "15")
    assert done["delta"] == "0.65", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 395 * CENT)}
    assert await _breakage(bk) == 30 * CENT
    await verified(bk)


async def test_a_close_s_record_counts_what_an_expired_grant_s_charge_gave_back_to_breakage(fresh_db) -> None:
    """The per-charge record of money back that the charge's payer could not take (its grant
    expired: the money went to breakage) counts it all the same, and sums to what moved. The top-up
    pays the 5th's $1.20; the grant (expiring November 25th) the 20th's $1.10. The close: $0.60 of
    the 5th's back to the top-up ($0.60), $0.40 of the 20th's to breakage, where the grant's money
    would have gone at its expiry had the charge cost less; the rows $0.60 + $0.40 = the $1.00
    true-up, all of which left revenue. Re-rated to $5/M beyond: the 20th -$0.15 and, of the
    true-up's -$0.50, $0.90 - $0.60 = $0.30 of the 5th (the top-up, $0.90 = $1.20 - $0.30) and $0.60 -
    $0.40 = $0.20 of the 20th: breakage $0.40 + $0.15 + $0.20 = $0.75 = $1.10 - $0.35, what the grant
    overpaid of the 20th at $5/M. Had the close's record left out what went to breakage ($0.00 of
    the 20th), its rows would sum to $0.60 where $1.00 moved, and the re-rate would take the 20th's
    $0.60 over at $5/M as not given back yet ($0.60 due where $0.20 is), the close's $0.40 counted
    nowhere."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "expired-record")
    top_up, _ = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00", NOV_25))
    await bk.close(CLOSED)

    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT)}
    assert await _breakage(bk) == 40 * CENT
    assert await _given_per_charge(bk, cid, None) == [60 * CENT, 40 * CENT]
    await verified(bk)
    done = await _rerated(bk, "20", "5")
    assert done["delta"] == "-0.65", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 90 * CENT)}
    assert await _breakage(bk) == 75 * CENT
    assert await _given_per_charge(bk, cid, done["rerate_id"]) == [30 * CENT, 20 * CENT]


async def test_a_true_up_corrected_up_more_than_cheaper_charges_nets_each_charge_s_payers(fresh_db) -> None:
    """The fix lowers the first tier to $18/M and raises the one beyond to $12/M. The 5th is 60,000 x
    $18/M = $1.08 (-$0.12, the top-up paid it), the 20th 40,000 x $18/M + 30,000 x $12/M = $0.72 +
    $0.36 = $1.08 (-$0.02, the grant paid it). At the tier reached, 130,000 x $12/M = $1.56, the
    true-up $1.56 - $2.16 = -$0.60 where -$1.00 stands: $0.40 taken back; $0.26 more in all. At $12/M
    the 5th costs $0.72, $0.36 below its $1.08, where the close gave back $0.60: $0.24 taken back from
    the top-up, which gets its $0.12 back: -$0.12, $0.48 (= $1.20 - $0.72); the 20th costs $0.84,
    $0.24 below its $1.08, the close gave back $0.40: $0.16 from the grant, less its $0.02: -$0.14,
    $4.16 (= $5.00 - $0.84). Before, the $0.26 was taken charge by charge up to the net: $0.24 from
    the top-up and $0.02 from the grant ($0.36 and $4.28), the top-up paying $0.12 of the 20th."""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "net-up")
    done = await _rerated(bk, "18", "12")
    assert lines(done) == [("output", "2.30", "2.16", "-0.14"),
                            ("volume_true_up", "-1.00", "-0.60", "0.40")]
    assert done["delta"] == "0.26", done
    assert await live_lots(bk, "net-up") == {top_up: ("topup", 48 * CENT), grant: ("grant", 416 * CENT)}
    await verified(bk)


async def test_a_true_up_corrected_up_takes_nothing_from_breakage_for_a_grant_live_at_the_close_and_spent(
        fresh_db) -> None:
    """As the test above, but the $1.20 grant expires December 10th: live at the close, so the 5th's
    $0.60 back goes to the grant ($0.60), not to breakage ($0.00), and the 20th's $0.40 to the top-up
    ($4.30). December 3rd, 30,000 tokens at $20/M = $0.60, from the grant (consumed first): $0.00 at
    its expiry, nothing to breakage. Re-rated to $15/M beyond (December 12th): the 20th +$0.15 and the
    true-up +$0.50 ($0.30 of the 5th, $0.20 of the 20th), $0.65 in all. The grant spent its $0.60 back
    before it expired, so the 5th's $0.30 is paid like usage, by the top-up: $4.30 - $0.65 = $3.65,
    breakage still $0.00. Taking it from breakage (dc4187b) left the top-up at $3.95 and breakage at
    -$0.30: debited for money it never got."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "live-then-spent")
    grant, top_up = await _paid_per_charge(
        bk, cid, ("grant", "1.20", datetime(2026, 12, 10, tzinfo=UTC)), ("topup", "5.00"))
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant: ("grant", 60 * CENT), top_up: ("topup", 430 * CENT)}
    assert await _breakage(bk) == 0
    bk.clock.now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 30_000)
    assert await live_lots(bk, cid) == {top_up: ("topup", 430 * CENT)}
    done = await _rerated(bk, "20", "15", on=datetime(2026, 12, 12, tzinfo=UTC))
    assert done["delta"] == "0.65", done
    assert (await live_lots(bk, cid), await _breakage(bk)) == ({top_up: ("topup", 365 * CENT)}, 0)
    await verified(bk)


async def test_a_true_up_corrected_up_takes_nothing_from_breakage_for_an_expired_grant_it_gave_nothing_back(
        fresh_db) -> None:
    """A $0.50 grant expiring November 25th (consumed first) and a $5.00 top-up: the 5th's $1.20, the
    grant $0.50 and the top-up $0.70; the 20th's $1.10, the top-up ($3.20). The close gives back the
    last consumed first: the 5th's $0.60 (it paid $0.70) and the 20th's $0.40 to the top-up ($4.20),
    none to the grant, none to breakage. Re-rated to $15/M beyond: the 20th +$0.15 (the top-up, $4.05);
    the true-up +$0.50: the 5th's $0.30 and the 20th's $0.20 taken back from what they were given
    back to, the top-up: $4.05 - $0.50 = $3.55 ($5.00 - $0.70 - $0.90 + $0.15: the 5th's $0.90 at
    $15/M less the grant's $0.50, and the 20th's $1.05), breakage $0.00. Taking the 5th's $0.30 from
    the grant, consumed first, expired so from breakage, left the top-up at $3.85 and breakage at
    -$0.30: the grant had got nothing back, so breakage nothing of it."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "expired-got-nothing")
    await bk.grant(cid, "0.50", expires_at=NOV_25)
    top_up = await bk.top_up(cid, "5.00")
    await november_usage(bk, cid)
    assert await live_lots(bk, cid) == {top_up.grant.id: ("topup", 320 * CENT)}
    await bk.close(CLOSED)
    assert (await live_lots(bk, cid), await _breakage(bk)) == ({top_up.grant.id: ("topup", 420 * CENT)}, 0)
    done = await _rerated(bk, "20", "15")
    assert done["delta"] == "0.65", done
    assert (await live_lots(bk, cid), await _breakage(bk)) == ({top_up.grant.id: ("topup", 355 * CENT)}, 0)
    await verified(bk)


async def _balanced(bk: BillingKit) -> None:
    """The USD trial balance sums to zero, and verify passes."""
    trial = await bk.db.read(lambda conn: trial_balance(conn, "USD"))
    debits, credits = trial.totals["USD"]
    assert debits == credits and sum(ln.debits - ln.credits for ln in trial.lines) == 0
    await verified(bk)


async def test_a_true_up_corrected_down_with_a_charge_it_takes_back_of_gives_and_takes_each_charge_s_part(
        fresh_db) -> None:
    """The fix ($30/M to 100,000, $12/M beyond) re-rates the 20th alone (from November 15th): 40,000
    x $30/M + 30,000 x $12/M = $1.20 + $0.36 = $1.56 (+$0.46); the 5th stays $1.20 (v1). The
    period's 130,000 reach the second tier of both versions, each one's units at its own price of
    it: the 5th 60,000 x $10/M = $0.60 ($0.60 below its $1.20, as the close gave back: nothing moves
    of it), the 20th 70,000 x $12/M = $0.84 ($0.72 below its $1.56, the close gave back $0.40: $0.32
    more, to the grant that paid it): the true-up -$1.32 where -$1.00 stands, -$0.32; +$0.14 in all.
    The 20th's +$0.46 nets its $0.32 part, the $0.14 beyond paid like usage, the grant first. The
    top-up $0.60 (= $1.20 - $0.60), the grant $4.30 + $0.32 - $0.46 = $4.16 (= $5.00 - $0.84).
    (At v2's $12/M for both charges, the true-up was -$1.20 and took $0.12 of the 5th's top-up.)"""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "mixed-down")
    done = await _rerated(bk, "30", "12", since=NOV_15)
    assert lines(done) == [("output", "1.10", "1.56", "0.46"),
                            ("volume_true_up", "-1.00", "-1.32", "-0.32")]
    assert done["delta"] == "0.14", done
    assert await live_lots(bk, "mixed-down") == {top_up: ("topup", 60 * CENT), grant: ("grant", 416 * CENT)}
    assert await _given_after_close(bk, "mixed-down", done["rerate_id"]) == [0, 32 * CENT]
    await _balanced(bk)


async def test_a_true_up_corrected_up_with_a_charge_it_gives_back_to_gives_and_takes_each_charge_s_part(
        fresh_db) -> None:
    """As above, the fix $24/M to 100,000, $12/M beyond, from November 15th: the 20th 40,000 x $24/M +
    30,000 x $12/M = $0.96 + $0.36 = $1.32 (+$0.22). At the tier reached, each version's units at
    its own price: the 5th 60,000 x $10/M = $0.60 (as the close gave back: nothing moves of it), the
    20th 70,000 x $12/M = $0.84, $0.48 below its $1.32, where $0.40 was given back: $0.08 more back
    to the grant; the true-up -$1.08 where -$1.00 stands, -$0.08; +$0.14 in all. The 20th's +$0.22
    nets its $0.08, the $0.14 beyond paid like usage, by the grant. The top-up $0.60 (= $1.20 -
    $0.60), the grant $4.30 + $0.08 - $0.22 = $4.16 (= $5.00 - $0.84). (At v2's $12/M for both
    charges: -$0.96, +$0.04, $0.12 taken of the 5th's top-up.)"""
    bk = BillingKit(fresh_db)
    top_up, grant = await _closed_per_charge(bk, "mixed-up")
    done = await _rerated(bk, "24", "12", since=NOV_15)
    assert lines(done) == [("output", "1.10", "1.32", "0.22"),
                            ("volume_true_up", "-1.00", "-1.08", "-0.08")]
    assert done["delta"] == "0.14", done
    assert await live_lots(bk, "mixed-up") == {top_up: ("topup", 60 * CENT), grant: ("grant", 416 * CENT)}
    assert await _given_after_close(bk, "mixed-up", done["rerate_id"]) == [0, 8 * CENT]
    await _balanced(bk)


def _in_out(version: str, effective_from: str, high: str, low: str, input_price: str) -> dict:
    """Book `inout`: rule v-out rates model-v output volume-tiered, `high` $/M up to 100,000 tokens,
    `low` beyond; rule v-in its input at a flat `input_price` $/M."""
    return {"id": "inout", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 100_000, "price": high}, {"up_to": None, "price": low}]},
        {"id": "v-in", "model": "model-v", "token_type": "input", "price": input_price}]}


async def _in_out_rerated(bk: BillingKit, cid: str, low: str, input_price: str) -> tuple[str, str, dict]:
    """Book `inout` v1: output $20/M to 100,000, $10/M beyond; input $10/M. A $1.20 top-up pays the
    5th's 60,000 output ($1.20); a $5.00 grant (the 6th, expiring January 31st) the 20th's 70,000
    output ($0.80 + $0.30 = $1.10) and 130,000 input ($1.30): $2.40, $2.60 left. The close: 130,000
    output at $10/M = $1.30, true-up -$1.00: $0.60 back to the top-up ($0.60), $0.40 to the grant
    ($3.00). Then re-rated on December 2nd from November 15th (the 20th alone) to v2: output $20/M to
    100,000, `low` beyond; input `input_price`. The lots' ids and the re-rate's answer."""
    await bk.add_book(_in_out("v1", "2026-01-01T00:00:00Z", "20", "10", "10"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(cid, book="inout")
    top_up = await _lot(bk, cid, "topup", "1.20")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 60_000)
    bk.clock.now = datetime(2026, 11, 6, 12, tzinfo=UTC)
    grant = await _lot(bk, cid, "grant", "5.00", datetime(2027, 1, 31, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 130_000, 70_000)
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 300 * CENT)}
    await bk.add_book(_in_out("v2", "2026-11-01T00:00:00Z", "20", low, input_price))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, rerating.RerateSpec("inout", "v2", datetime(2026, 11, 15, tzinfo=UTC),
                                                 datetime(2026, 12, 1, tzinfo=UTC), None))
    return top_up, grant, done


async def test_a_rerate_giving_a_charge_back_still_takes_a_true_up_s_part_of_it_from_its_payer(fresh_db) -> None:
    """v2: output $12/M beyond 100,000, input $8/M. The 20th: output $0.80 + 30,000 x $12/M = $1.16
    (+$0.06), input 130,000 x $8/M = $1.04 (-$0.26): $2.20 (-$0.20). The true-up at the tier reached,
    each version's units at its own price: the 5th (v1) 60,000 x $10/M = $0.60, $0.60 below its
    $1.20 as the close gave back (nothing moves of it); the 20th's output (v2) 70,000 x $12/M =
    $0.84, $0.32 below its $1.16, the close gave back $0.40: $0.08 taken back of the grant; -$0.92
    where -$1.00 stands, +$0.08. Net -$0.20 + $0.08 = -$0.12 (it netted to 0 when v2's $12/M priced
    the 5th too), all the 20th's payer's: the grant $3.00 + $0.20 - $0.08 = $3.12 (= $5.00 - $0.84 -
    $1.04), the top-up $0.60 (= $1.20 - $0.60)."""
    bk = BillingKit(fresh_db)
    top_up, grant, done = await _in_out_rerated(bk, "net-zero-up", "12", "8")
    assert lines(done) == [("input", "1.30", "1.04", "-0.26"), ("output", "1.10", "1.16", "0.06"),
                           ("volume_true_up", "-1.00", "-0.92", "0.08")]
    assert done["delta"] == "-0.12", done
    assert await live_lots(bk, "net-zero-up") == {top_up: ("topup", 60 * CENT), grant: ("grant", 312 * CENT)}
    assert await _given_after_close(bk, "net-zero-up", done["rerate_id"]) == [0, -8 * CENT]
    await _balanced(bk)


async def test_a_rerate_charging_a_charge_more_still_gives_a_true_up_s_part_of_it_to_its_payer(fresh_db) -> None:
    """v2: output $8/M beyond 100,000, input $12/M. The 20th: output $0.80 + 30,000 x $8/M = $1.04
    (-$0.06), input 130,000 x $12/M = $1.56 (+$0.26): $2.60 (+$0.20). The true-up at the tier
    reached, each version's units at its own price: the 5th (v1) at $10/M, as the close gave back
    (nothing moves of it); the 20th's output (v2) 70,000 x $8/M = $0.56, $0.48 below its $1.04, the
    close gave back $0.40: $0.08 more back to the grant; -$1.08 where -$1.00 stands, -$0.08. Net
    +$0.20 - $0.08 = +$0.12 (0 when v2's $8/M priced the 5th too): the 20th's +$0.20 nets its $0.08,
    the $0.12 beyond paid like usage by the grant (consumed first). The top-up $0.60 (= $1.20 -
    $0.60), the grant $3.00 + $0.08 - $0.20 = $2.88 (= $5.00 - $0.56 - $1.56)."""
    bk = BillingKit(fresh_db)
    top_up, grant, done = await _in_out_rerated(bk, "net-zero-down", "8", "12")
    assert lines(done) == [("input", "1.30", "1.56", "0.26"), ("output", "1.10", "1.04", "-0.06"),
                           ("volume_true_up", "-1.00", "-1.08", "-0.08")]
    assert done["delta"] == "0.12", done
    assert await live_lots(bk, "net-zero-down") == {top_up: ("topup", 60 * CENT), grant: ("grant", 288 * CENT)}
    assert await _given_after_close(bk, "net-zero-down", done["rerate_id"]) == [0, 8 * CENT]
    await _balanced(bk)


async def test_a_rerate_raising_a_charge_nets_its_increase_with_what_its_true_up_part_gives_its_payer(
        fresh_db) -> None:
    """One re-rate raises each charge's price and gives back a true-up part of each. The top-up paid
    the 5th's $1.20, the grant the 20th's $1.10; the close gave back $0.60 of the 5th (the top-up,
    $0.60) and $0.40 of the 20th (the grant, $4.30). The fix raises the first tier to $24/M and
    drops the one beyond to $5/M. The 5th: 60,000 x $24/M = $1.44 (+$0.24); the 20th: 40,000 x
    $24/M + 30,000 x $5/M = $0.96 + $0.15 = $1.11 (+$0.01); +$0.25 in all. At the tier reached,
    130,000 x $5/M = $0.65, the true-up $0.65 - $2.55 = -$1.90 where -$1.00 stands: -$0.90; the
    re-rate moves +$0.25 - $0.90 = -$0.65. The true-up's part of each charge: the 5th costs
    60,000 x $5/M = $0.30, $1.14 below its $1.44, where the close gave back $0.60: $0.54; the 20th
    costs 70,000 x $5/M = $0.35, $0.76 below its $1.11, the close gave back $0.40: $0.36 ($0.54 +
    $0.36 = $0.90). Each charge nets its own increase with its own part: the 5th -$0.30 (+$0.24 -
    $0.54) to the top-up that paid it, $0.60 + $0.30 = $0.90 (= $1.20 - $0.30); the 20th -$0.35
    (+$0.01 - $0.36) to the grant, $4.30 + $0.35 = $4.65 (= $5.00 - $0.35): each lot where the
    first fix to $5/M beyond left it. Before, the parts went to their payers and the $0.25 of
    increases came off the last of them in order, the grant (consumed first: the top-up, consumed
    last, got its $0.54 whole, the grant $0.36 - $0.25 = $0.11): $1.14 and $4.41, the promotion
    paying the 5th's $0.24, usage the top-up paid before the grant existed."""
    bk = BillingKit(fresh_db)
    cid = "raised-and-given"
    top_up, grant = await _closed_per_charge(bk, cid)
    done = await _rerated(bk, "24", "5")
    assert lines(done) == [("output", "2.30", "2.55", "0.25"),
                           ("volume_true_up", "-1.00", "-1.90", "-0.90")]
    assert done["delta"] == "-0.65", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 90 * CENT), grant: ("grant", 465 * CENT)}
    # what the true-up's correction gave back of each charge (its increase is the charge's own)
    assert await _given_per_charge(bk, cid, done["rerate_id"]) == [54 * CENT, 36 * CENT]
    await _balanced(bk)
    # Back to v1's prices ($20/M, $10/M; v3 from November 2nd): the 5th $1.20 (-$0.24, to the
    # top-up), the 20th $1.10 (-$0.01, to the grant); the true-up -$1.00 where -$1.90 stands: +$0.90,
    # +$0.65 in all. At $10/M the 5th is $0.60 over, where $0.60 + $0.54 = $1.14 was given back:
    # $0.54 taken back of it (the top-up: -$0.54 + $0.24 = -$0.30); the 20th $0.40 over, $0.40 +
    # $0.36 = $0.76 given: $0.36 (the grant: -$0.36 + $0.01 = -$0.35). Each lot where the close left
    # it: $0.60 and $4.30.
    back = await _rerated_again(bk, "20", "10", on=None)
    assert lines(back) == [("output", "2.55", "2.30", "-0.25"),
                           ("volume_true_up", "-1.90", "-1.00", "0.90")]
    assert back["delta"] == "0.65", back
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 430 * CENT)}
    assert await _given_per_charge(bk, cid, back["rerate_id"]) == [-54 * CENT, -36 * CENT]
    await _balanced(bk)


async def test_a_rerate_charging_more_in_all_gives_a_cheaper_charge_s_decrease_to_its_payer(fresh_db) -> None:
    """November still open (no close, no true-up). The top-up pays the 5th's $1.20, a $5.00 grant
    the 20th's $1.10 ($3.90). The fix lowers the first tier to $18/M and raises the one beyond to
    $30/M: the 5th 60,000 x $18/M = $1.08 (-$0.12), the 20th 40,000 x $18/M + 30,000 x $30/M = $0.72
    + $0.90 = $1.62 (+$0.52); +$0.40 in all. The correction is the reversal then the right entry, as
    the true-ups' are: the 5th's -$0.12 back to the top-up that paid it, $0.12 (= $1.20 - $1.08);
    the 20th's +$0.52 paid like usage, the grant first (priority 50), $3.90 - $0.52 = $3.38 (= $5.00 -
    $1.62). Before, the +$0.40 net alone was paid like usage: the grant $3.50 and the top-up $0.00,
    its cash paying $0.12 of the 20th, usage the promotion paid, where a re-rate charging more by a
    true-up beside the same decrease gave the decrease back (_refund's `gets`)."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "cheaper-and-dearer")
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00"))
    assert await live_lots(bk, cid) == {grant: ("grant", 390 * CENT)}
    done = await _rerated(bk, "18", "30")
    assert lines(done) == [("output", "2.30", "2.70", "0.40")]
    assert done["delta"] == "0.40", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 12 * CENT), grant: ("grant", 338 * CENT)}
    await _balanced(bk)


async def test_a_rerate_giving_money_back_in_all_pays_a_dearer_charge_s_increase_like_usage(fresh_db) -> None:
    """The mirror of the above: November open, the top-up pays the 5th's $1.20, the grant the 20th's
    $1.10 ($3.90). The fix lowers the first tier to $10/M and raises the one beyond to $30/M: the 5th
    60,000 x $10/M = $0.60 (-$0.60), the 20th 40,000 x $10/M + 30,000 x $30/M = $0.40 + $0.90 = $1.30
    (+$0.20); -$0.40 in all. The 5th's -$0.60 back to the top-up that paid it, $0.60 (= $1.20 -
    $0.60); the 20th's +$0.20 paid like usage, the grant first, $3.90 - $0.20 = $3.70 (= $5.00 -
    $1.30). Before, the +$0.20 came off the money back: the top-up got the net $0.40 alone ($0.40),
    the grant kept $3.90, the top-up's cash paying $0.20 of the 20th, usage the promotion paid."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "dearer-and-cheaper")
    top_up, grant = await _paid_per_charge(bk, cid, ("topup", "1.20"), ("grant", "5.00"))
    done = await _rerated(bk, "10", "30")
    assert lines(done) == [("output", "2.30", "1.90", "-0.40")]
    assert done["delta"] == "-0.40", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 370 * CENT)}
    await _balanced(bk)


async def test_a_rerate_giving_money_back_in_all_gives_the_receivable_a_cheaper_charge_s_whole_decrease(
        fresh_db) -> None:
    """Postpaid, November open: the 5th's $1.20 goes on the receivable ($1.20 owed), a $5.00 grant
    (the 6th) pays the 20th's $1.10 ($3.90). Re-rated as above ($10/M to 100,000, $30/M beyond): the
    5th -$0.60 off what is owed, $1.20 - $0.60 = $0.60 (the 5th at $0.60); the 20th's +$0.20 paid
    like usage by the grant, $3.70 (= $5.00 - $1.30); -$0.40 in all. Before, the receivable got the
    net $0.40 alone ($0.80 owed) and the grant kept $3.90: the customer owed $0.20 of the 20th,
    usage the promotion paid."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "owes-less", billing_mode="postpaid")
    _, grant = await _paid_per_charge(bk, cid, None, ("grant", "5.00"))
    assert (await bk.service.wallet(cid)).receivable == 120 * CENT
    done = await _rerated(bk, "10", "30")
    assert done["delta"] == "-0.40", done
    assert (await bk.service.wallet(cid)).receivable == 60 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 370 * CENT)}
    await _balanced(bk)


async def test_a_rerate_giving_money_back_in_all_pays_an_increase_beyond_a_charge_s_true_up_part_like_usage(
        fresh_db) -> None:
    """Closed (book `inout`, _in_out_rerated): the top-up $0.60, the grant $3.00. v2: output $5/M
    beyond 100,000, input $14/M; the 20th alone re-rated. The 20th: output $0.80 + 30,000 x $5/M =
    $0.95 (-$0.15), input 130,000 x $14/M = $1.82 (+$0.52): +$0.37. The true-up at the tier reached,
    each version's units at its own price: the 5th (v1) at $10/M, $0.60 below its $1.20 as the close
    gave back (nothing moves of it, the top-up stays $0.60); the 20th's output (v2) 70,000 x $5/M =
    $0.35, $0.60 below its $0.95, the close gave back $0.40: $0.20; -$1.20 where -$1.00 stands,
    -$0.20; +$0.17 in all. The $0.20 nets the charge's +$0.37, the $0.17 beyond paid like usage by
    the grant, $2.83 (= $5.00 - $0.35 - $1.82). (At v2's $5/M for the 5th too: -$1.50, -$0.13 in
    all, $0.30 of it to the top-up.)"""
    bk = BillingKit(fresh_db)
    cid = "dearer-beyond-its-part"
    top_up, grant, done = await _in_out_rerated(bk, cid, "5", "14")
    assert lines(done) == [("input", "1.30", "1.82", "0.52"), ("output", "1.10", "0.95", "-0.15"),
                           ("volume_true_up", "-1.00", "-1.20", "-0.20")]
    assert done["delta"] == "0.17", done
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 283 * CENT)}
    assert await _given_after_close(bk, cid, done["rerate_id"]) == [0, 20 * CENT]
    await _balanced(bk)
    # Back to v1's prices (v3): the 20th's output $1.10 (+$0.15), input $1.30 (-$0.52): -$0.37; the
    # true-up: the 5th (v1) -$0.60, the 20th (v3, $10/M) $0.70 - $1.10 = -$0.40: -$1.00 where -$1.20
    # stands, +$0.20; -$0.17 in all. The 20th's output $0.40 over, $0.40 + $0.20 given: $0.20 taken
    # back, netted with its -$0.37, $0.17 back to the grant. Each lot where the close left it: $0.60
    # and $3.00.
    await bk.add_book(_in_out("v3", "2026-11-02T00:00:00Z", "20", "10", "10"))
    back = await applied(bk, rerating.RerateSpec("inout", "v3", datetime(2026, 11, 15, tzinfo=UTC),
                                                 datetime(2026, 12, 1, tzinfo=UTC), None))
    assert back["delta"] == "-0.17", back
    assert await live_lots(bk, cid) == {top_up: ("topup", 60 * CENT), grant: ("grant", 300 * CENT)}
    assert await _given_after_close(bk, cid, back["rerate_id"]) == [0, -20 * CENT]
    await _balanced(bk)



async def test_a_rerate_charging_more_in_all_gives_the_receivable_a_cheaper_charge_s_decrease(fresh_db) -> None:
    """Postpaid, November open: the 5th's $1.20 on the receivable, the grant pays the 20th's $1.10
    ($3.90). Re-rated to $18/M and $30/M (the 5th -$0.12, the 20th +$0.52, +$0.40): the 5th's -$0.12
    off what is owed, $1.08 (the 5th at $1.08); the 20th's +$0.52 paid like usage by the grant,
    $3.38 (= $5.00 - $1.62). Before, the +$0.40 net alone came off the grant ($3.50) and $1.20 was
    still owed: the customer owed $0.12 of usage the promotion paid."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "owes-less-dearer", billing_mode="postpaid")
    _, grant = await _paid_per_charge(bk, cid, None, ("grant", "5.00"))
    done = await _rerated(bk, "18", "30")
    assert done["delta"] == "0.40", done
    assert (await bk.service.wallet(cid)).receivable == 108 * CENT
    assert await live_lots(bk, cid) == {grant: ("grant", 338 * CENT)}
    await _balanced(bk)
